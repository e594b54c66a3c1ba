"""RFC 9421 Appendix B.2 test vectors, with the Appendix B.1 keys.

Every vector is checked by this project's signature base builder and verifier with time
frozen through the injected clock at the vectors' ``created`` (1618884473), so ``max_age``
does not reject 2021 timestamps. The rsa-pss-sha512 (B.2.1-B.2.3) and ecdsa (B.2.4)
signatures are randomized: only verified. ed25519 (B.2.6) and hmac-sha256 (B.2.5) are
deterministic: our signer must also reproduce the RFC's exact bytes.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sidecar.config.signatures import SignaturesConfig
from sidecar.metrics import Metrics
from sidecar.signatures.base import RequestView, ResponseView, build_signature_base
from sidecar.signatures.errors import SignatureExpired, SignatureInvalid
from sidecar.signatures.fields import parse_signatures
from sidecar.signatures.keys import VerificationKey, load_keyring
from sidecar.signatures.nonces import MemoryNonceStore
from sidecar.signatures.signer import create_signature
from sidecar.signatures.verifier import SignatureStage, check_signature, check_times
from tests.fixtures import sigkeys as rfc
from tests.fixtures.sigkeys import EventLog, FrozenClock

CREATED = 1618884473
BODY = b'{"hello": "world"}'
RFC_CONTENT_DIGEST = ("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7"
                      "BNNyealdVLvRwEmTHWXvJwew==:")

# test-request (Appendix B.2), as received over HTTPS.
TEST_REQUEST = RequestView.from_url(
    "POST", "https://example.com/foo?param=Value&Pet=dog", [
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        ("Content-Digest", RFC_CONTENT_DIGEST),
        ("Content-Length", "18"),
    ])

# test-response (Appendix B.2).
TEST_RESPONSE = ResponseView(200, (
    ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
    ("content-type", "application/json"),
    ("content-digest", "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWd"
                       "XymyU0rjJuahq4l5aGgfLQ==:"),
    ("content-length", "23"),
), TEST_REQUEST)

B21 = ('sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"',
       "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7i"
       "t++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdC"
       "bzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuV"
       "G5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98X"
       "w9Q==:")
B22 = ('sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473'
       ';keyid="test-key-rsa-pss";tag="header-example"',
       "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQEdJzgI9qHxICagShLRiLMlAJjtq6N4C"
       "DfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw"
       "1rLEuEfY17SARYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd4je2U/lank"
       "enQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoKUqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjH"
       "Sw==:")
B23 = ('sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" '
       '"content-length");created=1618884473;keyid="test-key-rsa-pss"',
       "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFk"
       "eGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7"
       "KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9Bmzhu"
       "zF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cU"
       "A==:")
B24 = ('sig-b24=("@status" "content-type" "content-digest" "content-length")'
       ';created=1618884473;keyid="test-key-ecc-p256"',
       "sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj"
       "+32oiasw==:")
B25 = ('sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
       "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:")
B26 = ('sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
       ';created=1618884473;keyid="test-key-ed25519"',
       "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5"
       "WPpBKRCw==:")

B22_BASE = (
    '"@authority": example.com\n'
    f'"content-digest": {RFC_CONTENT_DIGEST}\n'
    '"@query-param";name="Pet": dog\n'
    '"@signature-params": ("@authority" "content-digest" "@query-param";name="Pet")'
    ';created=1618884473;keyid="test-key-rsa-pss";tag="header-example"')


@pytest.fixture(scope="module")
def rfc_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VerificationKey]:
    """The B.1 keys registered through config (PEM file, JWK and secret sources)."""
    directory = tmp_path_factory.mktemp("rfc-keys")
    (directory / "rsa-pss.pub.pem").write_bytes(rfc.RFC_RSA_PSS_PUBLIC)
    cfg = SignaturesConfig.model_validate({
        "algorithms": ["rsa-pss-sha512", "ecdsa-p256-sha256", "ed25519", "hmac-sha256"],
        "covered": ["@method", "@authority", "@path"],
        "require_nonce": False,
        "keys": [
            {"keyid": "test-key-rsa-pss", "client_id": "rfc", "alg": "rsa-pss-sha512",
             "public_key_file": str(directory / "rsa-pss.pub.pem")},
            {"keyid": "test-key-ecc-p256", "client_id": "rfc", "alg": "ecdsa-p256-sha256",
             "jwk": rfc.RFC_ECC_P256_JWK},
            {"keyid": "test-key-ed25519", "client_id": "rfc", "alg": "ed25519",
             "jwk": rfc.RFC_ED25519_JWK},
            {"keyid": "test-shared-secret", "client_id": "rfc", "alg": "hmac-sha256",
             "secret": rfc.RFC_SHARED_SECRET_B64},
        ],
    })
    return dict(load_keyring(cfg))


def _verify(message: RequestView | ResponseView, vector: tuple[str, str],
            keys: dict[str, VerificationKey]) -> None:
    [(sig_input, signature)] = parse_signatures([vector[0]], [vector[1]])
    check_times(sig_input, now=CREATED + 1, max_age=300, clock_skew=30)
    assert sig_input.keyid is not None
    check_signature(message, sig_input, signature, keys[sig_input.keyid])


@pytest.mark.parametrize(("message", "vector"), [
    pytest.param(TEST_REQUEST, B21, id="B.2.1 minimal rsa-pss-sha512"),
    pytest.param(TEST_REQUEST, B22, id="B.2.2 selective components rsa-pss-sha512"),
    pytest.param(TEST_REQUEST, B23, id="B.2.3 full coverage rsa-pss-sha512"),
    pytest.param(TEST_RESPONSE, B24, id="B.2.4 response ecdsa-p256-sha256"),
    pytest.param(TEST_REQUEST, B25, id="B.2.5 hmac-sha256"),
    pytest.param(TEST_REQUEST, B26, id="B.2.6 ed25519"),
])
def test_rfc9421_b2_vector_verifies(message: RequestView | ResponseView,
                                    vector: tuple[str, str],
                                    rfc_keys: dict[str, VerificationKey]) -> None:
    """Base builder + verifier accept the RFC's signature (clock frozen at ``created``)."""
    _verify(message, vector, rfc_keys)


