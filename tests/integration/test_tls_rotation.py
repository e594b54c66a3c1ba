"""Certificate rotation without dropping a request: ``ServerTLS.reload`` (SIGHUP), the file
watcher, and rejection of a bad certificate/key with the running one kept.

The in-process tests drive ``ServerTLS`` directly. The subprocess tests run ``sidecar run``
and need ``server.py`` to use ``ServerTLS`` (SIGHUP -> reload, watcher started); they are
skipped with "INTEGRATION PENDING" until it does.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import shutil
import signal
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import sidecar.server
from sidecar.config.server import TLSConfig
from sidecar.tls import ServerTLS, TLSSetupError
from tests.fixtures.proxy import Backend, SidecarProcess, base_config
from tests.fixtures.tls import (
    StartTLSSidecar,
    TLSMaterial,
    handshake,
    handshake_blocking,
    https_get,
    https_request,
)


@dataclass
class CertFiles:
    cert: Path
    key: Path
    ca: Path

    def install(self, cert: Path, key: Path) -> None:
        """Atomically replace both files (write beside, then rename), key first."""
        for src, dst in ((key, self.key), (cert, self.cert)):
            tmp = dst.with_suffix(".new")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)

    def tls_section(self, **fields: Any) -> dict[str, Any]:
        return {"cert_file": str(self.cert), "key_file": str(self.key), **fields}


@pytest.fixture
def cert_files(tmp_path: Path, tls_material: TLSMaterial) -> CertFiles:
    """A private copy of the server certificate, key and client CA that a test may replace."""
    files = CertFiles(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "client-ca.pem")
    shutil.copyfile(tls_material.server_cert, files.cert)
    shutil.copyfile(tls_material.server_key, files.key)
    shutil.copyfile(tls_material.ca_file, files.ca)
    return files


def leaf_der(path: Path) -> bytes:
    pem = path.read_text()
    return ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])


@dataclass
class ClientLoop:
    """Requests over a new TLS connection each, back to back, in a thread."""

    host: str
    port: int
    ctx: ssl.SSLContext
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _, _ = https_request(self.host, self.port, self.ctx, path="/v1/ping")
            except (OSError, ssl.SSLError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(f"status {status}")


@asynccontextmanager
async def client_loop(host: str, port: int, ctx: ssl.SSLContext) -> AsyncIterator[ClientLoop]:
    loop = ClientLoop(host, port, ctx)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop._stop.set()
        # Joined off the event loop: the server under test runs on it and must keep
        # answering the request in flight.
        await asyncio.to_thread(thread.join, 10)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# --- in process -------------------------------------------------------------------------

async def test_reload_under_load_serves_the_new_cert_with_zero_failed_requests(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": cert_files.tls_section()}))
    ctx = tls_material.client_context()
    before = (await handshake(sidecar.host, sidecar.port, ctx)).server_der

    async with client_loop(sidecar.host, sidecar.port, ctx) as load:
        await wait_for(lambda: load.ok >= 20)
        cert_files.install(tls_material.server_cert_2, tls_material.server_key_2)
        assert await sidecar.tls.reload()
        reloaded_at = load.ok
        await wait_for(lambda: load.ok >= reloaded_at + 20)

    after = (await handshake(sidecar.host, sidecar.port, ctx)).server_der
    assert load.failures == []
    assert before == leaf_der(tls_material.server_cert)
    assert after == leaf_der(tls_material.server_cert_2)
    assert sidecar.tls.reloads == 1


async def test_watcher_picks_up_replaced_files_without_a_signal(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": cert_files.tls_section()}), watch_interval=0.1)

    cert_files.install(tls_material.server_cert_2, tls_material.server_key_2)
    await wait_for(lambda: sidecar.tls.reloads == 1, timeout=5)

    hs = await handshake(sidecar.host, sidecar.port, tls_material.client_context())
    assert hs.server_der == leaf_der(tls_material.server_cert_2)


@pytest.mark.parametrize("damage", ["key_of_another_cert", "garbage_cert", "missing_key",
                                    "empty_client_ca"])
async def test_bad_new_files_are_rejected_logged_and_the_old_cert_kept(
        damage: str, backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar, caplog: pytest.LogCaptureFixture) -> None:
    sidecar = await start_tls_sidecar(base_config(backend.url, server={
        "tls": cert_files.tls_section(client_ca_file=str(cert_files.ca))}))
    if damage == "key_of_another_cert":
        shutil.copyfile(tls_material.server_key_2, cert_files.key)
    elif damage == "garbage_cert":
        cert_files.cert.write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n")
    elif damage == "missing_key":
        cert_files.key.unlink()
    else:
        cert_files.ca.write_text("")

    with caplog.at_level(logging.ERROR, logger="sidecar.tls"):
        assert not await sidecar.tls.reload()

    assert sidecar.tls.failures == 1 and sidecar.tls.reloads == 0
    assert "TLS reload rejected" in caplog.text
    assert "server.tls." in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    status, _, _ = await https_get(sidecar.host, sidecar.port, tls_material.client_context())
    assert status == 200
    hs = await handshake(sidecar.host, sidecar.port, tls_material.client_context())
    assert hs.server_der == leaf_der(tls_material.server_cert)


async def test_a_rejected_change_is_retried_when_the_files_change_again(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar) -> None:
    # A non-atomic copy: the key lands first (mismatch, rejected), then the certificate.
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": cert_files.tls_section()}), watch_interval=0.1)

    shutil.copyfile(tls_material.server_key_2, cert_files.key)
    await wait_for(lambda: sidecar.tls.failures == 1, timeout=5)
    shutil.copyfile(tls_material.server_cert_2, cert_files.cert)
    await wait_for(lambda: sidecar.tls.reloads == 1, timeout=5)

    hs = await handshake(sidecar.host, sidecar.port, tls_material.client_context())
    assert hs.server_der == leaf_der(tls_material.server_cert_2)
    assert sidecar.tls.failures == 1


async def test_reload_replaces_the_client_ca_set_including_removals(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(base_config(backend.url, server={
        "tls": cert_files.tls_section(client_ca_file=str(cert_files.ca),
                                      client_cert="required")}))
    ours = tls_material.client_context(tls_material.client_a)
    theirs = tls_material.client_context(tls_material.rogue_client)
    assert (await https_get(sidecar.host, sidecar.port, ours))[0] == 200

    shutil.copyfile(tls_material.other_ca_file, cert_files.ca)
    assert await sidecar.tls.reload()

    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https_get(sidecar.host, sidecar.port, ours)
    assert (await https_get(sidecar.host, sidecar.port, theirs))[0] == 200


async def test_reload_with_a_new_section_applies_its_minimum_version(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(base_config(backend.url, server={
        "tls": cert_files.tls_section(min_version="1.2")}))
    tls12 = tls_material.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    assert (await handshake(sidecar.host, sidecar.port, tls12)).version == "TLSv1.2"

    assert await sidecar.tls.reload(TLSConfig(**cert_files.tls_section(min_version="1.3")))

    with pytest.raises(ssl.SSLError):
        await handshake(sidecar.host, sidecar.port, tls12)


async def test_open_keepalive_connection_keeps_its_certificate_across_a_reload(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": cert_files.tls_section()}))
    conn = http.client.HTTPSConnection(sidecar.host, sidecar.port,
                                       context=tls_material.client_context(), timeout=5)

    def get(path: str) -> tuple[int, bytes | None]:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert isinstance(conn.sock, ssl.SSLSocket)
        return response.status, conn.sock.getpeercert(binary_form=True)

    try:
        first = await asyncio.to_thread(get, "/v1/a")
        sock = conn.sock
        cert_files.install(tls_material.server_cert_2, tls_material.server_key_2)
        assert await sidecar.tls.reload()
        second = await asyncio.to_thread(get, "/v1/b")
        assert conn.sock is sock, "the second request did not reuse the open connection"
    finally:
        conn.close()
    new = await handshake(sidecar.host, sidecar.port, tls_material.client_context())

    assert first == second == (200, leaf_der(tls_material.server_cert))
    assert new.server_der == leaf_der(tls_material.server_cert_2)


def test_startup_with_unloadable_files_raises_a_located_config_error(
        tls_material: TLSMaterial, tmp_path: Path) -> None:
    missing = TLSConfig(cert_file=str(tmp_path / "nope.crt"),
                        key_file=str(tls_material.server_key))
    mismatched = TLSConfig(cert_file=str(tls_material.server_cert),
                           key_file=str(tls_material.server_key_2))
    bad_ca = TLSConfig(cert_file=str(tls_material.server_cert),
                       key_file=str(tls_material.server_key),
                       client_ca_file=str(tls_material.server_key))

    with pytest.raises(TLSSetupError) as no_file:
        ServerTLS(missing)
    with pytest.raises(TLSSetupError) as wrong_key:
        ServerTLS(mismatched)
    with pytest.raises(TLSSetupError) as not_a_ca:
        ServerTLS(bad_ca)

    assert no_file.value.issues[0].path == "server.tls.cert_file"
    assert "cannot read" in no_file.value.issues[0].message
    assert wrong_key.value.issues[0].path == "server.tls.cert_file"
    assert not_a_ca.value.issues[0].path == "server.tls.client_ca_file"


# --- the real process -------------------------------------------------------------------

needs_server_wiring = pytest.mark.skipif(
    "ServerTLS" not in vars(sidecar.server),
    reason="INTEGRATION PENDING: sidecar/server.py must serve through sidecar.tls.ServerTLS "
           "(SIGHUP -> reload, file watcher started)")


def _https_ready(host: str, port: int, ctx: ssl.SSLContext, proc: SidecarProcess) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert proc.proc.poll() is None, proc.log()
        try:
            handshake_blocking(host, port, ctx)
            return
        except OSError:
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.05)


@pytest.mark.slow
@needs_server_wiring
@pytest.mark.parametrize("trigger", ["sighup", "file_watch"])
async def test_process_rotates_its_certificate_under_load_with_zero_failed_requests(
        trigger: str, backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        sidecar_process: Callable[..., SidecarProcess]) -> None:
    config = base_config(backend.url, server={"tls": cert_files.tls_section()})
    proc = await asyncio.to_thread(sidecar_process, config)
    host, _, port_text = config["server"]["listen"].rpartition(":")
    port, ctx = int(port_text), tls_material.client_context()
    await asyncio.to_thread(_https_ready, host, port, ctx, proc)
    new_der = leaf_der(tls_material.server_cert_2)

    def served() -> bytes | None:
        return handshake_blocking(host, port, ctx).server_der

    async with client_loop(host, port, ctx) as load:
        await wait_for(lambda: load.ok >= 20, timeout=20)
        cert_files.install(tls_material.server_cert_2, tls_material.server_key_2)
        if trigger == "sighup":
            proc.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20  # the watcher polls every few seconds
        while await asyncio.to_thread(served) != new_der:
            assert time.monotonic() < deadline, proc.log()
            await asyncio.sleep(0.2)
        rotated_at = load.ok
        await wait_for(lambda: load.ok >= rotated_at + 20, timeout=20)

    assert load.failures == [], proc.log()
    assert "TLS reloaded" in proc.log()
    assert proc.stop() == 0


@needs_server_wiring
def test_process_with_an_unloadable_key_exits_1_naming_the_field(
        backend: Backend, tls_material: TLSMaterial, cert_files: CertFiles,
        sidecar_process: Callable[..., SidecarProcess]) -> None:
    shutil.copyfile(tls_material.server_key_2, cert_files.key)  # not the certificate's key
    config = base_config(backend.url, server={"tls": cert_files.tls_section()})

    proc = sidecar_process(config, wait=False)

    assert proc.proc.wait(timeout=30) == 1
    assert "server.tls.cert_file" in proc.log()
    assert "Traceback" not in proc.log()
