"""RFC 9421 signatures enforced by the running proxy: accepted when right, and each
failure denied before the backend, including a replay across two sidecar processes that
share Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from sidecar.client import sign_request
from tests.fixtures.proxy import Backend, SidecarProcess, StartSidecar, base_config
from tests.fixtures.sigkeys import SigKeys
from tests.fixtures.tokens import JWKSServer, SigningKeyPair, default_claims, jwt_issuer_config
from tests.fixtures.tokens import sign_token as jwt_sign

PATH = "/v1/payments/p-1/refunds"
BODY = json.dumps({"amount": 100, "reason": "duplicate"}).encode()


def _config(backend: Backend, jwks: JWKSServer, sigkeys: SigKeys, redis_url: str,
            **signatures: Any) -> dict[str, Any]:
    return base_config(
        backend.url,
        rbac={"rules": [{"name": "refund", "path": "/v1/payments/{payment_id}/refunds",
                         "methods": ["POST"], "signature": "required",
                         "require": {"all_scopes": ["payments:write"]}}]},
        auth={"issuers": [jwt_issuer_config(jwks_url=jwks.url)]},
        redis={"url": redis_url},
        signatures={"max_age": "5m", "nonce_store": "redis", "keys": [
            {"keyid": "a-ed", "client_id": "merchant-a", "alg": "ed25519",
             "public_key_file": str(sigkeys.make("a-ed", "ed25519").public_pem)},
            {"keyid": "b-ed", "client_id": "merchant-b", "alg": "ed25519",
             "public_key_file": str(sigkeys.make("b-ed", "ed25519").public_pem)},
        ], **signatures},
    )


def _signed(base_url: str, token: str, sigkeys: SigKeys, keyid: str = "a-ed",
            body: bytes = BODY) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    key, alg = sigkeys.signing_key(keyid)
    headers.update(sign_request("POST", base_url + PATH, headers, body, key=key,
                                keyid=keyid, alg=alg))
    return headers


async def _post(url: str, headers: dict[str, str], body: bytes = BODY
                ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(url, headers=headers, data=body) as r:
        return r.status, {k.title(): v for k, v in r.headers.items()}, await r.read()


@pytest.fixture
def token(rsa_signing_key: SigningKeyPair) -> str:
    return jwt_sign(rsa_signing_key, default_claims(time.time()))


async def test_a_signed_request_passes_and_the_backend_gets_the_exact_body(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer,
    sigkeys: SigKeys, redis_url: str, token: str,
) -> None:
    sidecar = await start_sidecar(_config(backend, jwks_server, sigkeys, redis_url))
    status, _, _ = await _post(sidecar.url + PATH, _signed(sidecar.url, token, sigkeys))
    assert status == 200
    assert backend.requests[-1].body == BODY


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        pytest.param(lambda h, b: ({k: v for k, v in h.items() if not k.startswith("Sig")}, b),
                     401, "signature_missing", id="no signature"),
        pytest.param(lambda h, b: (h, b.replace(b"100", b"900")), 400, "digest_mismatch",
                     id="body changed under a stale digest"),
        pytest.param(lambda h, b: ({**h, "Content-Digest": "sha-256=:" + base64.b64encode(
            hashlib.sha256(b.replace(b"100", b"900")).digest()).decode() + ":"},
            b.replace(b"100", b"900")), 401, "signature_invalid",
            id="body and digest changed together"),
        pytest.param(lambda h, b: ({**h, "Content-Type": "text/plain"}, b), 401,
                     "signature_invalid", id="a covered header changed"),
    ],
)
async def test_a_tampered_request_is_denied_before_the_backend(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer, sigkeys: SigKeys,
    redis_url: str, token: str,
    tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], status: int,
    code: str,
) -> None:
    sidecar = await start_sidecar(_config(backend, jwks_server, sigkeys, redis_url))
    headers, body = tamper(_signed(sidecar.url, token, sigkeys), BODY)
    got, _, answer = await _post(sidecar.url + PATH, headers, body)
    assert (got, json.loads(answer)["code"]) == (status, code)
    assert backend.requests == []


async def test_another_clients_key_is_refused(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer, sigkeys: SigKeys,
    redis_url: str, token: str,
) -> None:
    sidecar = await start_sidecar(_config(backend, jwks_server, sigkeys, redis_url))
    status, _, answer = await _post(sidecar.url + PATH,
                                    _signed(sidecar.url, token, sigkeys, keyid="b-ed"))
    assert status == 401 and json.loads(answer)["code"] == "signature_invalid"
    assert backend.requests == []


async def test_a_replay_to_a_second_sidecar_process_sharing_redis_is_refused(
    backend: Backend, sidecar_process: Callable[..., SidecarProcess], jwks_server: JWKSServer,
    sigkeys: SigKeys, redis_url: str, token: str,
) -> None:
    config_a = _config(backend, jwks_server, sigkeys, redis_url)
    config_b = _config(backend, jwks_server, sigkeys, redis_url)
    first = await asyncio.to_thread(sidecar_process, config_a)
    second = await asyncio.to_thread(sidecar_process, config_b)
    # Both sign the same @target-uri: send the same Host to both processes.
    headers = _signed("http://api.example.test", token, sigkeys)
    headers["Host"] = "api.example.test"
    assert (await _post(first.url + PATH, headers))[0] == 200
    status, _, answer = await _post(second.url + PATH, headers)
    assert status == 401 and json.loads(answer)["code"] == "signature_replayed"
    assert len(backend.requests) == 1


async def test_responses_are_signed_when_configured(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer, sigkeys: SigKeys,
    redis_url: str, token: str,
) -> None:
    response_key = sigkeys.make("resp", "ed25519")
    sidecar = await start_sidecar(_config(
        backend, jwks_server, sigkeys, redis_url,
        response={"keyid": "sidecar-resp", "alg": "ed25519",
                  "private_key_file": str(response_key.private_pem)}))
    status, headers, body = await _post(sidecar.url + PATH, _signed(sidecar.url, token, sigkeys))
    assert status == 200
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert headers["Content-Digest"] == f"sha-256=:{digest}:"
    assert headers["Signature-Input"].startswith('sidecar=("@status"')
    assert 'keyid="sidecar-resp"' in headers["Signature-Input"]
    assert headers["Signature"].startswith("sidecar=:")
