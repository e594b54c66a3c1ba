"""Run the demo: keys and a client secret in a fresh directory, the mock backend and the
sidecar on loopback in one process, and the copy-paste commands that exercise it."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from sidecar.admin import build_admin_app
from sidecar.app import Runtime
from sidecar.commands.keygen import key_files, write_key_files
from sidecar.config import load_config
from sidecar.demo.backend import build_backend
from sidecar.metrics import Metrics
from sidecar.secrets import hash_secret
from sidecar.server import public_server

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
CLIENT_ID = "merchant-a"


@dataclass(frozen=True)
class DemoPorts:
    public: int = 8000
    admin: int = 9901
    backend: int = 8080


def prepare(directory: Path, ports: DemoPorts) -> tuple[dict[str, str], str]:
    """Write keys into ``directory``; return the config environment and the client secret."""
    directory.mkdir(parents=True, exist_ok=True)
    write_key_files(key_files("ed25519", "demo-issuer", directory), force=True)
    write_key_files(key_files("ed25519", "merchant-a-demo", directory), force=True)
    client_secret = "demo-" + secrets.token_urlsafe(12)
    env = {
        "DEMO_DIR": str(directory),
        "DEMO_PORT": str(ports.public),
        "DEMO_ADMIN_PORT": str(ports.admin),
        "DEMO_BACKEND_PORT": str(ports.backend),
        "DEMO_SECRET_HASH": hash_secret(client_secret),
    }
    return env, client_secret


def walkthrough(directory: Path, ports: DemoPorts, client_secret: str) -> str:
    base = f"http://127.0.0.1:{ports.public}"
    cli = f"{shlex.quote(sys.executable)} -m sidecar"
    key = shlex.quote(str(directory / "merchant-a-demo.pem"))
    sig = shlex.quote(str(directory / "signature-headers.txt"))
    body = '{"amount": 100, "reason": "duplicate charge"}'
    return f"""
Payments sidecar demo
  sidecar   {base}   (admin: http://127.0.0.1:{ports.admin}/metrics /healthz /readyz)
  backend   http://127.0.0.1:{ports.backend}   (mock payments API; only the sidecar should reach it)
  files     {directory}   (generated keys)

Copy-paste, in another shell:

# 1. Get a token: OAuth 2.0 client credentials from the embedded issuer (valid 10 minutes)
TOKEN=$(curl -s -u {CLIENT_ID}:{client_secret} -d grant_type=client_credentials \\
  {base}/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# 2. Allowed: merchant m-1 reads its own payment (the backend sees X-Auth-* identity headers)
curl -s -H "Authorization: Bearer $TOKEN" {base}/v1/merchants/m-1/payments/p-1; echo

# 3. Forbidden: the same token on merchant m-2's payment -> 403 forbidden (problem+json)
curl -s -H "Authorization: Bearer $TOKEN" {base}/v1/merchants/m-2/payments/p-2; echo

# 4. Rate limited: listing allows a burst of 5 per client, then 429 with Retry-After
for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{{http_code}} ' \\
  -H "Authorization: Bearer $TOKEN" {base}/v1/merchants/m-1/payments; done; echo

# 5. Signed call: a refund needs an RFC 9421 signature over method, URL, body digest, token
BODY='{body}'
{cli} sign --key {key} --keyid merchant-a-demo -H 'Content-Type: application/json' \\
  -H "Authorization: Bearer $TOKEN" --data "$BODY" POST {base}/v1/payments/p-1/refunds > {sig}
curl -s -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \\
  -H @{sig} --data "$BODY" {base}/v1/payments/p-1/refunds; echo
# ...and the same request again is a replay -> 401 signature_replayed
curl -s -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \\
  -H @{sig} --data "$BODY" {base}/v1/payments/p-1/refunds; echo

# Also try: no token -> 401; a path trick -> 400 bad_path; the metrics
curl -s {base}/v1/merchants/m-1/payments/p-1; echo
curl -s --path-as-is {base}/v1/merchants/m-1/payments/..%2fp-2; echo
curl -s http://127.0.0.1:{ports.admin}/metrics | grep ^sidecar_requests_total

Ctrl-C stops the demo.
"""


async def serve(directory: Path, ports: DemoPorts) -> int:
    env, client_secret = prepare(directory, ports)
    loaded = load_config(DEMO_CONFIG, env={**os.environ, **env})
    metrics = Metrics()
    runtime = Runtime(loaded, metrics)
    await runtime.start()
    runners = [
        web.AppRunner(build_backend(), access_log=None),
        web.ServerRunner(public_server(runtime, loaded.config.server)),
        web.AppRunner(build_admin_app(metrics, runtime.readiness), access_log=None),
    ]
    try:
        for runner, port in zip(runners, (ports.backend, ports.public, ports.admin), strict=True):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        print(f"demo: cannot listen: {exc.strerror} (is another demo running? use --port)",
              file=sys.stderr)
        for runner in runners:
            await runner.cleanup()
        await runtime.close(1.0)
        return 1
    print(walkthrough(directory, ports, client_secret), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for runner in reversed(runners):
        await runner.cleanup()
    await runtime.close(5.0)
    return 0