@pytest.mark.parametrize("vector", [B21, B22, B23, B25, B26], ids=["b21", "b22", "b23", "b25",
                                                                   "b26"])
def test_rfc9421_b2_vector_fails_on_another_message(vector: tuple[str, str],
                                                    rfc_keys: dict[str, VerificationKey]) -> None:
    """The same signatures over a changed message (another authority/date/path) fail."""
    changed = RequestView.from_url("POST", "https://example.org/foo?param=Value&Pet=cat", [
        (n, v.replace("02:07:55", "02:07:56")) for n, v in TEST_REQUEST.headers])
    if vector is B21:  # covers nothing: the nonce is what binds it; tamper with params
        vector = (vector[0].replace("created=1618884473", "created=1618884474"), vector[1])
    with pytest.raises(SignatureInvalid):
        _verify(changed, vector, rfc_keys)


def test_rfc9421_b22_signature_base_is_byte_exact() -> None:
    [(sig_input, _)] = parse_signatures([B22[0]], [B22[1]])
    assert build_signature_base(TEST_REQUEST, sig_input.components,
                                sig_input.signature_params()) == B22_BASE.encode()


def test_rfc9421_b26_ed25519_is_reproduced_byte_for_byte() -> None:
    """ed25519 is deterministic: our signer yields the RFC's Signature-Input and Signature."""
    private = serialization.load_pem_private_key(rfc.RFC_ED25519_PRIVATE, password=None)
    [(sig_input, _)] = parse_signatures([B26[0]], [B26[1]])
    headers = create_signature(TEST_REQUEST, sig_input.components, key=private,  # type: ignore[arg-type]
                               alg="ed25519", keyid="test-key-ed25519", created=CREATED,
                               label="sig-b26", include_alg=False)
    assert headers == {"Signature-Input": B26[0], "Signature": B26[1]}


def test_rfc9421_b25_hmac_is_reproduced_byte_for_byte() -> None:
    secret = base64.b64decode(rfc.RFC_SHARED_SECRET_B64)
    [(sig_input, _)] = parse_signatures([B25[0]], [B25[1]])
    headers = create_signature(TEST_REQUEST, sig_input.components, key=secret,
                               alg="hmac-sha256", keyid="test-shared-secret", created=CREATED,
                               label="sig-b25", include_alg=False)
    assert headers == {"Signature-Input": B25[0], "Signature": B25[1]}


def test_rfc9421_b24_our_ecdsa_signature_verifies_with_the_rfc_key(
        rfc_keys: dict[str, VerificationKey]) -> None:
    private = serialization.load_pem_private_key(rfc.RFC_ECC_P256_PRIVATE, password=None)
    [(sig_input, _)] = parse_signatures([B24[0]], [B24[1]])
    headers = create_signature(TEST_RESPONSE, sig_input.components, key=private,  # type: ignore[arg-type]
                               alg="ecdsa-p256-sha256", keyid="test-key-ecc-p256",
                               created=CREATED, label="sig-b24", include_alg=False)
    assert headers["Signature-Input"] == B24[0]
    _verify(TEST_RESPONSE, (headers["Signature-Input"], headers["Signature"]), rfc_keys)


