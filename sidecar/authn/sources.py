"""Where an issuer's keys come from: a JWKS URL (or OIDC discovery), a file, or the builtin
token endpoint. The sources hold no policy beyond the JWKS lifecycle:

- a fetch at most every ``jwks_min_refresh`` (initial load, background refresh, retries and
  unknown-``kid`` refetches share one gate and one in-flight fetch);
- fresh for the response's ``max-age`` clamped to [``jwks_min_refresh``, 24 h] (5 min when
  absent); refreshed in the background at 90 % of that;
- on failure the last good keys stay in use until ``jwks_max_stale`` after the last
  successful fetch; retries back off from ``jwks_min_refresh`` doubling up to 5 min.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from sidecar.authn.fetch import MAX_RESPONSE_BYTES, FetchError, json_object, request_bytes
from sidecar.authn.keys import KeySet, KeySetError, jwks_ttl, load_jwks_bytes, parse_jwks
from sidecar.config.auth import JWTIssuerConfig, check_fetch_url
from sidecar.metrics import Metrics
from sidecar.stages import EventEmitter

log = logging.getLogger("sidecar.authn")

Clock = Callable[[], float]
KeysChanged = Callable[[str, KeySet], None]
MAX_RETRY_BACKOFF = 300.0
_ACCEPT = {"Accept": "application/jwk-set+json, application/json"}


class KeySource:
    """Common state: current keys, last success, the fetch gate and the in-flight fetch."""

    def __init__(self, name: str, algorithms: tuple[str, ...], clock: Clock, metrics: Metrics,
                 emit: EventEmitter, on_change: KeysChanged, min_refresh: float,
                 max_stale: float | None) -> None:
        self.name = name
        self.algorithms = algorithms
        self._clock = clock
        self._metrics = metrics
        self._emit = emit
        self._on_change = on_change
        self.min_refresh = min_refresh
        self.max_stale = max_stale
        self.keys: KeySet | None = None
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.next_refresh = 0.0
        self.failures = 0
        self._inflight: asyncio.Task[None] | None = None

    def current(self, now: float) -> KeySet | None:
        """The keys to validate with, or None: never loaded, or older than ``jwks_max_stale``."""
        if self.keys is None or self.last_success is None:
            return None
        if self.max_stale is not None and now - self.last_success > self.max_stale:
            return None
        return self.keys

    def needs_initial_load(self) -> bool:
        return self.keys is None

    async def load(self) -> None:
        """Fetch now, ignoring the gate (startup)."""
        await self._start_fetch()

    async def on_unknown_kid(self) -> None:
        """Refetch because a token names a key we lack: joins a running fetch, else fetches
        only when the last attempt is ``jwks_min_refresh`` old."""
        if self._inflight is None and not self._gate_open(self._clock()):
            return
        await self._start_fetch()

    def tick(self) -> asyncio.Task[None] | None:
        """Start a due background refresh; return its task (None when nothing is due)."""
        now = self._clock()
        if self._inflight is not None or now < self.next_refresh or not self._gate_open(now):
            return None
        return self._spawn()

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight

    def _gate_open(self, now: float) -> bool:
        return self.last_attempt is None or now - self.last_attempt >= self.min_refresh

    def _spawn(self) -> asyncio.Task[None]:
        self.last_attempt = self._clock()
        self._inflight = asyncio.create_task(self._guarded_fetch(),
                                             name=f"jwks-fetch:{self.name}")
        return self._inflight

    async def _start_fetch(self) -> None:
        task = self._inflight or self._spawn()
        # shield: a cancelled request must not cancel the shared fetch.
        await asyncio.shield(task)

    async def _guarded_fetch(self) -> None:
        try:
            keys, ttl = await self._fetch()
        except (FetchError, KeySetError) as exc:
            self._failed(str(exc))
        except Exception:  # never let a refresh bug kill the source
            log.exception("unexpected error refreshing keys of issuer %s", self.name)
            self._failed("unexpected error")
        else:
            self._succeeded(keys, ttl)
        finally:
            self._inflight = None

    async def _fetch(self) -> tuple[KeySet, float]:
        raise NotImplementedError

    def _succeeded(self, keys: KeySet, ttl: float) -> None:
        now = self._clock()
        changed = self.keys is None or keys.fingerprint != self.keys.fingerprint
        self.keys, self.last_success, self.failures = keys, now, 0
        self.next_refresh = now + 0.9 * ttl
        self._metrics.jwks_refresh.labels(issuer=self.name, result="ok").inc()
        if changed:
            log.info("issuer %s: %d verification key(s) loaded", self.name, len(keys))
            self._on_change(self.name, keys)

    def _failed(self, reason: str) -> None:
        now = self._clock()
        self.failures += 1
        backoff = min(self.min_refresh * 2 ** (self.failures - 1),
                      max(self.min_refresh, MAX_RETRY_BACKOFF))
        self.next_refresh = now + backoff
        self._metrics.jwks_refresh.labels(issuer=self.name, result="error").inc()
        log.warning("issuer %s: key refresh failed: %s", self.name, reason)
        self._emit("jwks_refresh_failed", {"issuer": self.name, "reason": reason,
                                           "has_keys": self.current(now) is not None})

    def adopt(self, previous: KeySource) -> None:
        """Carry keys and timers over from the instance this one replaces (SIGHUP)."""
        self.keys, self.last_success = previous.keys, previous.last_success
        self.last_attempt, self.next_refresh = previous.last_attempt, previous.next_refresh


class RemoteJWKS(KeySource):
    """A JWKS URL, or the ``jwks_uri`` of the issuer's OIDC discovery document."""

    def __init__(self, config: JWTIssuerConfig, clock: Clock, metrics: Metrics,
                 emit: EventEmitter, on_change: KeysChanged) -> None:
        super().__init__(config.name, config.algorithms, clock, metrics, emit, on_change,
                         config.jwks_min_refresh, config.jwks_max_stale)
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self._jwks_url = config.jwks_url

    @property
    def identity(self) -> tuple[Any, ...]:
        """Two sources with the same identity serve the same keys."""
        c = self.config
        return (type(self), c.issuer, c.jwks_url, c.algorithms, c.insecure_allow_http_jwks)

    def adopt(self, previous: KeySource) -> None:
        super().adopt(previous)
        if isinstance(previous, RemoteJWKS):
            self._jwks_url = previous._jwks_url

    async def _discover(self, session: aiohttp.ClientSession) -> str:
        raw, _ = await request_bytes(session, "GET", self.config.discovery_url,
                                     time_limit=self.config.jwks_timeout,
                                     headers={"Accept": "application/json"})
        document = json_object(raw, "discovery document")
        # SECURITY: OpenID Connect Discovery 1.0 §4.3 - the document must name this issuer.
        if document.get("issuer") != self.config.issuer:
            raise FetchError("discovery document names another issuer")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise FetchError("discovery document has no jwks_uri")
        try:
            check_fetch_url(uri, self.config.insecure_allow_http_jwks, "jwks_uri")
        except ValueError as exc:
            raise FetchError("discovered jwks_uri is not https") from exc
        return uri

    async def _fetch(self) -> tuple[KeySet, float]:
        session = self.session
        if session is None:
            raise FetchError("not started")
        url = self._jwks_url or await self._discover(session)
        try:
            raw, headers = await request_bytes(session, "GET", url,
                                               time_limit=self.config.jwks_timeout, headers=_ACCEPT)
        except FetchError:
            if self.config.jwks_url is None:
                self._jwks_url = None  # rediscover next time: the jwks_uri may have moved
            raise
        self._jwks_url = url
        keys, skipped = load_jwks_bytes(raw, self.algorithms)
        for reason in skipped:
            log.debug("issuer %s: %s", self.name, reason)
        return keys, jwks_ttl(headers.get("Cache-Control"), self.min_refresh)


