"""Downgrade surface of the listener: protocol versions and TLS 1.2 cipher suites.

Every refused client is first shown to complete a handshake against a deliberately
permissive server with the same certificate (``permissive_port``), so each refusal is the
sidecar's policy and not a client that could not have connected anywhere.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.config.server import TLSConfig
from sidecar.tls import TLS12_CIPHERS, build_server_context
from tests.fixtures.proxy import Backend, base_config
from tests.fixtures.tls import StartTLSSidecar, TLSMaterial, handshake

pytestmark = pytest.mark.filterwarnings(
    # Naming TLSv1/TLSv1_1 to build an old client is the point of these tests.
    "ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

V = ssl.TLSVersion


@pytest.fixture(scope="module")
def dh_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RFC 7919 ffdhe2048, so that the permissive control server can do DHE."""
    path = tmp_path_factory.mktemp("dh") / "ffdhe2048.pem"
    pem = subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
         "dh_param:ffdhe2048"], capture_output=True, check=True, timeout=30).stdout
    path.write_bytes(pem)
    return path


@pytest.fixture
async def permissive_port(tls_material: TLSMaterial, dh_params: Path) -> AsyncIterator[int]:
    """A TLS server that accepts TLS 1.0-1.3 and every suite OpenSSL has (the control)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_material.server_cert, tls_material.server_key)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = V.TLSv1
    ctx.load_dh_params(str(dh_params))

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(idle, "127.0.0.1", 0, ssl=ctx)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _listener(backend: Backend, tls_material: TLSMaterial,
                    start_tls_sidecar: StartTLSSidecar, min_version: str) -> tuple[str, int]:
    sidecar = await start_tls_sidecar(base_config(backend.url, server={
        "tls": tls_material.tls_section(min_version=min_version)}))
    return sidecar.host, sidecar.port


OLD_PROTOCOLS = [pytest.param(V.TLSv1, id="tls1.0"), pytest.param(V.TLSv1_1, id="tls1.1")]


@pytest.mark.parametrize("version", [*OLD_PROTOCOLS, pytest.param(V.TLSv1_2, id="tls1.2")])
async def test_default_minimum_tls13_refuses_older_clients(
        version: ssl.TLSVersion, backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar, permissive_port: int) -> None:
    client = tls_material.client_context(minimum=version, maximum=version)
    control = await handshake("127.0.0.1", permissive_port, client)
    assert control.version is not None
    host, port = await _listener(backend, tls_material, start_tls_sidecar, "1.3")

    with pytest.raises(ssl.SSLError):
        await handshake(host, port, client)


@pytest.mark.parametrize("version", OLD_PROTOCOLS)
async def test_minimum_tls12_refuses_tls10_and_tls11(
        version: ssl.TLSVersion, backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar, permissive_port: int) -> None:
    client = tls_material.client_context(minimum=version, maximum=version)
    assert (await handshake("127.0.0.1", permissive_port, client)).version is not None
    host, port = await _listener(backend, tls_material, start_tls_sidecar, "1.2")

    with pytest.raises(ssl.SSLError):
        await handshake(host, port, client)


@pytest.mark.parametrize("suite", [
    pytest.param("AES128-SHA", id="rsa-kx-cbc"),
    pytest.param("AES128-GCM-SHA256", id="rsa-kx-aead"),
    pytest.param("DHE-RSA-AES128-GCM-SHA256", id="dhe"),
    pytest.param("ECDHE-RSA-AES128-SHA", id="ecdhe-cbc-sha1"),
    pytest.param("ECDHE-RSA-AES256-SHA384", id="ecdhe-cbc-sha384"),
])
async def test_minimum_tls12_refuses_suites_without_ecdhe_or_aead(
        suite: str, backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar, permissive_port: int) -> None:
    client = tls_material.client_context(maximum=V.TLSv1_2, ciphers=suite)
    control = await handshake("127.0.0.1", permissive_port, client)
    assert (control.version, control.cipher) == ("TLSv1.2", suite)
    host, port = await _listener(backend, tls_material, start_tls_sidecar, "1.2")

    with pytest.raises(ssl.SSLError):
        await handshake(host, port, client)


@pytest.mark.parametrize("suite", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                   "ECDHE-RSA-CHACHA20-POLY1305"])
async def test_minimum_tls12_accepts_ecdhe_aead_suites(
        suite: str, backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar) -> None:
    host, port = await _listener(backend, tls_material, start_tls_sidecar, "1.2")
    client = tls_material.client_context(maximum=V.TLSv1_2, ciphers=suite)

    hs = await handshake(host, port, client)

    assert (hs.version, hs.cipher) == ("TLSv1.2", suite)


async def test_minimum_tls12_still_prefers_tls13(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    host, port = await _listener(backend, tls_material, start_tls_sidecar, "1.2")

    assert (await handshake(host, port, tls_material.client_context())).version == "TLSv1.3"


async def test_server_picks_its_own_suite_order_at_tls12(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    host, port = await _listener(backend, tls_material, start_tls_sidecar, "1.2")
    # The client prefers CHACHA20; the server's list puts AES-128-GCM first.
    client = tls_material.client_context(
        maximum=V.TLSv1_2,
        ciphers="ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256")

    assert (await handshake(host, port, client)).cipher == "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.mark.parametrize("min_version", ["1.2", "1.3"])
def test_offered_suites_are_all_forward_secret_aead(
        min_version: str, tls_material: TLSMaterial) -> None:
    ctx = build_server_context(TLSConfig(cert_file=str(tls_material.server_cert),
                                         key_file=str(tls_material.server_key),
                                         min_version=min_version))
    suites = ctx.get_ciphers()

    assert suites, "no suite at all"
    for suite in suites:
        assert suite["aead"], suite["name"]
        assert suite["kea"] in ("kx-ecdhe", "kx-any"), suite["name"]  # kx-any: TLS 1.3
        if suite["protocol"] == "TLSv1.2":
            assert suite["name"] in TLS12_CIPHERS.split(":")
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.options & ssl.OP_NO_TICKET
    assert ctx.num_tickets == 0
    expected_min = V.TLSv1_2 if min_version == "1.2" else V.TLSv1_3
    assert ctx.minimum_version == expected_min