# RFC 9421 §2.4: a response bound to its request's signature with "signature";req;key="sig1".
REQRES_SIG1 = (
    "sig1=:LAH8BjcfcOcLojiuOBFWn0P5keD3xAOuJRGziCLuD8r5MW9S0RoXXLzLSRfGY/3SF8kVIkHjE13SEFdTo4Af/"
    "fJ/Pu9wheqoLVdwXyY/UkBIS1M8Brc8IODsn5DFIrG0IrburbLi0uCc+E2ZIIb6HbUJ+o+jP58JelMTe0QE3IpWINT"
    "EzpxjqDf5/Df+InHCAkQCTuKsamjWXUpyOT1Wkxi7YPVNOjW4MfNuTZ9HdbD2Tr65+BXeTG9ZS/9SWuXAc+BZ8WyPz"
    "0QRz//ec3uWXd7bYYODSjRAxHqX+S1ag3LZElYyUKaAIjZ8MGOt4gXEwCSLDv/zqxZeWLj/PDkn6w==:")
REQRES_SIG1_INPUT = ('sig1=("@method" "@authority" "@path" "content-digest" "content-length" '
                     '"content-type");created=1618884475;keyid="test-key-rsa-pss"')
REQRES = ('reqres=("@status" "content-length" "content-type" "signature";req;key="sig1" '
          '"@authority";req "@method";req);created=1618884479;keyid="test-key-ecc-p256"',
          "reqres=:mh17P4TbYYBmBwsXPT4nsyVzW4Rp9Fb8WcvnfqKCQLoMvzOBLD/n32tL/GPW6XE5GAS5bdsg1khK6"
          "lBzV1Cx/Q==:")


def test_rfc9421_2_4_request_response_binding(rfc_keys: dict[str, VerificationKey]) -> None:
    """The §2.4 example response ``reqres`` (uses ``;req`` and ``;key`` on the request's
    Signature field) verifies with test-key-ecc-p256."""
    request = RequestView.from_url("POST", "https://example.com/foo?param=Value&Pet=dog", [
        *TEST_REQUEST.headers,
        ("Signature-Input", REQRES_SIG1_INPUT), ("Signature", REQRES_SIG1)])
    response = ResponseView(503, (
        ("date", "Tue, 20 Apr 2021 02:07:56 GMT"), ("content-type", "application/json"),
        ("content-length", "62")), request)
    [(reqres, reqres_bytes)] = parse_signatures([REQRES[0]], [REQRES[1]])
    check_signature(response, reqres, reqres_bytes, rfc_keys["test-key-ecc-p256"])


@pytest.mark.parametrize("vector", [B23, B26], ids=["B.2.3 rsa-pss-sha512", "B.2.6 ed25519"])
async def test_rfc9421_vector_through_the_stage(vector: tuple[str, str], tmp_path: Path) -> None:
    """The full stage (policy, coverage, digest check against the body) accepts B.2.3 and
    B.2.6 with its clock frozen just after ``created``; 301 s later both have expired."""
    (tmp_path / "rsa.pem").write_bytes(rfc.RFC_RSA_PSS_PUBLIC)
    cfg = SignaturesConfig.model_validate({
        "covered": ["@method", "@authority", "@path"], "require_nonce": False,
        "keys": [
            {"keyid": "test-key-rsa-pss", "client_id": "rfc", "alg": "rsa-pss-sha512",
             "public_key_file": str(tmp_path / "rsa.pem")},
            {"keyid": "test-key-ed25519", "client_id": "rfc", "alg": "ed25519",
             "jwk": rfc.RFC_ED25519_JWK}]})
    clock = FrozenClock(CREATED + 2)
    stage = SignatureStage(cfg, MemoryNonceStore(), Metrics(), EventLog(), clock)
    view = RequestView.from_url("POST", "https://example.com/foo?param=Value&Pet=dog", [
        *TEST_REQUEST.headers, ("signature-input", vector[0]), ("signature", vector[1])])
    [(sig_input, _)] = parse_signatures([vector[0]], [vector[1]])
    assert await stage.verify_message(view, BODY, "rfc") == sig_input.keyid
    clock.advance(300)
    with pytest.raises(SignatureExpired, match="created 302s ago"):
        await stage.verify_message(view, BODY, "rfc")


def test_rfc_vectors_are_rejected_by_the_real_clock() -> None:
    """Without freezing time, the 2021 vectors are far older than max_age."""
    [(sig_input, _)] = parse_signatures([B26[0]], [B26[1]])
    with pytest.raises(SignatureExpired, match="ago"):
        check_times(sig_input, now=time.time(), max_age=300, clock_skew=30)
