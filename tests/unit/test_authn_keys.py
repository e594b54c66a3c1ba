"""JWKS compilation, Cache-Control freshness and the verified-token cache (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sidecar.authn.cache import CachedToken, TokenCache
from sidecar.authn.keys import KeySetError, jwks_ttl, parse_jwks
from sidecar.context import Identity
from tests.fixtures.tokens import SigningKeyPair

ALL = ("RS256", "PS256", "ES256", "ES384", "EdDSA")


def test_keys_are_indexed_by_kid_and_every_algorithm_that_fits(
        rsa_signing_key: SigningKeyPair, ec_signing_key: SigningKeyPair,
        ed25519_signing_key: SigningKeyPair) -> None:
    rsa_jwk = {k: v for k, v in rsa_signing_key.public_jwk.items() if k != "alg"}
    keys, skipped = parse_jwks({"keys": [rsa_jwk, ec_signing_key.public_jwk,
                                         ed25519_signing_key.public_jwk]}, ALL)
    assert skipped == []
    assert set(keys.keys) == {("rsa-1", "RS256"), ("rsa-1", "PS256"), ("ec-1", "ES256"),
                              ("ed-1", "EdDSA")}
    assert keys.find("ec-1", "ES256") is not None
    assert keys.find("ec-1", "ES384") is None
    assert keys.find(None, "ES256") is not None  # one ES256 key: no kid needed
    assert keys.find(None, "RS256") is not None
    assert keys.kids == {"rsa-1", "ec-1", "ed-1"}


def test_a_declared_alg_narrows_the_key(rsa_signing_key: SigningKeyPair) -> None:
    keys, _ = parse_jwks({"keys": [rsa_signing_key.public_jwk]}, ALL)
    assert set(keys.keys) == {("rsa-1", "RS256")}


def _rsa_jwk(bits: int, **extra: Any) -> dict[str, Any]:
    public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return {**RSAAlgorithm.to_jwk(public, as_dict=True), **extra}


@pytest.mark.parametrize(("jwk", "reason"), [
    ({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, "symmetric or private"),
    ({"kty": "RSA", "kid": "p", "n": "AQAB", "e": "AQAB", "d": "AQAB"}, "symmetric or private"),
    ({"kty": "EC", "crv": "P-521", "kid": "e", "x": "AA", "y": "AA"}, "no allowed algorithm"),
    ({"kty": "RSA", "kid": "r", "n": "!!", "e": "AQAB"}, "malformed"),
    ({"kty": "RSA", "kid": 5, "n": "AQAB", "e": "AQAB"}, "kid is not a string"),
    ("not an object", "not an object"),
], ids=["oct", "private-rsa", "unsupported-curve", "malformed", "numeric-kid", "string"])
def test_unusable_keys_are_skipped_with_a_reason(jwk: Any, reason: str,
                                                 ec_signing_key: SigningKeyPair) -> None:
    keys, skipped = parse_jwks({"keys": [jwk, ec_signing_key.public_jwk]}, ALL)
    assert len(keys) == 1 and len(skipped) == 1 and reason in skipped[0]


def test_short_rsa_keys_encryption_keys_and_disallowed_algorithms_are_skipped(
        ec_signing_key: SigningKeyPair) -> None:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    enc = {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": "enc", "use": "enc"}
    ops = {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": "ops", "key_ops": ["sign"]}
    _, skipped = parse_jwks({"keys": [_rsa_jwk(1024, kid="short"), enc, ops,
                                      ec_signing_key.public_jwk]}, ALL)
    assert [s.split(": ", 1)[1] for s in skipped] == [
        "RSA key shorter than 2048 bits", "not a signature key", "not a signature key"]
    with pytest.raises(KeySetError):
        parse_jwks({"keys": [ec_signing_key.public_jwk]}, ("RS256",))


@pytest.mark.parametrize("document", [None, [], {"keys": {}}, {"keys": []}, {"nokeys": []}])
def test_non_jwks_documents_are_refused(document: Any) -> None:
    with pytest.raises(KeySetError):
        parse_jwks(document, ALL)


@pytest.mark.parametrize(("header", "ttl"), [
    (None, 300), ("max-age=600", 600), ("public, max-age=3600, must-revalidate", 3600),
    ("max-age=5", 30), ("max-age=999999", 86400), ("no-cache", 30), ("no-store", 30),
    ("s-maxage=600", 300), ("max-age=\"120\"", 120), ("garbage", 300),
])
def test_jwks_freshness_is_max_age_clamped(header: str | None, ttl: float) -> None:
    assert jwks_ttl(header, min_refresh=30) == ttl


def _identity() -> Identity:
    return Identity("c", "c", "iss", frozenset(), frozenset(), {}, 0.0)


def test_the_cache_expires_entries_at_exp_and_evicts_least_recently_used() -> None:
    cache = TokenCache(max_entries=2)
    cache.put(b"a", CachedToken(_identity(), 100.0, "i", "k1"), now=0)
    cache.put(b"b", CachedToken(_identity(), 100.0, "i", "k2"), now=0)
    assert cache.get(b"a", now=1) is not None  # a is now most recent
    cache.put(b"c", CachedToken(_identity(), 100.0, "i", "k1"), now=1)
    assert cache.get(b"b", now=1) is None
    assert cache.get(b"a", now=99.9) is not None
    assert cache.get(b"a", now=100) is None
    cache.put(b"d", CachedToken(_identity(), 5.0, "i"), now=10)  # already expired: not stored
    assert cache.get(b"d", now=0) is None
    assert cache.evict_keys("i", frozenset({"k2"})) == 1
    assert len(cache) == 0
