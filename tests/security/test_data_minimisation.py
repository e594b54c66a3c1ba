"""A card number, a token and a client secret sent in every place a client can put them
never appear in the audit file, the process log, or the metrics output."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from sidecar.secrets import hash_secret
from tests.fixtures.proxy import Backend, SidecarProcess, base_config, http_get
from tests.fixtures.tokens import JWKSServer, SigningKeyPair, default_claims, jwt_issuer_config
from tests.fixtures.tokens import sign_token as jwt_sign

PAN = "4111111111111111"          # Luhn-valid test Visa number
PAN_SPACED = "5500 0000 0000 0004"
CLIENT_SECRET = "s3cr3t-never-logged-7f2a"


async def test_secrets_and_card_numbers_never_reach_audit_logs_or_metrics(
    backend: Backend, sidecar_process: Callable[..., SidecarProcess], jwks_server: JWKSServer,
    rsa_signing_key: SigningKeyPair, tmp_path: Path,
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    issuer_key = tmp_path / "issuer.pem"
    from sidecar.commands.keygen import key_files, write_key_files

    write_key_files(key_files("ed25519", "issuer", tmp_path))
    config = base_config(
        backend.url,
        rbac={"rules": [
            {"name": "health", "path": "/v1/health", "methods": ["GET"], "public": True},
            {"name": "pay", "path": "/v1/pay/{id}", "methods": ["GET", "POST"]},
        ]},
        auth={"issuers": [jwt_issuer_config(jwks_url=jwks_server.url),
                          {"name": "local", "builtin": True}]},
        token_endpoint={"issuer": "https://sidecar.test/", "audience": "payments-api",
                        "signing_keys": [{"kid": "issuer", "alg": "EdDSA",
                                          "private_key_file": str(issuer_key)}],
                        "clients": [{"client_id": "merchant-a",
                                     "secret_hash": hash_secret(CLIENT_SECRET, n=2**10),
                                     "scopes": ["payments:read"]}]},
        audit={"sinks": [{"type": "file", "path": str(audit_file)}],
               "spool_dir": str(tmp_path / "spool")},
    )
    proc = await asyncio.to_thread(sidecar_process, config)
    token = jwt_sign(rsa_signing_key, default_claims(time.time(), sub=PAN))
    bad_token = token[:-8] + "AAAAAAAA"
    leaks = [PAN, PAN_SPACED.replace(" ", ""), CLIENT_SECRET, token, bad_token,
             token.split(".")[2], bad_token.split(".")[2]]

    async with aiohttp.ClientSession() as s:
        requests: list[tuple[str, Any, dict[str, Any]]] = [
            ("GET", URL(proc.url + f"/v1/pay/{PAN}?card_number={PAN}&note={PAN}&x=1",
                        encoded=True), {"headers": {"Authorization": f"Bearer {token}"}}),
            ("POST", proc.url + "/v1/pay/1", {"headers": {"Authorization": f"Bearer {token}",
                                                          "X-Card": PAN},
                                              "data": json.dumps({"pan": PAN}).encode()}),
            ("GET", proc.url + "/v1/pay/1", {"headers": {"Authorization": f"Bearer {bad_token}"}}),
            ("GET", URL(proc.url + f"/v1/health?access_token={token}&pan={PAN_SPACED}"
                        .replace(" ", "%20"), encoded=True), {}),
            ("POST", proc.url + "/oauth/token", {"data": {
                "grant_type": "client_credentials", "client_id": "merchant-a",
                "client_secret": CLIENT_SECRET}}),
            ("POST", proc.url + "/oauth/token", {"data": {
                "grant_type": "client_credentials", "client_id": "merchant-a",
                "client_secret": CLIENT_SECRET + "x"}}),
            ("GET", URL(proc.url + f"/v1/../{PAN}", encoded=True), {}),
        ]
        statuses = []
        for method, url, kwargs in requests:
            async with s.request(method, url, **kwargs) as r:
                statuses.append(r.status)
                body = await r.text()
                if r.status >= 400:  # answers the sidecar wrote (2xx bodies are the backend's)
                    for secret in (CLIENT_SECRET, token, bad_token, PAN):
                        assert secret not in body
    assert statuses[:3] == [200, 200, 401]
    assert statuses[4:] == [200, 401, 400]
    metrics = (await asyncio.to_thread(http_get, proc.admin_url + "/metrics"))[1].decode()
    assert await asyncio.to_thread(proc.stop) == 0

    audit = audit_file.read_text()
    log = proc.log()
    events = [json.loads(line) for line in audit.splitlines()]
    request_events = [e for e in events if e["type"] == "request"]
    assert len(request_events) == len(requests)
    assert any(e["type"] == "token_issued" for e in events)
    for where, text in (("audit", audit), ("log", log), ("metrics", metrics)):
        for secret in leaks:
            assert secret not in text, f"{secret[:12]}... leaked into the {where}"
    assert "%5BREDACTED%5D" in request_events[0]["path"]
