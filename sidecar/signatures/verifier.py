"""Step 6: ``SignatureStage`` verifies RFC 9421 request signatures and RFC 9530 digests.

A request passes when at least one of its signatures (any label):

1. names a registered ``keyid`` of the authenticated client, whose configured algorithm is
   allowed and agrees with the signature's ``alg`` parameter (when given);
2. has ``created`` no older than ``max_age`` and not beyond ``clock_skew`` in the future,
   and ``expires`` (when given) not passed;
3. carries a ``nonce`` when ``require_nonce``;
4. covers every component of ``signatures.covered`` that applies: derived components
   always, ``content-digest`` when the body is not empty, other fields when the request
   carries them;
5. verifies over the signature base rebuilt from the received message;
6. has a matching ``Content-Digest`` when that field is present (checked after 5, so a
   ``digest_mismatch`` means a validly signed digest that the body does not match);
7. has a nonce not seen before — claimed only now, after everything else passed.

Cheap checks run before any public-key operation, so a flood of forged signatures costs
parsing, not crypto. Everything that depends only on config (keys with their algorithm,
the required components) is compiled when the stage is built; a request pays for parsing
its fields, building its base, one digest and one public-key check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio
from aiohttp import web
from prometheus_client import Counter

import sidecar.signatures.checks  # noqa: F401  (registers the config cross-checks)
from sidecar.config.signatures import SignaturesConfig, effective_nonce_store
from sidecar.context import RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.problem import SidecarError
from sidecar.signatures.base import Header, Message, RequestView, build_signature_base
from sidecar.signatures.components import ComponentId, Identity
from sidecar.signatures.digest import DigestError, verify_content_digest
from sidecar.signatures.errors import (
    DigestMismatch,
    NonceStoreUnavailable,
    SignatureExpired,
    SignatureInvalid,
    SignatureMissing,
    SignatureReplayed,
)
from sidecar.signatures.fields import MalformedField, SignatureInput, parse_signatures
from sidecar.signatures.keys import KeyRing, VerificationKey, load_keyring
from sidecar.signatures.nonces import (
    MemoryNonceStore,
    NonceStore,
    NonceStoreError,
    RedisNonceStore,
    nonce_key,
)
from sidecar.signatures.views import request_view
from sidecar.stages import EventEmitter

MAX_NONCE_LENGTH = 256
_RANK = {SignatureInvalid: 0, SignatureExpired: 1, DigestMismatch: 2, SignatureReplayed: 3}
_COVER_FLAGS = frozenset({"sf", "bs"})


def _rank(error: SidecarError) -> int:
    return _RANK.get(type(error), 0)


@dataclass(frozen=True, slots=True)
class _Requirement:
    """One component of ``signatures.covered``, compiled."""

    component: ComponentId
    identity: Identity
    field: str | None
    """A plain header field (no parameters): required only when it applies, and covered
    whole or with ``;sf`` / ``;bs``. None for derived components and parameterised fields,
    which must be covered exactly."""


def _compile_required(covered: Sequence[ComponentId]) -> tuple[_Requirement, ...]:
    return tuple(
        _Requirement(c, c.identity, None if c.is_derived or c.params else c.name)
        for c in covered)


def _signature_fields(headers: Sequence[Header]) -> tuple[list[str], list[str], list[str]]:
    """The Signature-Input, Signature and Content-Digest field lines, in one pass."""
    inputs: list[str] = []
    signatures: list[str] = []
    digests: list[str] = []
    for name, value in headers:
        if name == "signature-input":
            inputs.append(value)
        elif name == "signature":
            signatures.append(value)
        elif name == "content-digest":
            digests.append(value)
    return inputs, signatures, digests


class _DigestCheck:
    """The request's ``Content-Digest`` verdict, computed at most once per request: with
    several signatures, the body is hashed once, not once per signature."""

    __slots__ = ("_body", "_checked", "_error", "_lines")

    def __init__(self, lines: list[str], body: bytes) -> None:
        self._lines = lines
        self._body = body
        self._checked = False
        self._error: DigestError | None = None

    def error(self) -> DigestError | None:
        """None when the field is absent or every supported digest matches the body."""
        if not self._checked:
            self._checked = True
            if self._lines:
                try:
                    verify_content_digest(self._lines, self._body)
                except DigestError as exc:
                    self._error = exc
        return self._error


class SignatureStage:
    """Implements ``stages.SignatureVerifier``.

    Args:
        cfg: the validated ``signatures`` section (keys are loaded here, once).
        nonce_store: where nonces are claimed (:func:`build_nonce_store`).
        metrics: ``signature_verifications{result}`` is counted per verification.
        emit: receives ``signature_replay`` with ``keyid`` and ``client_id`` only.
        clock: wall-clock seconds, compared with ``created`` / ``expires``.

    Raises:
        ConfigError: a key cannot be loaded (every key's problem, with its config path).
    """

    def __init__(self, cfg: SignaturesConfig, nonce_store: NonceStore, metrics: Metrics,
                 emit: EventEmitter, clock: Callable[[], float] = time.time) -> None:
        self._cfg = cfg
        self._keys: KeyRing = load_keyring(cfg)
        self._algorithms = frozenset(cfg.algorithms)
        self._required = _compile_required(cfg.compiled_covered)
        self._max_age = cfg.max_age
        self._clock_skew = cfg.clock_skew
        self._require_nonce = cfg.require_nonce
        self._nonces = nonce_store
        self._metrics = metrics
        self._results: dict[str, Counter] = {}
        """``signature_verifications`` children by result, bound on first use."""
        self._emit = emit
        self._clock = clock
        self._nonce_ttl = cfg.nonce_ttl()

    def required_for(self, route: RouteMatch) -> bool:
        """True when the rule says ``signature: required`` (or True), or when
        ``signatures.required`` is set and the route is not public. A rule cannot opt out
        of the global requirement."""
        rule_setting = getattr(route.rule, "signature", None)
        if rule_setting is True or rule_setting == "required":
            return True
        return self._cfg.required and not route.public

    async def verify(self, request: web.BaseRequest, ctx: RequestContext, body: bytes) -> str:
        """Verify the request's signature; set and return the accepted ``keyid``.

        ``body`` must be the complete body exactly as received (content-coded bytes).

        Raises:
            SignatureMissing, SignatureInvalid, SignatureExpired, SignatureReplayed: 401.
            DigestMismatch: 400.
            NonceStoreUnavailable: 503, the replay store cannot answer (fail closed).
        """
        client_id = ctx.identity.client_id if ctx.identity is not None else None
        keyid = await self.verify_message(request_view(request), body, client_id)
        ctx.signature_keyid = keyid
        return keyid

    async def verify_message(self, view: RequestView, body: bytes, client_id: str | None) -> str:
        """As :meth:`verify`, over a message view. ``client_id`` None (a public rule that
        requires a signature) accepts any registered client's key."""
        try:
            keyid = await self._verify(view, body, client_id)
        except SidecarError as exc:
            self._count(exc.code)
            raise
        self._count("ok")
        return keyid

    def _count(self, result: str) -> None:
        child = self._results.get(result)
        if child is None:  # one child per result code: a closed set
            child = self._metrics.signature_verifications.labels(result=result)
            self._results[result] = child
        child.inc()

    async def _verify(self, view: RequestView, body: bytes, client_id: str | None) -> str:
        input_lines, signature_lines, digest_lines = _signature_fields(view.headers)
        if not input_lines and not signature_lines:
            raise SignatureMissing("no Signature-Input and Signature fields")
        if not input_lines or not signature_lines:
            raise SignatureInvalid("Signature-Input and Signature must come together")
        try:
            pairs = parse_signatures(input_lines, signature_lines)
        except MalformedField as exc:
            raise SignatureInvalid(f"malformed signature fields: {exc}") from exc
        now = self._clock()
        digest = _DigestCheck(digest_lines, body)
        failures: list[SidecarError] = []
        for sig_input, signature in pairs:
            try:
                return await self._verify_one(view, body, client_id, sig_input, signature, now,
                                              digest)
            except (SignatureInvalid, SignatureExpired, SignatureReplayed, DigestMismatch) as exc:
                failures.append(exc)
        raise max(failures, key=_rank)

    async def _verify_one(self, view: RequestView, body: bytes, client_id: str | None,
                          sig: SignatureInput, signature: bytes, now: float,
                          digest: _DigestCheck) -> str:
        label = sig.label
        keyid = sig.keyid
        if keyid is None:
            raise SignatureInvalid(f"{label}: no keyid")
        key = self._keys.get(keyid)
        if key is None:
            raise SignatureInvalid(f"{label}: unknown keyid {keyid!r}")
        if client_id is not None and key.client_id != client_id:
            # SECURITY: a signature proves the token's client sent the request only when the
            # key is that client's (SPEC: "a signature must come from a key of the token's client").
            raise SignatureInvalid(f"{label}: keyid {keyid!r} is not a key of client {client_id!r}")
        if key.alg not in self._algorithms:
            raise SignatureInvalid(f"{label}: algorithm {key.alg} is not allowed")
        alg = sig.param("alg")
        if alg is not None and alg != key.alg:
            # SECURITY: RFC 9421 §7.3.6 — the key fixes the algorithm; a message cannot pick.
            raise SignatureInvalid(f"{label}: alg {alg!r} contradicts the key's {key.alg}")
        check_times(sig, now, self._max_age, self._clock_skew)
        nonce = sig.param("nonce")
        if nonce is None and self._require_nonce:
            raise SignatureInvalid(f"{label}: no nonce")
        if nonce is not None and not 0 < len(nonce) <= MAX_NONCE_LENGTH:
            raise SignatureInvalid(f"{label}: nonce must be 1..{MAX_NONCE_LENGTH} characters")
        missing = self.missing_coverage(view, body, sig.components)
        if missing:
            raise SignatureInvalid(
                f"{label}: does not cover {', '.join(c.serialize() for c in missing)}")
        check_signature(view, sig, signature, key)
        digest_error = digest.error()
        if digest_error is not None:
            raise DigestMismatch(f"{label}: {digest_error}") from digest_error
        if nonce is not None:
            await self._claim(keyid, key.client_id, nonce)
        return keyid

    def missing_coverage(self, view: RequestView, body: bytes,
                         covered: Sequence[ComponentId]) -> list[ComponentId]:
        """Required components (``signatures.covered`` as it applies to this request) that
        ``covered`` lacks. A field counts as covered whole, or as ``;sf`` / ``;bs``."""
        identities = {c.identity for c in covered}
        present: set[str] | None = None
        missing: list[ComponentId] = []
        for required in self._required:
            if required.identity in identities:  # covered exactly: the common case
                continue
            name = required.field
            if name is not None:
                if name == "content-digest":
                    if not body:
                        continue
                else:
                    if present is None:
                        present = {header for header, _ in view.headers}
                    if name not in present:
                        continue
                if any(_covers_field(c, name) for c in covered):
                    continue
            missing.append(required.component)
        return missing

    async def _claim(self, keyid: str, client_id: str, nonce: str) -> None:
        try:
            fresh = await self._nonces.claim(nonce_key(keyid, nonce), self._nonce_ttl)
        except NonceStoreError as exc:
            self._metrics.redis_errors.labels(operation="nonce_claim").inc()
            raise NonceStoreUnavailable(str(exc)) from exc
        if not fresh:
            self._emit("signature_replay", {"keyid": keyid, "client_id": client_id})
            raise SignatureReplayed(f"nonce of {keyid!r} already used")


def check_times(sig: SignatureInput, now: float, max_age: float, clock_skew: float) -> None:
    """Check ``created`` (required) and ``expires`` against ``now`` (pure).

    Raises:
        SignatureInvalid: no ``created``, or ``expires`` before ``created``.
        SignatureExpired: older than ``max_age``, more than ``clock_skew`` in the future, or
            more than ``clock_skew`` past ``expires``.
    """
    created = sig.param("created")
    if created is None:
        raise SignatureInvalid(f"{sig.label}: no created")
    if created > now + clock_skew:
        raise SignatureExpired(f"{sig.label}: created is {created - now:.0f}s in the future")
    if now - created > max_age:
        raise SignatureExpired(f"{sig.label}: created {now - created:.0f}s ago")
    expires = sig.param("expires")
    if expires is not None:
        if expires < created:
            raise SignatureInvalid(f"{sig.label}: expires before created")
        if now > expires + clock_skew:
            raise SignatureExpired(f"{sig.label}: expired {now - expires:.0f}s ago")


def check_signature(message: Message, sig: SignatureInput, signature: bytes,
                    key: VerificationKey) -> None:
    """Rebuild the signature base of ``message`` and verify ``signature`` with ``key``
    under the key's configured algorithm (pure; no policy, time or replay checks).

    Raises:
        SignatureInvalid: the base cannot be built, or the signature does not verify.
    """
    try:
        base = build_signature_base(message, sig.components, sig.signature_params())
    except ValueError as exc:  # SignatureBaseError, or an unserialisable parameter
        raise SignatureInvalid(f"{sig.label}: {exc}") from exc
    if not key.verify(signature, base):
        raise SignatureInvalid(f"{sig.label}: signature does not verify with {key.keyid!r}")


def _covers_field(component: ComponentId, name: str) -> bool:
    """``component`` covers the whole field ``name``: bare, or with ``;sf`` / ``;bs``."""
    return component.name == name and all(key in _COVER_FLAGS for key, _ in component.params)


def build_nonce_store(store: str, redis_client: redis.asyncio.Redis | None,
                      key_prefix: str = "sidecar:", timeout: float | None = 1.0) -> NonceStore:
    """The configured nonce store (``effective_nonce_store(config)`` picks ``store``).

    Raises:
        ValueError: ``redis`` without a client.
    """
    if store == "redis":
        if redis_client is None:
            raise ValueError("the redis nonce store needs the redis client")
        return RedisNonceStore(redis_client, key_prefix, timeout)
    return MemoryNonceStore()


__all__ = [
    "SignatureStage", "build_nonce_store", "check_signature", "check_times",
    "effective_nonce_store",
]
