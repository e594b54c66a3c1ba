"""Bearer-token attacks sent through the running proxy: each is 401 (or 400) as
problem+json with an RFC 6750 challenge, and the backend receives nothing.

The corpus is the same family as tests/security/test_jwt_attacks.py (which probes the
validator directly with finer assertions); here the point is the wire: status, headers,
body, and that no denied request is forwarded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from tests.fixtures.proxy import Backend, StartSidecar, base_config
from tests.fixtures.tokens import (
    JWKSServer,
    RecordingServer,
    SigningKeyPair,
    default_claims,
    jwt_issuer_config,
    sign_token,
)

RBAC = {"rules": [
    {"name": "health", "path": "/v1/health", "methods": ["GET"], "public": True},
    {"name": "read", "path": "/v1/merchants/{merchant_id}/payments/{payment_id}",
     "methods": ["GET"], "require": {"all_scopes": ["payments:read"],
                                     "claims": {"merchant_id": "{merchant_id}"}}},
]}
TARGET = "/v1/merchants/m-1/payments/p-1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()),
                     _b64(signature)))


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = default_claims(time.time(), merchant_id="m-1")
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


TokenCase = Callable[[SigningKeyPair, RecordingServer], str]
# For jku/x5u the token is signed by the attacker's key, served by the attacker's server.
_attacker_key: list[SigningKeyPair] = []


def _hs256_with_public_pem(key: SigningKeyPair, _: RecordingServer) -> str:
    pem = key.public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


ATTACKS: dict[str, TokenCase] = {
    "alg none": lambda k, a: _hand({"alg": "none", "kid": k.kid}, _claims()),
    "alg nOnE": lambda k, a: _hand({"alg": "nOnE", "kid": k.kid}, _claims()),
    "HS256 signed with the RSA public key": _hs256_with_public_pem,
    "expired": lambda k, a: sign_token(k, _claims(exp=int(time.time()) - 3600,
                                                  iat=int(time.time()) - 4000)),
    "not yet valid": lambda k, a: sign_token(k, _claims(nbf=int(time.time()) + 3600)),
    "issued in the future": lambda k, a: sign_token(k, _claims(iat=int(time.time()) + 3600)),
    "no exp": lambda k, a: sign_token(k, _claims(exp=None)),
    "wrong iss": lambda k, a: sign_token(k, _claims(iss="https://evil.example/")),
    "wrong aud": lambda k, a: sign_token(k, _claims(aud="other-api")),
    "lifetime over max": lambda k, a: sign_token(k, _claims(exp=int(time.time()) + 86400)),
    "unknown crit": lambda k, a: sign_token(k, _claims(), {"crit": ["urn:x"], "urn:x": 1}),
    "kid path traversal": lambda k, a: sign_token(k, _claims(), {"kid": "../../etc/passwd"}),
    "kid injection": lambda k, a: sign_token(k, _claims(), {"kid": "' OR '1'='1"}),
    "jku to attacker": lambda k, a: sign_token(
        _attacker_key[0], _claims(), {"jku": a.base_url + "/jwks", "kid": k.kid}),
    "x5u to attacker": lambda k, a: sign_token(
        _attacker_key[0], _claims(), {"x5u": a.base_url + "/x5u", "kid": k.kid}),
    "embedded jwk": lambda k, a: sign_token(
        _attacker_key[0], _claims(), {"jwk": _attacker_key[0].public_jwk, "kid": None}),
    "garbage base64": lambda k, a: "!!!.@@@.###",
    "truncated": lambda k, a: sign_token(k, _claims())[:-20],
    "10 KiB (over the 8 KiB token cap, under the header limit)": lambda k, a: "a" * 10240,
}


@pytest.fixture
async def protected(backend: Backend, start_sidecar: StartSidecar,
                    jwks_server: JWKSServer) -> str:
    config = base_config(backend.url, rbac=RBAC, auth={"issuers": [
        jwt_issuer_config(jwks_url=jwks_server.url, max_lifetime="1h")]})
    return (await start_sidecar(config)).url


async def _call(url: str, headers: dict[str, str] | list[tuple[str, str]] | None = None
                ) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, {k.title(): v for k, v in r.headers.items()}, json.loads(await r.read())


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_an_attack_token_is_401_and_never_reaches_the_backend(
    attack: str, protected: str, backend: Backend, rsa_signing_key: SigningKeyPair,
    attacker_server: RecordingServer, attacker_key: SigningKeyPair,
) -> None:
    _attacker_key[:] = [attacker_key]
    token = ATTACKS[attack](rsa_signing_key, attacker_server)
    status, headers, body = await _call(protected + TARGET, {"Authorization": f"Bearer {token}"})
    assert status == 401
    assert body["code"] in ("token_invalid", "token_expired")
    assert headers["Www-Authenticate"].startswith('Bearer realm="sidecar", error="invalid_token"')
    assert headers["Content-Type"] == "application/problem+json"
    assert token[:40] not in json.dumps(body)
    assert backend.requests == []
    assert attacker_server.requests == []


async def test_a_100_kib_token_is_refused_before_any_parsing(
    protected: str, backend: Backend
) -> None:
    # Past max_header_bytes: the HTTP parser itself refuses the head (SPEC: a plain 400
    # is allowed there), before the sidecar reads a byte of the token.
    async with aiohttp.ClientSession() as s, s.get(
        protected + TARGET, headers={"Authorization": "Bearer " + "a" * 100 * 1024}) as r:
        assert r.status in (400, 431)
    assert backend.requests == []


async def test_a_token_only_in_the_query_is_token_missing(
    protected: str, backend: Backend, rsa_signing_key: SigningKeyPair
) -> None:
    token = sign_token(rsa_signing_key, _claims())
    status, headers, body = await _call(protected + TARGET + "?access_token=" + token)
    assert status == 401 and body["code"] == "token_missing"
    assert headers["Www-Authenticate"] == 'Bearer realm="sidecar"'
    assert backend.requests == []


async def test_two_authorization_headers_are_400(
    protected: str, backend: Backend, rsa_signing_key: SigningKeyPair
) -> None:
    token = sign_token(rsa_signing_key, _claims())
    status, _, body = await _call(protected + TARGET, [
        ("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")])
    assert status == 400 and body["code"] == "duplicate_authorization"
    assert backend.requests == []


async def test_a_valid_token_passes_with_identity_headers_and_no_authorization(
    protected: str, backend: Backend, rsa_signing_key: SigningKeyPair
) -> None:
    token = sign_token(rsa_signing_key, _claims())
    async with aiohttp.ClientSession() as s, s.get(
        protected + TARGET, headers={"Authorization": f"Bearer {token}",
                                     "X-Auth-Client-Id": "spoofed"}) as r:
        assert r.status == 200
    seen = backend.requests[-1]
    assert seen.header("x-auth-client-id") == "merchant-a"
    assert seen.header("x-auth-scopes") == "payments:read payments:write"
    assert "authorization" not in seen.headers


async def test_the_bola_case_is_403_and_never_reaches_the_backend(
    protected: str, backend: Backend, rsa_signing_key: SigningKeyPair
) -> None:
    token = sign_token(rsa_signing_key, _claims(merchant_id="m-1"))
    status, _, body = await _call(protected + "/v1/merchants/m-2/payments/p-9",
                                  {"Authorization": f"Bearer {token}"})
    assert status == 403 and body["code"] == "forbidden"
    assert backend.requests == []


async def test_insufficient_scope_carries_the_rfc6750_challenge(
    protected: str, backend: Backend, rsa_signing_key: SigningKeyPair
) -> None:
    token = sign_token(rsa_signing_key, _claims(scope="payments:write"))
    status, headers, body = await _call(protected + TARGET, {"Authorization": f"Bearer {token}"})
    assert status == 403 and body["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in headers["Www-Authenticate"]
    assert 'scope="payments:read"' in headers["Www-Authenticate"]
    assert backend.requests == []


async def test_a_public_route_needs_no_token(protected: str, backend: Backend) -> None:
    status, _, _ = await _call(protected + "/v1/health")
    assert status == 200 and len(backend.requests) == 1


async def test_x_auth_roles_carries_the_effective_roles(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer,
    rsa_signing_key: SigningKeyPair,
) -> None:
    config = base_config(
        backend.url,
        rbac={"roles": {"merchant": ["payments:read"]}, "clients": {"merchant-a": ["merchant"]},
              "rules": [{"name": "any", "path": "/v1/**", "methods": ["GET"]}]},
        auth={"issuers": [jwt_issuer_config(jwks_url=jwks_server.url)],
              "forward": {"headers": {"X-Auth-Client-Id": "client_id",
                                      "X-Auth-Roles": "roles"}}})
    sidecar = await start_sidecar(config)
    token = sign_token(rsa_signing_key, _claims(roles=["auditor"]))
    status, _, _ = await _call(sidecar.url + "/v1/x", {"Authorization": f"Bearer {token}"})
    assert status == 200
    roles = backend.requests[-1].header("x-auth-roles") or ""
    assert sorted(roles.split()) == ["auditor", "merchant"]
