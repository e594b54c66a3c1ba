"""The TLS listener over real loopback handshakes: what is negotiated, HSTS, the client
certificate as the pipeline sees it, and TLS to the upstream."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config.server import TLSConfig
from sidecar.tls import ServerTLS, client_cert_of
from tests.fixtures.proxy import Backend, base_config, problem
from tests.fixtures.tls import StartTLSSidecar, TLSMaterial, handshake, https_get
from tests.support import free_port


async def test_default_listener_negotiates_tls13_with_http11_alpn(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section()}))
    ctx = tls_material.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])

    hs = await handshake(sidecar.host, sidecar.port, ctx)

    assert hs.version == "TLSv1.3"
    assert hs.cipher in {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                         "TLS_AES_128_GCM_SHA256"}
    assert hs.alpn == "http/1.1"
    assert hs.compression is None


async def test_client_offering_only_h2_connects_without_alpn(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section()}))
    ctx = tls_material.client_context()
    ctx.set_alpn_protocols(["h2"])

    hs = await handshake(sidecar.host, sidecar.port, ctx)

    assert hs.version == "TLSv1.3"
    assert hs.alpn is None


async def test_proxied_request_over_tls_reaches_backend_as_https(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section()}))

    status, _, body = await https_get(sidecar.host, sidecar.port,
                                      tls_material.client_context(), "/v1/ping")

    assert status == 200
    assert json.loads(body)["path"] == "/v1/ping"
    assert backend.requests[-1].header("X-Forwarded-Proto") == "https"


async def test_hsts_is_sent_with_the_configured_max_age_on_answers_and_errors(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section(hsts_max_age="1h")}))
    ctx = tls_material.client_context()

    _, ok_headers, _ = await https_get(sidecar.host, sidecar.port, ctx, "/v1/ping")
    bad_status, bad_headers, _ = await https_get(sidecar.host, sidecar.port, ctx, "/a//b")

    assert ok_headers["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
    assert bad_status == 400
    assert bad_headers["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"


async def test_hsts_max_age_zero_sends_no_hsts_header(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section(hsts_max_age="0s")}))

    _, headers, _ = await https_get(sidecar.host, sidecar.port, tls_material.client_context())

    assert "Strict-Transport-Security" not in headers


async def test_tls13_issues_no_ticket_and_never_resumes(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section()}))
    ctx = tls_material.client_context()

    first = await handshake(sidecar.host, sidecar.port, ctx)
    second = await handshake(sidecar.host, sidecar.port, ctx, session=first.session)

    assert first.version == "TLSv1.3"
    assert first.session is None or not first.session.has_ticket
    assert not second.session_reused


async def test_tls12_issues_no_ticket_and_a_reload_forgets_cached_sessions(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    # Session-ID resumption from the in-memory cache stays (the stdlib cannot turn it off);
    # a reload must start from an empty cache (client-CA removals cannot be resumed around).
    sidecar = await start_tls_sidecar(base_config(
        backend.url, server={"tls": tls_material.tls_section(min_version="1.2")}))
    ctx = tls_material.client_context(maximum=ssl.TLSVersion.TLSv1_2)

    first = await handshake(sidecar.host, sidecar.port, ctx)
    resumed = await handshake(sidecar.host, sidecar.port, ctx, session=first.session)
    assert await sidecar.tls.reload()
    after_reload = await handshake(sidecar.host, sidecar.port, ctx, session=resumed.session)

    assert first.session is not None and not first.session.has_ticket
    assert resumed.session_reused, "control: a session-ID resumption within one context"
    assert not after_reload.session_reused


# --- client_cert_of on real connections ---------------------------------------------------

Serve = Callable[[TLSConfig], Coroutine[Any, Any, int]]


@pytest.fixture
async def cert_echo_server() -> AsyncIterator[Serve]:
    """A bare aiohttp server on our listener whose answer is ``client_cert_of`` as JSON."""
    runners: list[tuple[web.ServerRunner, ServerTLS]] = []
    memo: dict[int, Any] = {}

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        cert = client_cert_of(request.transport)
        memo.setdefault(id(cert), cert)  # keep objects alive so ids stay unique
        if cert is None:
            return web.json_response(None)
        return web.json_response({"subject": cert.subject, "sans": list(cert.sans),
                                  "x5t#S256": cert.sha256_thumbprint, "id": id(cert)})

    async def serve(cfg: TLSConfig) -> int:
        port = free_port()
        holder = ServerTLS(cfg)
        runner = web.ServerRunner(web.Server(handler, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=holder.listener).start()
        runners.append((runner, holder))
        return port

    yield serve
    for runner, _ in runners:
        await runner.cleanup()


async def _get_json(session: aiohttp.ClientSession, port: int) -> Any:
    async with session.get(f"https://127.0.0.1:{port}/") as response:
        assert response.status == 200
        return await response.json()


async def test_client_cert_of_gives_subject_sans_and_rfc8705_thumbprint_once_per_connection(
        tls_material: TLSMaterial, cert_echo_server: Serve) -> None:
    port = await cert_echo_server(TLSConfig(
        cert_file=str(tls_material.server_cert), key_file=str(tls_material.server_key),
        client_ca_file=str(tls_material.ca_file)))
    ctx = tls_material.client_context(tls_material.client_a)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as s:
        first = await _get_json(s, port)
        again = await _get_json(s, port)  # same keep-alive connection
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as s:
        other_connection = await _get_json(s, port)

    assert first["x5t#S256"] == tls_material.client_a.thumbprint
    assert len(first["x5t#S256"]) == 43 and "=" not in first["x5t#S256"]
    assert "CN=client-a" in first["subject"]
    assert first["sans"] == ["DNS:merchant-a.clients.example.test",
                             "email:merchant-a@example.test", "IP:10.1.2.3"]
    assert again["id"] == first["id"], "computed again for the same connection"
    assert other_connection["id"] != first["id"]
    assert other_connection["x5t#S256"] == first["x5t#S256"]


async def test_client_cert_of_is_none_without_a_certificate_and_without_client_ca(
        tls_material: TLSMaterial, cert_echo_server: Serve) -> None:
    optional = await cert_echo_server(TLSConfig(
        cert_file=str(tls_material.server_cert), key_file=str(tls_material.server_key),
        client_ca_file=str(tls_material.ca_file)))
    no_ca = await cert_echo_server(TLSConfig(
        cert_file=str(tls_material.server_cert), key_file=str(tls_material.server_key)))

    plain_ctx = tls_material.client_context()
    cert_ctx = tls_material.client_context(tls_material.client_a)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=plain_ctx)) as s:
        assert await _get_json(s, optional) is None
    # Without client_ca_file no certificate is asked for, so none is ever believed.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cert_ctx)) as s:
        assert await _get_json(s, no_ca) is None


async def test_client_cert_of_is_none_on_plain_tcp() -> None:
    seen: list[Any] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(client_cert_of(request.transport))
        return web.Response(text="ok")

    port = free_port()
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()
    assert seen == [None]


# --- TLS to the upstream ------------------------------------------------------------------

async def test_https_upstream_verified_with_ca_file(
        tls_backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar,
) -> None:
    sidecar = await start_tls_sidecar(base_config(
        tls_backend.url, server={"tls": tls_material.tls_section()},
        upstream={"ca_file": str(tls_material.ca_file)}))

    status, _, body = await https_get(sidecar.host, sidecar.port,
                                      tls_material.client_context(), "/v1/ok")

    assert status == 200
    assert json.loads(body)["path"] == "/v1/ok"
    assert len(tls_backend.requests) == 1


@pytest.mark.parametrize("ca_file", ["other", None], ids=["wrong_ca_file", "system_trust"])
async def test_https_upstream_not_signed_by_the_trusted_ca_is_502(
        ca_file: str | None, tls_backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar) -> None:
    upstream: dict[str, Any] = {}
    if ca_file == "other":
        upstream["ca_file"] = str(tls_material.other_ca_file)
    sidecar = await start_tls_sidecar(base_config(
        tls_backend.url, server={"tls": tls_material.tls_section()}, upstream=upstream))

    status, headers, body = await https_get(sidecar.host, sidecar.port,
                                            tls_material.client_context(), "/v1/ok")

    assert status == 502
    assert headers["Content-Type"] == "application/problem+json"
    assert problem(body)["code"] == "upstream_unavailable"
    assert tls_backend.requests == [], "no request may be sent over an unverified connection"


async def test_https_upstream_whose_certificate_names_another_host_is_502(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar,
) -> None:
    # Same trusted CA, wrong name: the host name is checked, not only the chain.
    leaf = tls_material.ca.issue_cert("not-the-backend.example")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    port = free_port()
    hits: list[str] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(text="should not be reached")

    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        sidecar = await start_tls_sidecar(base_config(
            f"https://127.0.0.1:{port}", server={"tls": tls_material.tls_section()},
            upstream={"ca_file": str(tls_material.ca_file)}))
        status, _, body = await https_get(sidecar.host, sidecar.port,
                                          tls_material.client_context(), "/v1/ok")
    finally:
        await runner.cleanup()

    assert status == 502
    assert problem(body)["code"] == "upstream_unavailable"
    assert hits == []


async def test_two_tls_listeners_in_one_process_keep_their_own_policies(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    # Two TLS sidecars with different policies in one process: each listener keeps its own.
    strict = await start_tls_sidecar(
        base_config(backend.url, server={"tls": tls_material.tls_section()}))
    lenient = await start_tls_sidecar(base_config(
        backend.url, server={"tls": tls_material.tls_section(min_version="1.2")}))
    ctx12 = tls_material.client_context(maximum=ssl.TLSVersion.TLSv1_2)

    ok = await handshake(lenient.host, lenient.port, ctx12)
    with pytest.raises(ssl.SSLError):
        await handshake(strict.host, strict.port, ctx12)
    assert ok.version == "TLSv1.2"
