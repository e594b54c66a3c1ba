"""``JWTAuthenticator``: step 3 of the pipeline (bearer token -> :class:`Identity`).

Order of work for one token, cheapest first and nothing trusted before it is verified:

1. extract the single ``Authorization: Bearer`` value (size cap before anything else);
2. verified-token cache hit -> done (expiry re-checked on the injected clock, cert binding
   re-checked for this connection);
3. JWS-shaped: choose the issuer by the *unverified* ``iss`` (unknown -> 401); check ``alg``
   against that issuer's allowlist, refuse ``crit``/``b64``; find the key by ``(kid, alg)``
   in that issuer's set only (``jku``/``x5u``/``jwk``/``x5c`` are never looked at); unknown
   kid -> one shared, rate-limited refetch; verify; then ``exp``/``nbf``/``iat``/``iss``/
   ``aud``/lifetime; map claims;
4. otherwise (opaque token) -> the introspection issuers, in config order;
5. ``cnf."x5t#S256"`` must equal the connection's client-certificate thumbprint.

Reload (SIGHUP): building an instance is cheap (no I/O). Pass the instance being replaced as
``previous`` and remote JWKS state (keys, timers, discovered ``jwks_uri``) of issuers whose
key source is unchanged is carried over, so the new instance is ready at once and does not
refetch; when the whole ``auth`` config and builtin keys are unchanged the verified-token
cache is carried over too. ``jwks_file`` sources are always re-read on reload. Call
``start()`` on the new instance before swapping it in and ``close()`` on the old one after.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from sidecar import __version__
from sidecar.authn.bearer import bearer_token, looks_like_jws, split_jws
from sidecar.authn.cache import DEFAULT_CACHE_SIZE, CachedToken, TokenCache, token_digest
from sidecar.authn.claims import (
    IdentityHeaders,
    TimePolicy,
    build_identity,
    check_registered_claims,
)
from sidecar.authn.errors import IssuerUnavailable, TokenInvalid
from sidecar.authn.fetch import FetchError
from sidecar.authn.introspection import Introspector
from sidecar.authn.keys import BuiltinIssuerKeys, KeySet
from sidecar.authn.sources import FileJWKS, KeySource, RemoteJWKS, StaticKeys
from sidecar.config.auth import (
    AuthConfig,
    BuiltinIssuerConfig,
    IntrospectionIssuerConfig,
    JWTIssuerConfig,
)
from sidecar.context import ClientCert, Identity
from sidecar.metrics import Metrics
from sidecar.stages import EventEmitter

log = logging.getLogger("sidecar.authn")

TICK_SECONDS = 1.0
MAX_KID_CHARS = 256


@dataclass(frozen=True, slots=True)
class _Issuer:
    name: str
    policy: TimePolicy
    algorithms: frozenset[str]
    source: KeySource


class JWTAuthenticator:
    """Validates bearer tokens; satisfies ``Authenticator``, ``Lifecycle``, ``ReadinessCheck``.

    Args:
        config: the ``auth`` section.
        metrics: ``jwks_refresh{issuer,result}`` is counted here.
        emit: security events (``jwks_refresh_failed``).
        clock: wall-clock seconds; every expiry and JWKS timer reads it.
        builtin_keys: ``TokenIssuer.builtin_public_keys()``; required when ``config`` has a
            ``builtin: true`` issuer.
        previous: the instance this one replaces on reload (see the module docstring).
        cache_size: bound of the verified-token cache.

    Raises:
        ValueError: a builtin issuer is configured but ``builtin_keys`` is None.
    """

    def __init__(self, config: AuthConfig, metrics: Metrics, emit: EventEmitter,
                 clock: Callable[[], float] = time.time,
                 builtin_keys: BuiltinIssuerKeys | None = None,
                 previous: JWTAuthenticator | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._config = config
        self._clock = clock
        self._builtin_keys = builtin_keys
        self._mapping = config.claims
        self._headers = IdentityHeaders(config.forward)
        self._header_memo: dict[
            int, tuple[Identity, frozenset[str] | None, Mapping[str, str]]] = {}
        carry_cache = (previous is not None and previous._config == config
                       and previous._builtin_keys == builtin_keys)
        self._cache: TokenCache = (previous._cache if carry_cache and previous is not None
                                   else TokenCache(cache_size))
        self._by_iss: dict[str, _Issuer] = {}
        self._introspectors: list[Introspector] = []
        self._session: aiohttp.ClientSession | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        old_sources = {getattr(i.source, "identity", None): i.source
                       for i in (previous._by_iss.values() if previous else ())}
        for issuer in config.issuers:
            if isinstance(issuer, IntrospectionIssuerConfig):
                self._introspectors.append(Introspector(issuer, config.claims))
            elif isinstance(issuer, BuiltinIssuerConfig):
                self._add_builtin(issuer, builtin_keys, metrics, emit)
            else:
                self._add_jwt(issuer, metrics, emit, old_sources)

    # --- construction ---------------------------------------------------------------

    def _add_jwt(self, issuer: JWTIssuerConfig, metrics: Metrics, emit: EventEmitter,
                 old_sources: Mapping[object, KeySource]) -> None:
        source: KeySource
        if issuer.jwks_file is not None:
            source = FileJWKS(issuer, self._clock, metrics, emit, self._keys_changed)
        else:
            remote = RemoteJWKS(issuer, self._clock, metrics, emit, self._keys_changed)
            old = old_sources.get(remote.identity)
            if old is not None:
                remote.adopt(old)
            source = remote
        if issuer.insecure_allow_http_jwks:
            log.warning("SECURITY: issuer %s: insecure_allow_http_jwks is on; its keys may be "
                        "fetched over plain http", issuer.name)
        policy = TimePolicy(issuer.issuer, frozenset(issuer.audiences), issuer.leeway,
                            issuer.max_lifetime)
        self._by_iss[issuer.issuer] = _Issuer(issuer.name, policy, frozenset(issuer.algorithms),
                                              source)

    def _add_builtin(self, issuer: BuiltinIssuerConfig, keys: BuiltinIssuerKeys | None,
                     metrics: Metrics, emit: EventEmitter) -> None:
        if keys is None:
            raise ValueError(f"issuer {issuer.name} is builtin: pass the token endpoint's "
                             "builtin_public_keys()")
        source = StaticKeys(issuer.name, keys.jwks, keys.algorithms, self._clock, metrics, emit,
                            self._keys_changed)
        if keys.issuer in self._by_iss:
            raise ValueError(f"issuer {issuer.name}: token_endpoint.issuer is another "
                             "issuer's iss")
        policy = TimePolicy(keys.issuer, frozenset({keys.audience}), issuer.leeway,
                            keys.max_lifetime)
        self._by_iss[keys.issuer] = _Issuer(issuer.name, policy, frozenset(keys.algorithms),
                                            source)

    def _keys_changed(self, issuer_name: str, keys: KeySet) -> None:
        dropped = self._cache.evict_keys(issuer_name, keys.kids)
        if dropped:
            log.info("issuer %s: %d cached token(s) dropped with their key", issuer_name, dropped)

    # --- Lifecycle / ReadinessCheck ---------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session, load keys not carried over (waiting at most one fetch
        timeout per issuer; an unreachable issuer leaves it not ready) and start the
        background refresher."""
        for configured in self._config.issuers:
            if isinstance(configured, IntrospectionIssuerConfig) and \
                    configured.introspection.insecure_allow_http:
                log.warning("SECURITY: issuer %s: introspection over plain http is allowed",
                            configured.name)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32, ttl_dns_cache=300),
            headers={"User-Agent": f"payments-sidecar/{__version__}"}, trust_env=False)
        for issuer in self._by_iss.values():
            if isinstance(issuer.source, RemoteJWKS):
                issuer.source.session = self._session
        await asyncio.gather(*(i.source.load() for i in self._by_iss.values()
                               if i.source.needs_initial_load()))
        self._ticker = asyncio.create_task(self._tick_forever(), name="jwks-refresh")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await asyncio.gather(*(i.source.close() for i in self._by_iss.values()))
        if self._session is not None:
            await self._session.close()
            self._session = None

    def readiness(self) -> Mapping[str, bool]:
        """``issuer:<name>`` -> has usable (not over-stale) keys, for JWKS/builtin issuers."""
        now = self._clock()
        return {f"issuer:{i.name}": i.source.current(now) is not None
                for i in self._by_iss.values()}

    async def tick(self) -> None:
        """Run due refreshes (and ``jwks_file`` mtime checks) now and wait for them; the
        background task does this every second without waiting."""
        tasks = [t for t in (i.source.tick() for i in self._by_iss.values()) if t is not None]
        await asyncio.gather(*tasks)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for issuer in self._by_iss.values():
                task = issuer.source.tick()
                if task is not None:  # keep a reference until it ends
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)

    # --- Authenticator -------------------------------------------------------------

    def is_cached(self, authorization: Sequence[str]) -> bool:
        """True when the token is in the verified-token cache (no parsing, no crypto)."""
        if len(authorization) != 1:
            return False
        entry = self._cache.get(token_digest(authorization[0]), self._clock())
        return entry is not None and entry.identity is not None

    async def authenticate(self, authorization: Sequence[str],
                           client_cert: ClientCert | None) -> Identity:
        """Validate the request's bearer token.

        Raises:
            DuplicateAuthorization: more than one ``Authorization`` header (400).
            TokenMissing: no bearer token (401, bare ``Bearer realm`` challenge).
            TokenInvalid: any validation failure, including a certificate-binding mismatch.
            TokenExpired: ``exp`` past (beyond leeway).
            IssuerUnavailable: the issuer has no usable keys / introspection failed (503).
        """
        now = self._clock()
        # The cache is keyed by the exact Authorization value, so a hit costs one hash and
        # no parsing; only a value that passed every check below is ever cached.
        if len(authorization) != 1:
            bearer_token(authorization)  # raises TokenMissing / DuplicateAuthorization
        digest = token_digest(authorization[0])
        entry = self._cache.get(digest, now)
        if entry is None:
            token = bearer_token(authorization)
            if looks_like_jws(token) and (self._by_iss or not self._introspectors):
                entry = await self._validate_jws(token)
            else:
                entry = await self._introspect(token)
            self._cache.put(digest, entry, self._clock())
        if entry.identity is None:
            raise TokenInvalid("introspection: token not active")
        _check_binding(entry.identity, client_cert)
        return entry.identity

    def identity_headers(self, identity: Identity,
                         roles: frozenset[str] | None = None) -> Mapping[str, str]:
        """``forward.headers`` values from verified claims; unsafe values are left out.

        ``roles`` are the effective roles (RBAC adds ``rbac.clients``); default: the
        token's. Memoised per cached identity and roles object, like the token itself.
        """
        memo = self._header_memo.get(id(identity))
        if memo is not None and memo[0] is identity and memo[1] is roles:
            return memo[2]
        shown = identity if roles is None else dataclasses.replace(identity, roles=roles)
        headers = self._headers(shown)
        if len(self._header_memo) >= DEFAULT_CACHE_SIZE:
            self._header_memo.clear()
        self._header_memo[id(identity)] = (identity, roles, headers)
        return headers

    # --- validation --------------------------------------------------------------------

    async def _validate_jws(self, token: str) -> CachedToken:
        jws = split_jws(token)
        iss = jws.claims.get("iss")
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenInvalid("unknown issuer")
        header = jws.header
        alg = header.get("alg")
        # SECURITY: exact, case-sensitive allowlist per issuer (RFC 8725 §3.1): no "none",
        # no HMAC keyed with a public key, no "None"/"nOnE".
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise TokenInvalid("alg not allowed for this issuer")
        # SECURITY: RFC 7515 §4.1.11 - we implement no extension, so any crit is refused; b64
        # (RFC 7797) is only valid under crit.
        if "crit" in header or "b64" in header:
            raise TokenInvalid("unsupported critical header")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            raise TokenInvalid("kid is not a short string")
        # SECURITY: jku/x5u/jwk/x5c are never consulted; keys come from config only.
        keys = issuer.source.current(self._clock())
        key = keys.find(kid, alg) if keys is not None else None
        if key is None:
            await issuer.source.on_unknown_kid()
            keys = issuer.source.current(self._clock())
            if keys is None:
                raise IssuerUnavailable(f"issuer {issuer.name} has no usable keys")
            key = keys.find(kid, alg)
            if key is None:
                raise TokenInvalid("no key for kid and alg")
        if not key.verify(jws.signing_input, jws.signature):
            raise TokenInvalid("signature verification failed")
        exp = check_registered_claims(jws.claims, issuer.policy, self._clock())
        identity = build_identity(jws.claims, self._mapping, issuer.policy.issuer, exp)
        return CachedToken(identity, exp, issuer.name, key.kid)

    async def _introspect(self, token: str) -> CachedToken:
        if not self._introspectors:
            raise TokenInvalid("opaque token and no introspection issuer")
        if self._session is None:
            raise IssuerUnavailable("authenticator not started")
        failed: list[str] = []
        until = float("inf")
        for introspector in self._introspectors:
            try:
                result = await introspector.introspect(self._session, token, self._clock())
            except FetchError as exc:
                failed.append(f"{introspector.name}: {exc}")
                continue
            if result.identity is not None:
                return CachedToken(result.identity, result.cache_until, introspector.name)
            until = min(until, result.cache_until)
        if failed:
            raise IssuerUnavailable("introspection failed: " + "; ".join(failed))
        return CachedToken(None, until, self._introspectors[0].name)


def _check_binding(identity: Identity, client_cert: ClientCert | None) -> None:
    """RFC 8705 §3: a certificate-bound token needs the same certificate on this connection.

    Raises:
        TokenInvalid: bound token without a client certificate, or another certificate.
    """
    bound = identity.cnf_x5t_s256
    if bound is None:
        return
    if client_cert is None or not hmac.compare_digest(
            client_cert.sha256_thumbprint.encode(), bound.encode()):
        raise TokenInvalid("certificate-bound token presented without its certificate")
