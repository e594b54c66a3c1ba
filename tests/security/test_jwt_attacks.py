"""The JWT attack corpus, run against ``JWTAuthenticator`` with keys from a real loopback JWKS.

Each test names the attack it regresses (RFC 8725 sections, CVE classes). Tokens are signed
with real keys; hand-built tokens are assembled byte by byte where pyjwt refuses to make them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwk as jose_jwk
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from jwt.algorithms import get_default_algorithms

from sidecar.authn import DuplicateAuthorization, TokenExpired, TokenInvalid, TokenMissing
from sidecar.context import ClientCert
from sidecar.problem import SidecarError
from tests.fixtures.tokens import (
    AUDIENCE,
    ISSUER,
    AuthRig,
    JWKSServer,
    MakeAuthenticator,
    MakeToken,
    RecordingServer,
    SigningKeyPair,
    default_claims,
    jwt_issuer_config,
    new_key_pair,
    sign_token,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()),
                     b64(signature)))


def raw_signed(key: SigningKeyPair, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign any header (pyjwt's encoder refuses some we need) with the key's algorithm."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    algorithm = get_default_algorithms()[key.alg]
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key.private))}"


def bearer(token: str) -> list[str]:
    return [f"Bearer {token}"]


@pytest.fixture
async def rig(make_authenticator: MakeAuthenticator, jwks_server: JWKSServer) -> AuthRig:
    return await make_authenticator(
        [jwt_issuer_config(jwks_url=jwks_server.url, max_lifetime="1h", jwks_min_refresh="30s")])


async def rejected(rig: AuthRig, token: str, error: type[SidecarError] = TokenInvalid,
                   because: str = "") -> None:
    """Assert rejection; ``because`` must appear in the operator-facing log detail."""
    with pytest.raises(error) as caught:
        await rig.auth.authenticate(bearer(token), None)
    assert because in caught.value.log_detail


# --- the baseline: a valid token of each allowed algorithm passes ---------------------------

@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_a_valid_token_of_each_allowed_algorithm_is_accepted(
        rig: AuthRig, make_token: MakeToken, signing_keys: dict[str, SigningKeyPair],
        alg: str) -> None:
    identity = await rig.auth.authenticate(bearer(make_token(key=signing_keys[alg])), None)
    assert identity.client_id == "merchant-a"
    assert identity.scopes == {"payments:read", "payments:write"}


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_tokens_minted_by_an_independent_jose_implementation_validate(
        rig: AuthRig, signing_keys: dict[str, SigningKeyPair], alg: str) -> None:
    pair = signing_keys[alg]
    pem = pair.private.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    key: jose_jwk.Key
    if alg == "RS256":
        key = jose_jwk.import_key(pem, "RSA")
    elif alg == "ES256":
        key = jose_jwk.import_key(pem, "EC")
    else:
        key = jose_jwk.import_key(pem, "OKP")
    with warnings.catch_warnings():  # joserfc flags "EdDSA" as deprecated by RFC 9864
        warnings.simplefilter("ignore", SecurityWarning)
        token = jose_jwt.encode({"alg": alg, "kid": pair.kid}, default_claims(time.time()),
                                key, algorithms=[alg])
    identity = await rig.auth.authenticate(bearer(token), None)
    assert identity.issuer == ISSUER


# --- algorithm confusion (RFC 8725 §2.1, §3.1) -----------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "NoNe", ""])
async def test_alg_none_is_rejected_in_every_casing(rig: AuthRig, alg: str) -> None:
    claims = default_claims(time.time())
    await rejected(rig, hand_token({"alg": alg, "kid": "rsa-1"}, claims))
    await rejected(rig, hand_token({"alg": alg, "kid": "rsa-1"}, claims, b"x"),
                   because="alg not allowed")


async def test_alg_none_with_an_empty_signature_segment_is_rejected(rig: AuthRig) -> None:
    header = b64(json.dumps({"alg": "none"}).encode())
    payload = b64(json.dumps(default_claims(time.time())).encode())
    await rejected(rig, f"{header}.{payload}.")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_signed_with_the_rsa_public_key_pem_is_rejected(
        rig: AuthRig, rsa_signing_key: SigningKeyPair, alg: str) -> None:
    # CVE-2015-9235 class: the verifier must never use a public key as an HMAC secret.
    pem = rsa_signing_key.public.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": alg, "kid": rsa_signing_key.kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps(default_claims(time.time())).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(pem, f"{header}.{payload}".encode(), digest).digest()
    await rejected(rig, f"{header}.{payload}.{b64(mac)}", because="alg not allowed")


async def test_an_allowed_alg_not_matching_the_keys_type_is_rejected(
        rig: AuthRig, rsa_signing_key: SigningKeyPair, ec_signing_key: SigningKeyPair) -> None:
    # An ES256 token naming the RSA key's kid: the kid exists, but not for ES256.
    token = sign_token(ec_signing_key, default_claims(time.time()),
                       {"kid": rsa_signing_key.kid})
    await rejected(rig, token, because="no key for kid and alg")


async def test_an_algorithm_outside_the_issuers_allowlist_is_rejected(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken, ec_signing_key: SigningKeyPair) -> None:
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url,
                                                      algorithms=["RS256"])])
    await rejected(rig, make_token(key=ec_signing_key))
    await rig.auth.authenticate(bearer(make_token()), None)


async def test_ps256_with_the_rs256_key_is_rejected_unless_allowed(
        rig: AuthRig, rsa_signing_key: SigningKeyPair) -> None:
    # The JWK declares alg RS256; a PS256 signature by the same key must not find it.
    token = sign_token(SigningKeyPair(rsa_signing_key.kid, "PS256", rsa_signing_key.private,
                                      rsa_signing_key.public_jwk),
                       default_claims(time.time()))
    await rejected(rig, token)


# --- signatures and keys ----------------------------------------------------------------------

async def test_a_token_signed_by_an_unknown_key_with_a_known_kid_is_rejected(
        rig: AuthRig) -> None:
    impostor = new_key_pair("RS256", "rsa-1")
    await rejected(rig, sign_token(impostor, default_claims(time.time())),
                   because="signature verification failed")


async def test_a_token_with_a_tampered_payload_is_rejected(
        rig: AuthRig, make_token: MakeToken) -> None:
    header, _, signature = make_token().split(".")
    forged = b64(json.dumps(default_claims(time.time(), scope="payments:admin")).encode())
    await rejected(rig, f"{header}.{forged}.{signature}", because="signature")


@pytest.mark.parametrize("kid", [
    "../../../../etc/passwd", "/dev/zero", "rsa-1' OR '1'='1", "rsa-1\"; DROP TABLE keys;--",
    "rsa-1\x00", "rsa-1\r\nX-Injected: 1", "${jndi:ldap://127.0.0.1/a}", "*", "",
    "RSA-1", " rsa-1", "k" * 5000,
], ids=lambda k: repr(k[:30]))
async def test_kid_injection_strings_find_no_key(rig: AuthRig, make_token: MakeToken,
                                                  kid: str) -> None:
    await rejected(rig, make_token(headers={"kid": kid}))


@pytest.mark.parametrize("kid", [1, ["rsa-1"], {"kid": "rsa-1"}, True])
async def test_a_non_string_kid_is_rejected(rig: AuthRig, rsa_signing_key: SigningKeyPair,
                                            kid: Any) -> None:
    header = {"alg": "RS256", "kid": kid}
    await rejected(rig, raw_signed(rsa_signing_key, header, default_claims(time.time())))
    # the same construction with a proper kid is accepted, so the kid is what failed
    header["kid"] = rsa_signing_key.kid
    token = raw_signed(rsa_signing_key, header, default_claims(time.time()))
    await rig.auth.authenticate(bearer(token), None)


@pytest.mark.parametrize("header", ["jku", "x5u"])
async def test_url_key_headers_are_never_fetched(
        rig: AuthRig, attacker_server: RecordingServer, attacker_key: SigningKeyPair,
        header: str) -> None:
    for kid in ("attacker", "rsa-1"):
        token = sign_token(attacker_key, default_claims(time.time()),
                           {"kid": kid, header: attacker_server.base_url + "/jwks.json"})
        await rejected(rig, token)
    assert attacker_server.requests == []


async def test_an_embedded_jwk_header_is_not_trusted(
        rig: AuthRig, attacker_key: SigningKeyPair, attacker_server: RecordingServer) -> None:
    for kid in ("attacker", "rsa-1", None):
        token = sign_token(attacker_key, default_claims(time.time()),
                           {"kid": kid, "jwk": attacker_key.public_jwk})
        await rejected(rig, token)
    assert attacker_server.requests == []


async def test_an_x5c_header_is_not_trusted(
        rig: AuthRig, attacker_key: SigningKeyPair, attacker_server: RecordingServer) -> None:
    der = attacker_key.public.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    token = sign_token(attacker_key, default_claims(time.time()),
                       {"x5c": [base64.b64encode(der).decode()],
                        "x5u": attacker_server.base_url + "/cert.pem"})
    await rejected(rig, token)
    assert attacker_server.requests == []


async def test_url_headers_on_an_otherwise_valid_token_are_ignored(
        rig: AuthRig, make_token: MakeToken, attacker_server: RecordingServer) -> None:
    url = attacker_server.base_url + "/jwks.json"
    token = make_token(headers={"jku": url, "x5u": url})
    assert (await rig.auth.authenticate(bearer(token), None)).client_id == "merchant-a"
    assert attacker_server.requests == []


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["urn:example:unknown"], [], "exp"])
async def test_a_crit_header_is_rejected(rig: AuthRig, make_token: MakeToken, crit: Any) -> None:
    await rejected(rig, make_token(headers={"crit": crit, "exp": 1}), because="crit")


# --- claims -------------------------------------------------------------------------------------

async def test_an_expired_token_is_rejected_as_expired(rig: AuthRig, make_token: MakeToken
                                                       ) -> None:
    now = time.time()
    token = make_token(iat=int(now) - 400, exp=int(now) - 31)
    with pytest.raises(TokenExpired) as caught:
        await rig.auth.authenticate(bearer(token), None)
    assert 'error="invalid_token"' in caught.value.headers["WWW-Authenticate"]


async def test_an_expiry_within_leeway_is_accepted(rig: AuthRig, make_token: MakeToken) -> None:
    now = time.time()
    await rig.auth.authenticate(bearer(make_token(iat=int(now) - 100, exp=int(now) - 20)), None)


# Claims are built when the test runs, not at collection: a suite that takes minutes would
# otherwise turn "in the future" into "in the past".
BAD_CLAIMS: dict[str, Callable[[int], dict[str, Any]]] = {
    "nbf-in-future": lambda now: {"nbf": now + 120},
    "iat-in-future": lambda now: {"iat": now + 120, "exp": now + 400},
    "exp-missing": lambda now: {"exp": None},
    "exp-string": lambda now: {"exp": "9999999999"},
    "exp-bool": lambda now: {"exp": True},
    "wrong-iss": lambda now: {"iss": "https://evil.example/"},
    "iss-not-exact": lambda now: {"iss": ISSUER.rstrip("/")},
    "iss-missing": lambda now: {"iss": None},
    "wrong-aud": lambda now: {"aud": "other-api"},
    "wrong-aud-list": lambda now: {"aud": ["other-api", "x"]},
    "aud-missing": lambda now: {"aud": None},
    "aud-nested": lambda now: {"aud": [[AUDIENCE]]},
    "lifetime-over-max": lambda now: {"iat": now, "exp": now + 3601},
    "iat-missing-with-max-lifetime": lambda now: {"iat": None},
    "no-client-id": lambda now: {"client_id": None, "azp": None, "sub": None},
    "scope-wrong-type": lambda now: {"scope": 12},
}


@pytest.mark.parametrize("case", list(BAD_CLAIMS))
async def test_bad_registered_claims_are_rejected(rig: AuthRig, make_token: MakeToken,
                                                  case: str) -> None:
    await rejected(rig, make_token(**BAD_CLAIMS[case](int(time.time()))))


async def test_an_audience_list_containing_ours_is_accepted(rig: AuthRig, make_token: MakeToken
                                                            ) -> None:
    await rig.auth.authenticate(bearer(make_token(aud=["other", AUDIENCE])), None)


# --- malformed input ----------------------------------------------------------------------------

@pytest.mark.parametrize("token", [
    "abc", "a.b", "a.b.c.d", "a.b.c.d.e", "..", "a..c", ".b.c",
    "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0", "!!!.???.***", "e30.e30.e30",
    "W10.e30.AA", "e30.W10.AA", "bnVsbA.e30.AA",
], ids=repr)
async def test_garbage_tokens_are_invalid(rig: AuthRig, token: str) -> None:
    await rejected(rig, token)


async def test_truncated_tokens_are_invalid(rig: AuthRig, make_token: MakeToken) -> None:
    token = make_token()
    for cut in (1, 2, 3, 10, len(token) // 2, len(token) - 1):
        await rejected(rig, token[:-cut])


async def test_non_canonical_base64_in_the_signature_is_invalid(
        rig: AuthRig, make_token: MakeToken) -> None:
    header, payload, signature = make_token().split(".")
    for bad in (signature + "=", signature + "A", signature.replace("-", "+"),
                signature[:-1] + chr(ord(signature[-1]) ^ 1)):
        await rejected(rig, f"{header}.{payload}.{bad}")


async def test_a_100_kib_token_is_refused_before_parsing(rig: AuthRig, jwks_server: JWKSServer
                                                         ) -> None:
    before = jwks_server.jwks_requests
    huge = hand_token({"alg": "RS256", "kid": "unknown"}, {"pad": "x" * 100 * 1024}, b"s")
    with pytest.raises(TokenInvalid) as caught:
        await rig.auth.authenticate(bearer(huge), None)
    assert "8 KiB" in caught.value.log_detail
    assert jwks_server.jwks_requests == before


async def test_duplicate_authorization_headers_are_a_bad_request(
        rig: AuthRig, make_token: MakeToken) -> None:
    token = make_token()
    with pytest.raises(DuplicateAuthorization) as caught:
        await rig.auth.authenticate([f"Bearer {token}", f"Bearer {token}"], None)
    assert caught.value.status == 400
    assert caught.value.code == "duplicate_authorization"


@pytest.mark.parametrize("value", ["", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
async def test_no_bearer_token_is_token_missing_with_a_bare_challenge(
        rig: AuthRig, value: str) -> None:
    with pytest.raises(TokenMissing) as caught:
        await rig.auth.authenticate([value] if value else [], None)
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="sidecar"'


async def test_a_folded_pair_of_bearer_tokens_is_invalid(rig: AuthRig, make_token: MakeToken
                                                         ) -> None:
    token = make_token()
    await rejected(rig, f"{token}, Bearer {token}")


async def test_the_scheme_is_case_insensitive(rig: AuthRig, make_token: MakeToken) -> None:
    await rig.auth.authenticate([f"bEARER {make_token()}"], None)


# --- certificate-bound tokens (RFC 8705) ------------------------------------------------------

async def test_a_certificate_bound_token_needs_that_certificate(
        rig: AuthRig, make_token: MakeToken) -> None:
    thumb = b64(hashlib.sha256(b"client certificate").digest())
    token = make_token(cnf={"x5t#S256": thumb})
    right = ClientCert("CN=merchant-a", (), thumb)
    wrong = ClientCert("CN=merchant-b", (), b64(hashlib.sha256(b"other").digest()))
    identity = await rig.auth.authenticate(bearer(token), right)
    assert identity.cnf_x5t_s256 == thumb
    for cert in (None, wrong):  # also after the token is in the cache
        with pytest.raises(TokenInvalid):
            await rig.auth.authenticate(bearer(token), cert)
