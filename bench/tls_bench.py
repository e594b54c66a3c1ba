"""What TLS costs the sidecar: handshakes/s and keep-alive requests/s, TLS vs plain.

    python -m bench.tls_bench [--keepalive-requests 3000] [--new-conn-requests 1000]
                              [--concurrency 16] [--max-seconds 20] [--json FILE]

Targets, one sidecar process (one worker) at a time on loopback, all in front of the same
nginx backend (``bench/backend/nginx.conf``), pass-through config (one public rule):

* ``plain``       - no TLS;
* ``tls13-p256``  - TLS 1.3, ECDSA P-256 server certificate (what docs/tls.md recommends);
* ``tls13-rsa``   - TLS 1.3, RSA-2048 server certificate.

Per target two phases, each after a short warm-up: ``keepalive`` (requests over
``--concurrency`` reused connections) and ``new-conn`` (``Connection: close``: a new TCP
connection, and for TLS a full handshake, for every request; TLS session resumption is off
by design, see docs/tls.md). The client is aiohttp on uvloop in this process, so numbers
are end to end on one machine; the sidecar's own CPU time per request is read from
/proc and reported beside them. Every phase stops at its request count or at
``--max-seconds``, whichever comes first, and every process started is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.tls_pki import PKI, free_port, make_pki, running_sidecar, sidecar_config

BENCH_DIR = Path(__file__).resolve().parent
PATH = "/v1/bench/ping"
WARMUP = 200


@dataclass(frozen=True, slots=True)
class Phase:
    target: str
    phase: str
    requests: int
    errors: int
    seconds: float
    rps: float
    sidecar_cpu_us_per_request: float
    stopped_by: str


@contextlib.contextmanager
def nginx_backend(workdir: Path) -> Iterator[str]:
    """nginx from bench/backend/nginx.conf on a free port; stopped on exit."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = workdir / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = ((BENCH_DIR / "backend" / "nginx.conf").read_text()
            .replace("{{port}}", str(port)).replace("{{prefix}}", str(prefix)))
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                             "-e", str(prefix / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start: " + (prefix / "error.log").read_text())
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(url: str, ctx: ssl.SSLContext | None, *, requests: int, concurrency: int,
                    new_connections: bool, max_seconds: float) -> tuple[int, int, float, str]:
    """Send ``requests`` GETs with ``concurrency`` workers; returns (done, errors, seconds,
    stopped_by)."""
    connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else False,
                                     limit=concurrency, force_close=new_connections)
    headers = {"Connection": "close"} if new_connections else {}
    done = errors = 0
    remaining = requests
    deadline = time.monotonic() + max_seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors, remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except (TimeoutError, aiohttp.ClientError, OSError):
                errors += 1
            done += 1

    timeout = aiohttp.ClientTimeout(total=10)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return done, errors, seconds, ("count" if remaining <= 0 else "time")


def client_context(pki: PKI) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def measure_target(name: str, config: Mapping[str, Any], ctx: ssl.SSLContext | None,
                   workdir: Path, args: argparse.Namespace) -> list[Phase]:
    results = []
    with running_sidecar(config, workdir, name) as sidecar:
        scheme = "https" if ctx is not None else "http"
        url = f"{scheme}://{sidecar.host}:{sidecar.port}{PATH}"
        for phase, count, new in (("keepalive", args.keepalive_requests, False),
                                  ("new-conn", args.new_conn_requests, True)):
            asyncio.run(run_phase(url, ctx, requests=WARMUP, concurrency=args.concurrency,
                                  new_connections=new, max_seconds=args.max_seconds))
            cpu_before = cpu_seconds(sidecar.proc.pid)
            done, errors, seconds, stopped_by = asyncio.run(run_phase(
                url, ctx, requests=count, concurrency=args.concurrency, new_connections=new,
                max_seconds=args.max_seconds))
            cpu = cpu_seconds(sidecar.proc.pid) - cpu_before
            result = Phase(name, phase, done, errors, round(seconds, 3),
                           round(done / seconds, 1) if seconds else 0.0,
                           round(cpu * 1e6 / done, 1) if done else 0.0, stopped_by)
            print(f"  {name:<11} {phase:<9} {result.rps:>9,.0f} req/s  "
                  f"{result.sidecar_cpu_us_per_request:>8,.0f} us sidecar CPU/req  "
                  f"{done} requests in {seconds:.2f}s, {errors} errors"
                  + ("  (stopped by --max-seconds)" if stopped_by == "time" else ""),
                  flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keepalive-requests", type=int, default=3000)
    parser.add_argument("--new-conn-requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    results: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="sidecar-tls-bench-") as tmp:
        workdir = Path(tmp)
        p256 = make_pki(workdir / "p256", server_key="ec")
        rsa = make_pki(workdir / "rsa", server_key="rsa")
        with nginx_backend(workdir) as upstream:
            targets: list[tuple[str, Mapping[str, Any], ssl.SSLContext | None]] = [
                ("plain", sidecar_config(upstream, None), None),
                ("tls13-p256", sidecar_config(upstream, {
                    "cert_file": str(p256.server_cert), "key_file": str(p256.server_key)}),
                 client_context(p256)),
                ("tls13-rsa", sidecar_config(upstream, {
                    "cert_file": str(rsa.server_cert), "key_file": str(rsa.server_key)}),
                 client_context(rsa)),
            ]
            print(f"sidecar TLS bench: {args.keepalive_requests} keep-alive / "
                  f"{args.new_conn_requests} new-connection requests per target, "
                  f"concurrency {args.concurrency}, max {args.max_seconds:.0f}s per phase",
                  flush=True)
            for name, config, ctx in targets:
                results.extend(measure_target(name, config, ctx, workdir, args))
    if args.json:
        args.json.write_text(json.dumps({
            "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION,
            "cpus": os.cpu_count(), "results": [asdict(r) for r in results]}, indent=1))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
