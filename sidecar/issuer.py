"""The embedded OAuth 2.0 client-credentials token endpoint (RFC 6749 §4.4) and its JWKS.

A :class:`LocalEndpoint`: the pipeline hands it requests for ``token_endpoint.path`` and
``token_endpoint.jwks_path`` (no rule needed; the ``unauthenticated`` per-IP limit applies).

Errors on the token path are RFC 6749 §5.2 JSON bodies (``application/json`` with
``error``/``error_description``), not problem+json: OAuth client libraries parse exactly that
shape. Only the 405 for a wrong method is problem+json, like every other sidecar answer.

Client secrets are checked against scrypt hashes in a thread pool behind a semaphore (they
are deliberately CPU-heavy); unknown clients are checked against a dummy hash so the answer
takes as long. Failed client authentication is passed to ``charge_failure`` (the rate
limiter's hook) when one is set.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from sidecar.authn.keys import BuiltinIssuerKeys
from sidecar.config.auth import TokenEndpointConfig
from sidecar.config.loader import ConfigError, ConfigIssue
from sidecar.context import Identity, RequestContext
from sidecar.metrics import Metrics
from sidecar.problem import PROBLEM_CONTENT_TYPE, MethodNotAllowed, problem_body
from sidecar.secrets import DUMMY_HASH, ScryptHash, parse_secret_hash, verify_secret
from sidecar.stages import EventEmitter

MAX_FORM_BYTES = 16 * 1024
MAX_SECRET_CHARS = 1024
JWT_TYP = "at+jwt"  # RFC 9068 §2.1
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
ChargeFailure = Callable[[RequestContext], Awaitable[object]]

_DESCRIPTIONS = {
    "invalid_request": "The request is missing a parameter, repeats one, or is malformed.",
    "invalid_client": "Client authentication failed.",
    "invalid_scope": "The requested scope is invalid or exceeds what the client may request.",
    "unsupported_grant_type": "Only the client_credentials grant is supported.",
    "temporarily_unavailable": "The token endpoint is overloaded; retry shortly.",
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    private_key: PrivateKey
    public_jwk: Mapping[str, Any]

    def __repr__(self) -> str:  # keep the private key out of logs and tracebacks
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


def load_signing_keys(config: TokenEndpointConfig) -> tuple[SigningKey, ...]:
    """Read every ``signing_keys[].private_key_file`` (PEM, unencrypted).

    Raises:
        ConfigError: a file is unreadable, not a PEM private key, or not of its ``alg``.
    """
    keys: list[SigningKey] = []
    issues: list[ConfigIssue] = []
    for index, entry in enumerate(config.signing_keys):
        where = f"token_endpoint.signing_keys[{index}].private_key_file"
        try:
            private = load_pem_private_key(Path(entry.private_key_file).read_bytes(), None)
        except OSError as exc:
            issues.append(ConfigIssue(where, f"cannot read {entry.private_key_file}: "
                                      f"{exc.strerror}"))
            continue
        except (ValueError, TypeError):
            issues.append(ConfigIssue(where, "not an unencrypted PEM private key"))
            continue
        jwk: dict[str, Any]
        if entry.alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
            jwk = dict(OKPAlgorithm.to_jwk(private.public_key(), as_dict=True))
        elif entry.alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey) and \
                isinstance(private.curve, ec.SECP256R1):
            jwk = dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
        else:
            need = "an Ed25519" if entry.alg == "EdDSA" else "a P-256 EC"
            issues.append(ConfigIssue(where, f"alg {entry.alg} needs {need} private key"))
            continue
        jwk.update(kid=entry.kid, alg=entry.alg, use="sig")
        keys.append(SigningKey(entry.kid, entry.alg, private, jwk))
    if issues:
        raise ConfigError(issues)
    return tuple(keys)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, status: int = 400, log_detail: str = "") -> None:
        super().__init__(log_detail or error)
        self.error, self.status = error, status

    def response(self) -> web.Response:
        headers = dict(_NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="sidecar"'
        if self.error == "temporarily_unavailable":
            headers["Retry-After"] = "1"
        body = {"error": self.error, "error_description": _DESCRIPTIONS[self.error]}
        return web.json_response(body, status=self.status, headers=headers)


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("ascii")
        if _BAD_PERCENT.search(text):
            raise ValueError("invalid percent-encoding")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=32, encoding="utf-8", errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_request", log_detail="malformed form body") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        # RFC 6749 §3.2: parameters MUST NOT be included more than once.
        if name in form:
            raise OAuthError("invalid_request", log_detail=f"repeated parameter {name}")
        form[name] = value
    # RFC 6749 §3.1: a parameter without a value is treated as omitted.
    return {k: v for k, v in form.items() if v}


def _basic_credentials(value: str) -> tuple[str, str]:
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", 401, "Authorization is not Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", 401, "malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", 401, "malformed Basic credentials")
    # RFC 6749 §2.3.1: id and secret are form-urlencoded inside the Basic credentials.
    return unquote_plus(client_id), unquote_plus(secret)


def _requested_scopes(form: Mapping[str, str], allowed: Sequence[str]) -> tuple[str, ...]:
    requested = form.get("scope")
    if requested is None:
        return tuple(allowed)
    scopes = requested.split(" ")
    if any(not s or any(c < "!" or c in '"\\' or c > "~" for c in s) for s in scopes):
        raise OAuthError("invalid_scope", log_detail="malformed scope")
    if not set(scopes) <= set(allowed):
        raise OAuthError("invalid_scope", log_detail="scope exceeds the client's scopes")
    return tuple(dict.fromkeys(scopes))


class TokenIssuer:
    """The token endpoint and JWKS document; satisfies ``stages.LocalEndpoint``.

    Args:
        config: an enabled ``token_endpoint`` section.
        metrics: ``tokens_issued`` / ``token_excessive_issuance`` are counted here.
        emit: ``token_issued`` and ``token_excessive_issuance`` security events.
        clock: wall-clock seconds (``iat``/``exp`` and the issuance window).
        charge_failure: awaited with the request context when client authentication fails.
        charge_client: awaited after a client authenticated, before a token is issued
            (the client's own rate-limit budget); a ``SidecarError`` it raises ends the
            request.
        signing_keys: preloaded keys (default: :func:`load_signing_keys`).
        max_concurrent_hashes: scrypt verifications running at once (threads).
        max_waiting: further requests queue up to this; beyond it, 503
            ``temporarily_unavailable``.

    Raises:
        ConfigError: a signing key file is unusable.
        ValueError: the section is disabled.
    """

    def __init__(self, config: TokenEndpointConfig, metrics: Metrics, emit: EventEmitter, *,
                 clock: Callable[[], float] = time.time,
                 charge_failure: ChargeFailure | None = None,
                 charge_client: ChargeFailure | None = None,
                 signing_keys: Sequence[SigningKey] | None = None,
                 max_concurrent_hashes: int = 2, max_waiting: int = 64) -> None:
        if not config.enabled:
            raise ValueError("token_endpoint is disabled")
        self.config = config
        self.paths = frozenset({config.path, config.jwks_path})
        self.charge_failure = charge_failure
        self.charge_client = charge_client
        self._extra_claims = {c.client_id: dict(c.claims) for c in config.clients}
        self._metrics, self._emit, self._clock = metrics, emit, clock
        self._keys = tuple(signing_keys) if signing_keys is not None else \
            load_signing_keys(config)
        self._clients: dict[str, tuple[ScryptHash, tuple[str, ...]]] = {
            c.client_id: (parse_secret_hash(c.secret_hash), c.scopes) for c in config.clients}
        self._jwks = {"keys": [dict(k.public_jwk) for k in self._keys]}
        self._jwks_body = json.dumps(self._jwks, separators=(",", ":")).encode()
        self._hash_slots = asyncio.Semaphore(max_concurrent_hashes)
        self._waiting, self._max_waiting = 0, max_waiting
        self._issued: dict[str, deque[float]] = {}

    def jwks_document(self) -> Mapping[str, Any]:
        """Every configured key's public JWK (``kid``, ``alg``, ``use: sig``)."""
        return self._jwks

    def builtin_public_keys(self) -> BuiltinIssuerKeys:
        """What ``JWTAuthenticator(builtin_keys=...)`` needs to accept this endpoint's tokens."""
        return BuiltinIssuerKeys(
            issuer=self.config.issuer, audience=self.config.audience, jwks=self._jwks,
            max_lifetime=self.config.ttl,
            algorithms=tuple(sorted({k.alg for k in self._keys})))

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        """Answer a token or JWKS request. Never raises for client errors."""
        if request.path == self.config.jwks_path:
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed(ctx, "GET, HEAD")
            return web.Response(body=self._jwks_body, content_type="application/json",
                                headers={"Cache-Control": "public, max-age=300"})
        if request.method != "POST":
            return _method_not_allowed(ctx, "POST")
        try:
            return await self._token(request, ctx)
        except OAuthError as exc:
            ctx.reason, ctx.stage = exc.error, "token_endpoint"
            if exc.error == "invalid_client" and self.charge_failure is not None:
                await self.charge_failure(ctx)
            return exc.response()

    async def _token(self, request: web.BaseRequest, ctx: RequestContext) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", log_detail="not a form body")
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", log_detail="form body too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise OAuthError("invalid_request", log_detail="form body too large") from exc
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", log_detail="form body too large")
        form = _parse_form(body)
        grant = form.get("grant_type")
        if grant is None:
            raise OAuthError("invalid_request", log_detail="grant_type missing")
        if grant != "client_credentials":
            raise OAuthError("unsupported_grant_type")
        client_id, scopes = await self._authenticate_client(request, form)
        granted = _requested_scopes(form, scopes)
        if self.charge_client is not None:
            # The client's own budget (rate_limits.default); a 429 here is problem+json.
            ctx.identity = Identity(client_id=client_id, subject=client_id,
                                    issuer=self.config.issuer, scopes=frozenset(),
                                    roles=frozenset(), claims={}, expires_at=0.0)
            await self.charge_client(ctx)
        return self._issue(client_id, granted, ctx)

    async def _authenticate_client(self, request: web.BaseRequest,
                                   form: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
        headers = request.headers.getall("Authorization", [])
        if len(headers) > 1:
            raise OAuthError("invalid_request", log_detail="several Authorization headers")
        if headers:
            # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
            if "client_secret" in form:
                raise OAuthError("invalid_request", log_detail="two client auth methods")
            client_id, secret = _basic_credentials(headers[0])
            if form.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", log_detail="client_id differs from Basic")
        elif "client_secret" in form and "client_id" in form:
            client_id, secret = form["client_id"], form["client_secret"]
        else:
            raise OAuthError("invalid_client", 401, "no client authentication")
        known = self._clients.get(client_id)
        stored = known[0] if known is not None else DUMMY_HASH
        ok = len(secret) <= MAX_SECRET_CHARS and await self._verify(secret, stored)
        if known is None or not ok:
            raise OAuthError("invalid_client", 401, "bad client credentials")
        return client_id, known[1]

    async def _verify(self, secret: str, stored: ScryptHash) -> bool:
        if self._waiting >= self._max_waiting:
            raise OAuthError("temporarily_unavailable", 503, "too many secret checks queued")
        self._waiting += 1
        try:
            async with self._hash_slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, verify_secret, secret, stored)
        finally:
            self._waiting -= 1

    def _issue(self, client_id: str, scopes: tuple[str, ...],
               ctx: RequestContext) -> web.Response:
        key = self._keys[0]
        now = int(self._clock())
        ttl = int(self.config.ttl)
        scope = " ".join(scopes)
        claims: dict[str, Any] = {
            **self._extra_claims.get(client_id, {}),
            "iss": self.config.issuer, "aud": self.config.audience, "sub": client_id,
            "client_id": client_id, "scope": scope, "iat": now, "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
        }
        if ctx.client_cert is not None:  # RFC 8705 §3.1: bind the token to the certificate
            claims["cnf"] = {"x5t#S256": ctx.client_cert.sha256_thumbprint}
        token = jwt.encode(claims, key.private_key, algorithm=key.alg,
                           headers={"kid": key.kid, "typ": JWT_TYP})
        self._emit("token_issued", {"client_id": client_id, "jti": claims["jti"],
                                    "scope": scope, "exp": claims["exp"],
                                    "bound": "cnf" in claims})
        self._count(client_id, now)
        ctx.identity = Identity(client_id=client_id, subject=client_id,
                                issuer=self.config.issuer, scopes=frozenset(scopes),
                                roles=frozenset(), claims={}, expires_at=float(claims["exp"]),
                                token_id=claims["jti"])
        body = {"access_token": token, "token_type": "Bearer", "expires_in": ttl,
                "scope": scope}
        return web.json_response(body, headers=_NO_STORE)

    def _count(self, client_id: str, now: float) -> None:
        self._metrics.tokens_issued.labels(client_id=client_id).inc()
        limit = self.config.excessive_issuance
        # Only the last limit+1 issuance times matter: the window holds more than `limit`
        # tokens exactly when the oldest of those is younger than one ttl.
        recent = self._issued.setdefault(client_id, deque(maxlen=limit + 1))
        recent.append(now)
        if len(recent) > limit and recent[0] > now - self.config.ttl:
            self._metrics.token_excessive_issuance.labels(client_id=client_id).inc()
            self._emit("token_excessive_issuance", {
                "client_id": client_id, "threshold": limit, "window_seconds": self.config.ttl})


def _method_not_allowed(ctx: RequestContext, allow: str) -> web.Response:
    error = MethodNotAllowed(headers={"Allow": allow})
    ctx.reason, ctx.stage = error.code, error.stage
    return web.Response(body=problem_body(error, ctx.request_id), status=error.status,
                        content_type=PROBLEM_CONTENT_TYPE, headers=error.headers)
