"""Rate limits enforced by the running proxy on a real redis-server: headers on every
limited response, 429 with Retry-After, failed authentications charged to the per-IP
budget, and fail_closed answering 503 while Redis is down."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.fixtures.proxy import Backend, StartSidecar, base_config
from tests.fixtures.redis import RedisServer
from tests.fixtures.tokens import JWKSServer, SigningKeyPair, default_claims, jwt_issuer_config
from tests.fixtures.tokens import sign_token as jwt_sign

RBAC = {"rules": [
    {"name": "health", "path": "/v1/health", "methods": ["GET"], "public": True},
    {"name": "list", "path": "/v1/payments", "methods": ["GET"], "rate_limits": ["list"]},
]}


def _config(backend: Backend, jwks: JWKSServer, redis_url: str, **limits: Any) -> dict[str, Any]:
    return base_config(
        backend.url, rbac=RBAC, auth={"issuers": [jwt_issuer_config(jwks_url=jwks.url)]},
        redis={"url": redis_url, "timeout": "200ms"},
        rate_limits={
            "store": "redis",
            "policies": [{"name": "per-client", "key": "client_id", "capacity": 100,
                          "refill": "100/s"},
                         {"name": "list", "key": "client_id", "capacity": 3, "refill": "1/m"}],
            "default": ["per-client"],
            "unauthenticated": {"capacity": 4, "refill": "1/m"},
            **limits,
        })


async def _get(url: str, token: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        body = await r.read()
        data = json.loads(body) if r.content_type.endswith("json") else {}
        return r.status, {k.title(): v for k, v in r.headers.items()}, data


async def test_a_rule_policy_limits_with_headers_and_retry_after(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer, redis_url: str,
    rsa_signing_key: SigningKeyPair,
) -> None:
    sidecar = await start_sidecar(_config(backend, jwks_server, redis_url))
    token = jwt_sign(rsa_signing_key, default_claims(time.time()))
    answers = [await _get(sidecar.url + "/v1/payments", token) for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 200, 429, 429]
    assert [a[1]["Ratelimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert all(a[1]["Ratelimit-Limit"] == "3" for a in answers)
    _, headers, body = answers[3]
    assert body["code"] == "rate_limited"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert len(backend.requests) == 3


async def test_failed_authentications_are_charged_to_the_ip_budget(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer, redis_url: str,
) -> None:
    sidecar = await start_sidecar(_config(backend, jwks_server, redis_url))
    statuses = [(await _get(sidecar.url + "/v1/payments", "garbage.token.x"))[0]
                for _ in range(6)]
    assert statuses[:4] == [401] * 4
    assert statuses[4:] == [429, 429]
    # the public route shares the same exhausted per-IP budget
    assert (await _get(sidecar.url + "/v1/health"))[0] == 429
    assert backend.requests == []


async def test_fail_closed_answers_503_while_redis_is_down_and_recovers(
    backend: Backend, start_sidecar: StartSidecar, jwks_server: JWKSServer, redis_url: str,
    redis_server: RedisServer, rsa_signing_key: SigningKeyPair,
) -> None:
    sidecar = await start_sidecar(_config(backend, jwks_server, redis_url,
                                          breaker_cooldown="300ms"))
    token = jwt_sign(rsa_signing_key, default_claims(time.time()))
    assert (await _get(sidecar.url + "/v1/health"))[0] == 200
    redis_server.stop()
    try:
        status, _, body = await _get(sidecar.url + "/v1/health")
        assert status == 503 and body["code"] == "rate_limit_unavailable"
        assert (await _get(sidecar.url + "/v1/payments", token))[0] == 503
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while (await _get(sidecar.url + "/v1/health"))[0] != 200:
        assert time.monotonic() < deadline, "limiting did not resume after Redis returned"
    assert len(backend.requests) >= 2


async def test_the_token_endpoint_is_limited_per_client_and_per_ip(
    backend: Backend, start_sidecar: StartSidecar, redis_url: str, tmp_path: Path,
) -> None:
    from sidecar.commands.keygen import key_files, write_key_files
    from sidecar.secrets import hash_secret

    write_key_files(key_files("ed25519", "issuer", tmp_path))
    config = base_config(
        backend.url, rbac={"rules": RBAC["rules"][:1]},
        auth={"issuers": [{"name": "local", "builtin": True}]},
        token_endpoint={"issuer": "https://sidecar.test/", "audience": "payments-api",
                        "signing_keys": [{"kid": "issuer", "alg": "EdDSA",
                                          "private_key_file": str(tmp_path / "issuer.pem")}],
                        "clients": [{"client_id": "merchant-a",
                                     "secret_hash": hash_secret("pw", n=2**10)}]},
        redis={"url": redis_url},
        rate_limits={"store": "redis",
                     "policies": [{"name": "per-client", "key": "client_id", "capacity": 2,
                                   "refill": "1/m"}],
                     "default": ["per-client"],
                     "unauthenticated": {"capacity": 5, "refill": "1/m"}})
    sidecar = await start_sidecar(config)
    statuses = []
    async with aiohttp.ClientSession() as s:
        # merchant-a:pw three times, then merchant-a:wrong twice
        for basic in ["bWVyY2hhbnQtYTpwdw=="] * 3 + ["bWVyY2hhbnQtYTp3cm9uZw=="] * 2:
            async with s.post(sidecar.url + "/oauth/token",
                              headers={"Authorization": f"Basic {basic}"},
                              data={"grant_type": "client_credentials"}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert (await r.json())["code"] == "rate_limited"
                    assert int(r.headers["Retry-After"]) >= 1
    # per client: the third good request is over merchant-a's budget of 2;
    # per IP: every request takes one of 5, a failed client authentication one more.
    assert statuses == [200, 200, 429, 401, 429]
