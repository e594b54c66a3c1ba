"""RFC 7662 token introspection for opaque tokens (an adapter: HTTP in, Identity out).

The sidecar authenticates with ``client_secret_basic`` (RFC 6749 §2.3.1: id and secret are
form-urlencoded before base64). Results are cached by the authenticator: active ones until
``min(exp, cache_ttl)``, inactive ones for at most :data:`NEGATIVE_TTL` seconds.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote_plus

import aiohttp

from sidecar.authn.claims import build_identity, check_audience
from sidecar.authn.errors import TokenExpired
from sidecar.authn.fetch import json_object, request_bytes
from sidecar.config.auth import ClaimsConfig, IntrospectionIssuerConfig
from sidecar.context import Identity

NEGATIVE_TTL = 5.0
MAX_INTROSPECTION_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class IntrospectionResult:
    identity: Identity | None
    """None when the endpoint says the token is not active."""
    cache_until: float


class Introspector:
    """One introspection issuer."""

    def __init__(self, config: IntrospectionIssuerConfig, mapping: ClaimsConfig) -> None:
        self.name = config.name
        self._config = config
        self._mapping = mapping
        c = config.introspection
        # RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined and base64-encoded.
        pair = f"{quote_plus(c.client_id)}:{quote_plus(c.client_secret.get_secret_value())}"
        self._headers = {"Accept": "application/json",
                         "Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        self._audiences = frozenset(config.audiences)

    async def introspect(self, session: aiohttp.ClientSession, token: str,
                         now: float) -> IntrospectionResult:
        """Ask the endpoint about ``token``.

        Raises:
            FetchError: the endpoint failed (the caller answers 503 ``issuer_unavailable``).
            TokenExpired / TokenInvalid: active but expired, wrong audience, or unmappable.
        """
        c = self._config.introspection
        raw, _ = await request_bytes(
            session, "POST", c.url, time_limit=c.timeout, headers=self._headers,
            data={"token": token, "token_type_hint": "access_token"},
            limit=MAX_INTROSPECTION_BYTES)
        claims = json_object(raw, "introspection response")
        # RFC 7662 §2.2: anything but the JSON boolean true is inactive.
        if claims.get("active") is not True:
            return IntrospectionResult(None, now + min(NEGATIVE_TTL, c.cache_ttl))
        exp = claims.get("exp")
        expires_at = now + c.cache_ttl
        if exp is not None:
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                return IntrospectionResult(None, now + min(NEGATIVE_TTL, c.cache_ttl))
            if exp <= now:
                raise TokenExpired("introspection: exp is past")
            expires_at = min(float(exp), expires_at)
        if self._audiences:
            check_audience(claims, self._audiences)
        iss = claims.get("iss")
        identity = build_identity(claims, self._mapping,
                                  iss if isinstance(iss, str) and iss else self.name,
                                  float(exp) if exp is not None else expires_at)
        return IntrospectionResult(identity, expires_at)
