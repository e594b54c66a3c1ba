"""Key sets: a JWKS document compiled into (kid, alg) -> verification key (pure).

A key is usable for an algorithm only when its ``kty`` (and curve) fit that algorithm, the
algorithm is on the issuer's allowlist, and the JWK's own ``alg``/``use``/``key_ops`` (when
present) agree. Symmetric (``oct``) keys and keys carrying private members are never taken
from a JWKS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jwt import PyJWK
from jwt.algorithms import Algorithm
from jwt.exceptions import PyJWTError

MIN_RSA_BITS = 2048
DEFAULT_JWKS_TTL = 300.0
"""Refresh interval when the JWKS response has no ``Cache-Control: max-age``."""
MAX_JWKS_TTL = 86400.0

_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeySetError(ValueError):
    """The document is not a usable JWKS (the message is safe to log: no key material)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    alg: str
    algorithm: Algorithm
    key: Any

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return bool(self.algorithm.verify(signing_input, self.key, signature))


@dataclass(frozen=True, slots=True)
class KeySet:
    """Immutable keys of one issuer, looked up by ``(kid, alg)``."""

    keys: Mapping[tuple[str | None, str], VerificationKey] = field(default_factory=dict)
    fingerprint: str = ""
    """Canonical JSON of the public keys used, to tell a changed set from a refetched one."""

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(kid for kid, _ in self.keys if kid is not None)

    def find(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key for a token header; without ``kid`` only a set with one key for ``alg``."""
        if kid is not None:
            return self.keys.get((kid, alg))
        candidates = [k for (_, a), k in self.keys.items() if a == alg]
        return candidates[0] if len(candidates) == 1 else None

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class BuiltinIssuerKeys:
    """What the embedded token endpoint hands to the authenticator (no HTTP involved)."""

    issuer: str
    audience: str
    jwks: Mapping[str, Any]
    max_lifetime: float
    algorithms: tuple[str, ...]


def _algorithms_for(jwk: Mapping[str, Any], allowed: Iterable[str]) -> list[str]:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        fits = list(_RSA_ALGS)
    elif kty == "EC" and isinstance(crv, str) and crv in _EC_CURVE_ALG:
        fits = [_EC_CURVE_ALG[crv]]
    elif kty == "OKP" and crv in _OKP_CURVES:
        fits = ["EdDSA"]
    else:
        return []
    declared = jwk.get("alg")
    if declared is not None:
        fits = [declared] if declared in fits else []
    allowed_set = set(allowed)
    return [alg for alg in fits if alg in allowed_set]


def _usable_for_signatures(jwk: Mapping[str, Any]) -> bool:
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use != "sig":
        return False
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def parse_jwks(document: Any, allowed: Iterable[str]) -> tuple[KeySet, list[str]]:
    """Compile a JWKS into a :class:`KeySet` limited to ``allowed`` algorithms.

    Returns the set and the reasons keys were skipped (safe to log).

    Raises:
        KeySetError: not a JWKS object, or no usable key in it.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeySetError("not a JWKS: expected an object with a 'keys' list")
    allowed = tuple(allowed)
    keys: dict[tuple[str | None, str], VerificationKey] = {}
    used: list[Mapping[str, Any]] = []
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping):
            skipped.append(f"key {index}: not an object")
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            skipped.append(f"key {index}: kid is not a string")
            continue
        # SECURITY: a JWKS never supplies secret or private keys (RFC 8725 §3.1, 3.2).
        if jwk.get("kty") == "oct" or _PRIVATE_MEMBERS & set(jwk):
            skipped.append(f"key {index}: symmetric or private key material ignored")
            continue
        if not _usable_for_signatures(jwk):
            skipped.append(f"key {index}: not a signature key")
            continue
        algs = _algorithms_for(jwk, allowed)
        if not algs:
            skipped.append(f"key {index}: no allowed algorithm fits its type")
            continue
        for alg in algs:
            try:
                pyjwk = PyJWK(dict(jwk), algorithm=alg)
            except PyJWTError:
                skipped.append(f"key {index}: malformed {jwk.get('kty')} key")
                break
            if alg in _RSA_ALGS and pyjwk.key.key_size < MIN_RSA_BITS:
                skipped.append(f"key {index}: RSA key shorter than {MIN_RSA_BITS} bits")
                break
            if (kid, alg) in keys:
                skipped.append(f"key {index}: duplicate kid for {alg}")
                continue
            keys[(kid, alg)] = VerificationKey(kid, alg, pyjwk.Algorithm, pyjwk.key)
        else:
            used.append(jwk)
    if not keys:
        raise KeySetError("the JWKS has no usable key" + (f" ({skipped[0]})" if skipped else ""))
    fingerprint = json.dumps(sorted(json.dumps(k, sort_keys=True, default=str) for k in used))
    return KeySet(keys, fingerprint), skipped


def load_jwks_bytes(raw: bytes, allowed: Iterable[str]) -> tuple[KeySet, list[str]]:
    """Parse JSON bytes then :func:`parse_jwks`.

    Raises:
        KeySetError: not JSON or not a usable JWKS.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise KeySetError("the JWKS is not valid JSON") from exc
    return parse_jwks(document, allowed)


_MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE_RE = re.compile(r"(?:^|,)\s*no-(?:cache|store)\s*(?:[,=]|$)", re.IGNORECASE)


def jwks_ttl(cache_control: str | None, min_refresh: float) -> float:
    """How long a fetched JWKS is fresh: ``max-age`` clamped to [min_refresh, 24 h].

    No header means :data:`DEFAULT_JWKS_TTL` (5 min); ``no-cache``/``no-store`` means
    ``min_refresh``.
    """
    ttl = DEFAULT_JWKS_TTL
    if cache_control:
        if _NO_CACHE_RE.search(cache_control):
            ttl = 0.0
        else:
            match = _MAX_AGE_RE.search(cache_control)
            if match is not None:
                ttl = float(match.group(1))
    return min(max(ttl, min_refresh), max(MAX_JWKS_TTL, min_refresh))
