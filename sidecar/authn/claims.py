"""Registered-claim checks and the claims -> :class:`Identity` mapping (pure; clock passed in).

Everything here runs on claims whose signature already verified (or that an introspection
endpoint vouched for); the functions only decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sidecar.authn.errors import TokenExpired, TokenInvalid
from sidecar.config.auth import ClaimsConfig, ForwardConfig
from sidecar.context import Identity

MAX_JTI_CHARS = 256


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """What an issuer demands of ``exp``/``nbf``/``iat``/``iss``/``aud``."""

    issuer: str
    audiences: frozenset[str]
    leeway: float
    max_lifetime: float | None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise TokenInvalid(f"{name} is not a number")
    return float(value)


def check_audience(claims: Mapping[str, Any], audiences: Collection[str]) -> None:
    """``aud`` (string or list of strings) must contain a configured audience.

    Raises:
        TokenInvalid: missing or no match.
    """
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not any(isinstance(a, str) and a in audiences
                                               for a in values):
        raise TokenInvalid("aud does not name this service")


def check_registered_claims(claims: Mapping[str, Any], policy: TimePolicy, now: float) -> float:
    """RFC 7519 §4.1 checks; returns ``exp``.

    Raises:
        TokenExpired: ``exp`` is past (beyond leeway).
        TokenInvalid: ``exp`` missing, ``nbf``/``iat`` in the future, lifetime over
            ``max_lifetime`` (``iat`` then required), ``iss`` or ``aud`` mismatch.
    """
    if claims.get("iss") != policy.issuer:
        raise TokenInvalid("iss mismatch")
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenInvalid("exp missing")
    nbf = _number(claims, "nbf")
    iat = _number(claims, "iat")
    if now > exp + policy.leeway:
        raise TokenExpired("exp is past")
    if nbf is not None and nbf > now + policy.leeway:
        raise TokenInvalid("nbf is in the future")
    if iat is not None and iat > now + policy.leeway:
        raise TokenInvalid("iat is in the future")
    if policy.max_lifetime is not None:
        if iat is None:
            raise TokenInvalid("iat missing (required by max_lifetime)")
        if exp - iat > policy.max_lifetime:
            raise TokenInvalid("lifetime exceeds max_lifetime")
    check_audience(claims, policy.audiences)
    return exp


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _string_set(value: Any, what: str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(v for v in value if v)
    raise TokenInvalid(f"{what} claim is neither a string nor a list of strings")


def _first(claims: Mapping[str, Any], paths: tuple[str, ...]) -> Any:
    for path in paths:
        value = claim_at(claims, path)
        if value is not None:
            return value
    return None


def build_identity(claims: Mapping[str, Any], mapping: ClaimsConfig, issuer: str,
                   expires_at: float) -> Identity:
    """Map verified claims to an :class:`Identity`.

    Raises:
        TokenInvalid: no client id claim, or a scopes/roles/cnf claim of the wrong type.
    """
    client_id = next((v for v in (claims.get(n) for n in mapping.client_id)
                      if isinstance(v, str) and v), None)
    if client_id is None:
        raise TokenInvalid("no client id claim")
    sub = claims.get("sub")
    scope_value = _first(claims, mapping.scopes)
    role_value = _first(claims, mapping.roles)
    jti = claims.get("jti")
    cnf = claims.get("cnf")
    thumbprint: str | None = None
    if cnf is not None:
        if not isinstance(cnf, Mapping):
            raise TokenInvalid("cnf is not an object")
        bound = cnf.get("x5t#S256")
        if bound is not None and not isinstance(bound, str):
            raise TokenInvalid("cnf x5t#S256 is not a string")
        thumbprint = bound
    return Identity(
        client_id=client_id,
        subject=sub if isinstance(sub, str) and sub else client_id,
        issuer=issuer,
        scopes=_string_set(scope_value, "scope") if scope_value is not None else frozenset(),
        roles=_string_set(role_value, "roles") if role_value is not None else frozenset(),
        claims=MappingProxyType(dict(claims)),
        expires_at=expires_at,
        token_id=jti if isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_CHARS
        and jti.isprintable() else None,
        cnf_x5t_s256=thumbprint,
    )


_HEADER_SAFE = re.compile(r"[ -~]*")


def header_safe(value: str) -> bool:
    """Printable ASCII only: no CR/LF/NUL or other controls, nothing a header could split on."""
    return _HEADER_SAFE.fullmatch(value) is not None


Extractor = Callable[[Identity], str | None]


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _extractor(source: str) -> Extractor:
    if source.startswith("claim:"):
        path = source[len("claim:"):]
        return lambda identity: _scalar(claim_at(identity.claims, path))
    fixed: dict[str, Extractor] = {
        "client_id": lambda i: i.client_id,
        "scopes": lambda i: " ".join(sorted(i.scopes)),
        "roles": lambda i: " ".join(sorted(i.roles)),
        "sub": lambda i: i.subject,
        "iss": lambda i: i.issuer,
        "jti": lambda i: i.token_id,
    }
    return fixed[source]


class IdentityHeaders:
    """``forward.headers`` compiled once: identity -> trusted headers for the backend."""

    def __init__(self, forward: ForwardConfig) -> None:
        self._extractors = tuple((h, _extractor(s)) for h, s in forward.headers.items())

    def __call__(self, identity: Identity) -> Mapping[str, str]:
        """Header values; a value that is absent or not header-safe is left out entirely."""
        out: dict[str, str] = {}
        for header, extract in self._extractors:
            value = extract(identity)
            # SECURITY: header injection (CR/LF/NUL) from claim values, RFC 9110 §5.5.
            if value is not None and header_safe(value):
                out[header] = value
        return out
