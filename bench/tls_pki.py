"""Shared by ``bench/tls_scan.py`` and ``bench/tls_bench.py``: a throwaway PKI made with the
``openssl`` CLI (the same commands docs/tls.md walks through) and a TLS sidecar process on
loopback that is always stopped (context manager, own session, killed on exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
OPENSSL_TIMEOUT = 60.0
READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_pem: Path
    """Client certificate + key in one file (for an mTLS run)."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=OPENSSL_TIMEOUT)


def make_pki(directory: Path, server_key: str = "rsa") -> PKI:
    """A CA, a server certificate for 127.0.0.1/localhost (``rsa`` 2048 or ``ec`` P-256) and
    a client certificate, all valid for 30 days."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-subj", "/CN=sidecar bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    newkey = ["-newkey", "rsa:2048"] if server_key == "rsa" else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    for name, eku, san in (("server", "serverAuth", "DNS:localhost,IP:127.0.0.1"),
                           ("client", "clientAuth", "URI:spiffe://bench/client")):
        keyargs = newkey if name == "server" else [
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        _openssl("req", "-new", *keyargs, "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        (directory / f"{name}.ext").write_text(
            f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature"
            f"{',keyEncipherment' if name == 'server' and server_key == 'rsa' else ''}\n"
            f"extendedKeyUsage={eku}\nsubjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "30", "-sha256", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=directory)
    client_pem = directory / "client.pem"
    client_pem.write_bytes((directory / "client.crt").read_bytes()
                           + (directory / "client.key").read_bytes())
    return PKI(directory / "ca.pem", directory / "server.crt", directory / "server.key",
               client_pem)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Sidecar:
    host: str
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes]


def sidecar_config(upstream: str, tls: Mapping[str, Any] | None, **server: Any
                   ) -> dict[str, Any]:
    """A pass-through config (one public ``/**`` rule) on free loopback ports."""
    section: dict[str, Any] = {"listen": f"127.0.0.1:{free_port()}", **server}
    if tls is not None:
        section["tls"] = dict(tls)
    return {
        "server": section,
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "upstream": {"url": upstream},
        "rbac": {"rules": [{"name": "all", "path": "/**", "methods": ["GET", "POST"],
                            "public": True}]},
    }


@contextlib.contextmanager
def running_sidecar(config: Mapping[str, Any], workdir: Path, name: str) -> Iterator[Sidecar]:
    """``python -m sidecar run`` with ``config``; waits until the public port accepts and
    stops it (SIGTERM, then SIGKILL) however the block ends."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "run", "-c", str(path),
                             "--log-level", "WARNING"], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    host, _, port = config["server"]["listen"].rpartition(":")
    admin_port = int(config["admin"]["listen"].rpartition(":")[2])
    try:
        _wait_port(host, int(port), proc, workdir / f"{name}.log")
        yield Sidecar(host, int(port), admin_port, proc)
    finally:
        _stop(proc)
        log.close()


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sidecar not listening on {host}:{port} after {READY_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