class FileJWKS(KeySource):
    """A JWKS file, re-read when its mtime or size changes (checked on every tick)."""

    def __init__(self, config: JWTIssuerConfig, clock: Clock, metrics: Metrics,
                 emit: EventEmitter, on_change: KeysChanged, check_interval: float = 1.0) -> None:
        super().__init__(config.name, config.algorithms, clock, metrics, emit, on_change,
                         check_interval, config.jwks_max_stale)
        assert config.jwks_file is not None
        self.path = config.jwks_file
        self._stamp: tuple[int, int] | None = None
        self._ttl = check_interval

    def _read_if_changed(self) -> bytes | None:
        stat = os.stat(self.path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp and self.keys is not None:
            return None
        with open(self.path, "rb") as handle:
            raw = handle.read(MAX_RESPONSE_BYTES + 1)
        self._stamp = stamp
        return raw

    async def _fetch(self) -> tuple[KeySet, float]:
        try:
            raw = await asyncio.to_thread(self._read_if_changed)
        except OSError as exc:
            raise FetchError(f"cannot read jwks_file ({exc.strerror})") from exc
        if raw is None:
            assert self.keys is not None
            return self.keys, self._ttl
        if len(raw) > MAX_RESPONSE_BYTES:
            self._stamp = None
            raise FetchError(f"jwks_file larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return load_jwks_bytes(raw, self.algorithms)[0], self._ttl
        except KeySetError:
            self._stamp = None  # retry the same broken content on the next tick
            raise

    def _succeeded(self, keys: KeySet, ttl: float) -> None:
        if keys is self.keys:  # unchanged file: quietly extend freshness
            self.last_success, self.failures = self._clock(), 0
            self.next_refresh = self._clock() + ttl
            return
        super()._succeeded(keys, ttl)


class StaticKeys(KeySource):
    """Keys handed over in process (the builtin token endpoint): always loaded, never stale."""

    def __init__(self, name: str, jwks: Mapping[str, Any], algorithms: tuple[str, ...],
                 clock: Clock, metrics: Metrics, emit: EventEmitter,
                 on_change: KeysChanged) -> None:
        super().__init__(name, algorithms, clock, metrics, emit, on_change, 1.0, None)
        self.keys = parse_jwks(jwks, algorithms)[0]
        self.last_success = clock()
        self.next_refresh = float("inf")

    def needs_initial_load(self) -> bool:
        return False

    async def on_unknown_kid(self) -> None:
        return None

    def tick(self) -> asyncio.Task[None] | None:
        return None
