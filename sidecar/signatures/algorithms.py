"""The RFC 9421 §3.3 algorithms over ``cryptography``, and loading the keys they use.

An algorithm is fixed per key by config (RFC 9421 §7.3.6: never chosen by the message), so
these functions take the algorithm name and a key already checked to fit it.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sidecar.config.signatures import decode_hmac_secret

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
VerifyKey = PublicKey | bytes
"""A public key, or the shared secret for ``hmac-sha256``."""
SignKey = PrivateKey | bytes

MIN_RSA_BITS = 2048
_EC = {
    "ecdsa-p256-sha256": (ec.SECP256R1, hashes.SHA256, 32),
    "ecdsa-p384-sha384": (ec.SECP384R1, hashes.SHA384, 48),
}
# RFC 9421 §3.3.1: RSASSA-PSS, SHA-512, MGF1 with SHA-512, 64-byte salt.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)


class KeyLoadError(ValueError):
    """A key cannot be loaded or does not fit its algorithm."""


def key_fits(alg: str, key: VerifyKey | SignKey) -> str | None:
    """None when ``key`` can be used with ``alg``, else why not."""
    if alg == "hmac-sha256":
        return None if isinstance(key, bytes) and len(key) >= 32 else "needs a 32+ byte secret"
    if alg == "ed25519":
        ok = isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey)
        return None if ok else "needs an Ed25519 key"
    if alg in _EC:
        curve = _EC[alg][0]
        if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and \
                isinstance(key.curve, curve):
            return None
        return f"needs an EC key on {curve.name}"
    if alg in ("rsa-pss-sha512", "rsa-v1_5-sha256"):
        if not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
            return "needs an RSA key"
        return None if key.key_size >= MIN_RSA_BITS else f"RSA keys need {MIN_RSA_BITS}+ bits"
    return f"unknown algorithm {alg!r}"


Verifier = Callable[[bytes, bytes], bool]
"""``(signature, base) -> bool`` for one key and its algorithm."""


def verifier(alg: str, key: VerifyKey) -> Verifier:
    """A check of ``alg`` signatures by ``key``, specialised once (keys are compiled at
    startup); it answers exactly as :func:`verify` would. A key that does not fit ``alg``
    yields a check that always fails."""
    if alg == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
        ed_key = key

        def check_ed25519(signature: bytes, base: bytes) -> bool:
            try:
                ed_key.verify(signature, base)
            except (InvalidSignature, ValueError):
                return False
            return True

        return check_ed25519
    if alg == "hmac-sha256" and isinstance(key, bytes):
        secret = key

        def check_hmac(signature: bytes, base: bytes) -> bool:
            # SECURITY: constant-time compare (RFC 9421 §3.3.3).
            return hmac.compare_digest(signature, hmac.new(secret, base, sha256).digest())

        return check_hmac

    def check(signature: bytes, base: bytes) -> bool:
        return verify(alg, key, signature, base)

    return check


def verify(alg: str, key: VerifyKey, signature: bytes, base: bytes) -> bool:
    """True when ``signature`` is a valid ``alg`` signature of ``base`` by ``key``."""
    try:
        if alg == "hmac-sha256":
            if not isinstance(key, bytes):
                return False
            expected = hmac.new(key, base, sha256).digest()
            return hmac.compare_digest(signature, expected)
        if alg == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(signature, base)
            return True
        if alg in _EC:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            _, hash_cls, size = _EC[alg]
            # RFC 9421 §3.3.4: the signature is r || s, each a fixed-size big-endian integer.
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), base, ec.ECDSA(hash_cls()))
            return True
        if alg == "rsa-pss-sha512":
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(signature, base, _PSS, hashes.SHA512())
            return True
        if alg == "rsa-v1_5-sha256":
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(signature, base, padding.PKCS1v15(), hashes.SHA256())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def sign(alg: str, key: SignKey, base: bytes) -> bytes:
    """Sign ``base`` with ``key`` under ``alg`` (ECDSA output converted to r || s).

    Raises:
        KeyLoadError: the key does not fit the algorithm.
    """
    problem = key_fits(alg, key)
    if problem is not None:
        raise KeyLoadError(f"{alg}: {problem}")
    if alg == "hmac-sha256":
        assert isinstance(key, bytes)
        return hmac.new(key, base, sha256).digest()
    if alg == "ed25519":
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(base)
    if alg in _EC:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        _, hash_cls, size = _EC[alg]
        r, s = decode_dss_signature(key.sign(base, ec.ECDSA(hash_cls())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert isinstance(key, rsa.RSAPrivateKey)
    if alg == "rsa-pss-sha512":
        return key.sign(base, _PSS, hashes.SHA512())
    return key.sign(base, padding.PKCS1v15(), hashes.SHA256())


def public_of(key: SignKey) -> VerifyKey:
    """The verification counterpart of a signing key."""
    return key if isinstance(key, bytes) else key.public_key()


# --- loading --------------------------------------------------------------------------

def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_public_pem(path: str, alg: str) -> PublicKey:
    """Load a PEM public key (SPKI, or PKCS#1 ``RSA PUBLIC KEY``) that fits ``alg``.

    Raises:
        KeyLoadError: unreadable, not a PEM public key, or the wrong type for ``alg``.
    """
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, PublicKey):
        raise KeyLoadError(f"{path}: unsupported key type")
    problem = key_fits(alg, key)
    if problem is not None:
        raise KeyLoadError(f"{path} does not fit alg {alg}: {problem}")
    return key


def _b64url(value: Any, member: str) -> bytes:
    if not isinstance(value, str):
        raise KeyLoadError(f"jwk member {member!r} must be a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError as exc:
        raise KeyLoadError(f"jwk member {member!r} is not base64url") from exc


def load_public_jwk(jwk: dict[str, Any], alg: str) -> PublicKey:
    """Build a public key from a JWK (OKP Ed25519, EC P-256/P-384, RSA).

    Raises:
        KeyLoadError: malformed members, a point not on the curve, or a type that misfits ``alg``.
    """
    kty = jwk.get("kty")
    try:
        key: PublicKey
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            key = ed25519.Ed25519PublicKey.from_public_bytes(_b64url(jwk.get("x"), "x"))
        elif kty == "EC" and jwk.get("crv") in ("P-256", "P-384"):
            curve: ec.EllipticCurve = ec.SECP256R1() if jwk["crv"] == "P-256" else ec.SECP384R1()
            x = int.from_bytes(_b64url(jwk.get("x"), "x"), "big")
            y = int.from_bytes(_b64url(jwk.get("y"), "y"), "big")
            key = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
        elif kty == "RSA":
            n = int.from_bytes(_b64url(jwk.get("n"), "n"), "big")
            e = int.from_bytes(_b64url(jwk.get("e"), "e"), "big")
            key = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            raise KeyLoadError(f"unsupported jwk kty/crv {kty}/{jwk.get('crv')}")
    except ValueError as exc:
        if isinstance(exc, KeyLoadError):
            raise
        raise KeyLoadError(f"invalid jwk: {exc}") from exc
    problem = key_fits(alg, key)
    if problem is not None:
        raise KeyLoadError(f"jwk does not fit alg {alg}: {problem}")
    return key


def load_signing_key(path: str, alg: str | None = None) -> tuple[SignKey, str]:
    """Load a PEM private key, or a file holding a base64 HMAC secret; infer ``alg``.

    Without ``alg``: Ed25519 -> ed25519, P-256 -> ecdsa-p256-sha256, P-384 ->
    ecdsa-p384-sha384, RSA -> rsa-pss-sha512, a non-PEM file -> hmac-sha256.

    Raises:
        KeyLoadError: unreadable, not a key, or the key does not fit ``alg``.
    """
    data = _read(path)
    key: SignKey
    if b"-----BEGIN" in data:
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyLoadError(f"{path} is not an unencrypted PEM private key") from exc
        if not isinstance(loaded, PrivateKey):
            raise KeyLoadError(f"{path}: unsupported key type")
        key = loaded
    else:
        try:
            key = decode_hmac_secret(data.decode("ascii"))
        except (ValueError, UnicodeError) as exc:
            raise KeyLoadError(f"{path}: not a PEM private key nor a base64 secret: {exc}") from exc
    if alg is None:
        alg = infer_alg(key)
    problem = key_fits(alg, key)
    if problem is not None:
        raise KeyLoadError(f"{path} does not fit alg {alg}: {problem}")
    return key, alg


def infer_alg(key: SignKey | VerifyKey) -> str:
    """The default algorithm for a key type (RSA defaults to rsa-pss-sha512)."""
    if isinstance(key, bytes):
        return "hmac-sha256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa-p384-sha384" if isinstance(key.curve, ec.SECP384R1) else "ecdsa-p256-sha256"
    return "rsa-pss-sha512"
