"""The six RFC 9421 algorithms over real ``cryptography`` keys, and key loading."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sidecar.signatures import algorithms
from sidecar.signatures.algorithms import KeyLoadError, load_public_jwk, load_signing_key
from tests.fixtures.sigkeys import RFC_ECC_P256_JWK, RFC_ECC_P256_PUBLIC, SigKeys

BASE = b'"@method": POST\n"@signature-params": ("@method");created=1'

ASYMMETRIC = ["ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512",
              "rsa-v1_5-sha256"]


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_sign_then_verify_round_trip(alg: str, sigkeys: SigKeys) -> None:
    key, inferred = load_signing_key(str(sigkeys.make(f"alg-{alg}", alg).private_pem), alg)
    signature = algorithms.sign(alg, key, BASE)
    public = algorithms.public_of(key)
    assert algorithms.verify(alg, public, signature, BASE)
    assert not algorithms.verify(alg, public, signature, BASE + b" ")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not algorithms.verify(alg, public, flipped, BASE)
    assert inferred == alg


def test_hmac_round_trip_and_constant_time_compare() -> None:
    secret = b"k" * 32
    signature = algorithms.sign("hmac-sha256", secret, BASE)
    assert len(signature) == 32
    assert algorithms.verify("hmac-sha256", secret, signature, BASE)
    assert not algorithms.verify("hmac-sha256", secret, signature[:-1], BASE)
    assert not algorithms.verify("hmac-sha256", b"j" * 32, signature, BASE)


@pytest.mark.parametrize(("alg", "size"), [("ecdsa-p256-sha256", 32),
                                           ("ecdsa-p384-sha384", 48)])
def test_ecdsa_signatures_are_raw_r_and_s(alg: str, size: int, sigkeys: SigKeys) -> None:
    key, _ = load_signing_key(str(sigkeys.make(f"alg-{alg}", alg).private_pem), alg)
    signature = algorithms.sign(alg, key, BASE)
    assert len(signature) == 2 * size
    public = algorithms.public_of(key)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    # A DER signature (what a naive implementation would send) is not accepted.
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = key.sign(BASE, ec.ECDSA(algorithms._EC[alg][1]()))
    r, s = decode_dss_signature(der)
    assert algorithms.verify(alg, public, r.to_bytes(size, "big") + s.to_bytes(size, "big"), BASE)
    assert not algorithms.verify(alg, public, der, BASE)
    assert not algorithms.verify(alg, public, signature + b"\x00", BASE)


def test_a_key_of_another_type_never_verifies(sigkeys: SigKeys) -> None:
    ed, _ = load_signing_key(str(sigkeys.make("alg-ed25519", "ed25519").private_pem))
    signature = algorithms.sign("ed25519", ed, BASE)
    public = algorithms.public_of(ed)
    for alg in ("ecdsa-p256-sha256", "rsa-pss-sha512", "rsa-v1_5-sha256", "hmac-sha256"):
        assert not algorithms.verify(alg, public, signature, BASE)


def test_rsa_pss_and_v1_5_are_not_interchangeable(sigkeys: SigKeys) -> None:
    key, _ = load_signing_key(str(sigkeys.make("alg-rsa", "rsa-pss-sha512").private_pem))
    assert isinstance(key, rsa.RSAPrivateKey)
    public = key.public_key()
    pss = algorithms.sign("rsa-pss-sha512", key, BASE)
    v15 = algorithms.sign("rsa-v1_5-sha256", key, BASE)
    assert not algorithms.verify("rsa-v1_5-sha256", public, pss, BASE)
    assert not algorithms.verify("rsa-pss-sha512", public, v15, BASE)


def test_signing_refuses_a_key_that_does_not_fit(sigkeys: SigKeys) -> None:
    ed, _ = load_signing_key(str(sigkeys.make("alg-ed25519", "ed25519").private_pem))
    with pytest.raises(KeyLoadError, match="needs an EC key"):
        algorithms.sign("ecdsa-p256-sha256", ed, BASE)
    with pytest.raises(KeyLoadError):
        algorithms.sign("hmac-sha256", b"short", BASE)


def test_load_signing_key_infers_and_checks(sigkeys: SigKeys, tmp_path: Path) -> None:
    hmac_file = sigkeys.hmac_file()
    key, alg = load_signing_key(str(hmac_file))
    assert (alg, key) == ("hmac-sha256", base64.b64decode(sigkeys.hmac_secret_b64))
    rsa_file = str(sigkeys.make("alg-rsa", "rsa-pss-sha512").private_pem)
    assert load_signing_key(rsa_file)[1] == "rsa-pss-sha512"
    assert load_signing_key(rsa_file, "rsa-v1_5-sha256")[1] == "rsa-v1_5-sha256"
    with pytest.raises(KeyLoadError, match="does not fit alg ed25519"):
        load_signing_key(rsa_file, "ed25519")
    with pytest.raises(KeyLoadError, match="cannot read"):
        load_signing_key(str(tmp_path / "nope.pem"))
    (tmp_path / "pub.pem").write_bytes(RFC_ECC_P256_PUBLIC)
    with pytest.raises(KeyLoadError, match="not an unencrypted PEM private key"):
        load_signing_key(str(tmp_path / "pub.pem"))
    (tmp_path / "junk").write_text("!!!")
    with pytest.raises(KeyLoadError, match="base64"):
        load_signing_key(str(tmp_path / "junk"))


def test_jwk_loading(sigkeys: SigKeys) -> None:
    key = load_public_jwk(RFC_ECC_P256_JWK, "ecdsa-p256-sha256")
    assert isinstance(key, ec.EllipticCurvePublicKey)
    with pytest.raises(KeyLoadError, match="invalid jwk"):
        load_public_jwk({**RFC_ECC_P256_JWK, "y": RFC_ECC_P256_JWK["x"]}, "ecdsa-p256-sha256")
    with pytest.raises(KeyLoadError, match="does not fit"):
        load_public_jwk(RFC_ECC_P256_JWK, "ecdsa-p384-sha384")
    rsa_key, _ = load_signing_key(str(sigkeys.make("alg-rsa", "rsa-pss-sha512").private_pem))
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    numbers = rsa_key.public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(
            b"=").decode()

    loaded = load_public_jwk({"kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e)},
                             "rsa-pss-sha512")
    assert isinstance(loaded, rsa.RSAPublicKey)
    assert loaded.public_numbers() == numbers
    with pytest.raises(KeyLoadError, match="unsupported jwk"):
        load_public_jwk({"kty": "oct", "k": "AAAA"}, "hmac-sha256")


@pytest.mark.parametrize("alg", [*ASYMMETRIC, "hmac-sha256"])
def test_a_key_specialised_verifier_answers_as_verify(alg: str, sigkeys: SigKeys) -> None:
    """``verifier(alg, key)`` (compiled once per configured key) accepts and refuses exactly
    what ``verify(alg, key, ...)`` does."""
    if alg == "hmac-sha256":
        key: algorithms.SignKey = b"k" * 32
    else:
        key, _ = load_signing_key(str(sigkeys.make(f"alg-{alg}", alg).private_pem), alg)
    public = algorithms.public_of(key)
    check = algorithms.verifier(alg, public)
    signature = algorithms.sign(alg, key, BASE)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    for candidate, base in [(signature, BASE), (signature, BASE + b" "), (flipped, BASE),
                            (signature[:-1], BASE), (b"", BASE)]:
        assert check(candidate, base) is algorithms.verify(alg, public, candidate, base)
    assert check(signature, BASE)
    assert not check(flipped, BASE)


def test_a_key_specialised_verifier_of_a_misfit_key_never_verifies(sigkeys: SigKeys) -> None:
    ed, _ = load_signing_key(str(sigkeys.make("alg-ed25519", "ed25519").private_pem))
    ed_public = algorithms.public_of(ed)
    ed_signature = algorithms.sign("ed25519", ed, BASE)
    secret = b"k" * 32
    mac = algorithms.sign("hmac-sha256", secret, BASE)
    assert not algorithms.verifier("hmac-sha256", ed_public)(ed_signature, BASE)
    assert not algorithms.verifier("ecdsa-p256-sha256", ed_public)(ed_signature, BASE)
    assert not algorithms.verifier("ed25519", secret)(mac, BASE)
    assert not algorithms.verifier("rsa-pss-sha512", secret)(mac, BASE)
