"""The pass-through proxy over real loopback HTTP: forwarding, headers, limits, errors."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.fixtures.proxy import Backend, StartSidecar, base_config, problem
from tests.support import free_port


async def _get(url: str | URL, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(
        kwargs.pop("method", "GET"), url, **kwargs
    ) as response:
        headers = {k.title(): v for k, v in response.headers.items()}
        return response.status, headers, await response.read()


async def test_a_request_is_forwarded_with_its_raw_path_and_query(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url))
    # encoded=True: the client must send the target byte for byte, as an attacker would.
    status, headers, body = await _get(URL(sidecar.url + "/v1/a%20b/c?x=1&y=%2F", encoded=True))
    assert status == 200
    assert backend.requests[-1].path == "/v1/a%20b/c?x=1&y=%2F"
    assert b'"ok": true' in body
    assert headers["X-Request-Id"] == backend.requests[-1].header("x-request-id")


async def test_backend_server_fingerprints_are_not_leaked(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url))
    _, headers, _ = await _get(sidecar.url + "/x")
    assert headers.get("Server") == "sidecar"
    assert "X-Powered-By" not in headers
    assert headers["X-Backend"] == "yes"


async def test_forwarding_headers_are_set_and_spoofs_discarded(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url))
    await _get(sidecar.url + "/x", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6",
        "X-Request-Id": "spoofed-id", "X-Auth-Client-Id": "admin", "X-Auth_Scopes": "all",
        "X-HTTP-Method-Override": "DELETE", "Host": "api.example.com"})
    seen = backend.requests[-1]
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == "api.example.com"
    assert seen.header("x-request-id") != "spoofed-id"
    for name in ("x-real-ip", "forwarded", "x-auth-client-id", "x-auth_scopes",
                 "x-http-method-override"):
        assert name not in seen.headers, name


async def test_a_trusted_proxy_keeps_its_request_id_and_chain(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(
        backend.url, server={"trusted_proxies": ["127.0.0.0/8"]}))
    _, headers, _ = await _get(sidecar.url + "/x", headers={
        "X-Forwarded-For": "6.6.6.6, 198.51.100.4", "X-Request-Id": "lb-abc.123"})
    seen = backend.requests[-1]
    assert seen.header("x-forwarded-for") == "198.51.100.4, 127.0.0.1"
    assert seen.header("x-request-id") == "lb-abc.123"
    assert headers["X-Request-Id"] == "lb-abc.123"


async def test_a_trusted_proxys_request_id_carrying_a_card_number_or_token_is_replaced(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    # The id is logged and audited as is, so one that is not fit for the log is dropped.
    sidecar = await start_sidecar(base_config(
        backend.url, server={"trusted_proxies": ["127.0.0.0/8"]}))
    for spoofed in ("4111111111111111", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"):
        _, headers, _ = await _get(sidecar.url + "/x", headers={"X-Request-Id": spoofed})
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])
        assert backend.requests[-1].header("x-request-id") == headers["X-Request-Id"]


async def _raw(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


async def test_connection_header_cannot_remove_what_the_sidecar_sets(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url))
    port = int(sidecar.url.rsplit(":", 1)[1])
    answer = await _raw(port, (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Connection: X-Forwarded-For, X-Request-Id, Content-Length, X-Secret, keep-alive\r\n"
        b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\n\r\nhello"))
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"hello")
    seen = backend.requests[-1]
    assert seen.body == b"hello"
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-request-id")
    assert "x-secret" not in seen.headers
    assert "keep-alive" not in seen.headers
    assert "x-secret" not in (seen.header("connection") or "").lower()


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        pytest.param({"method": "POST", "data": b"x" * 2048}, 413, "payload_too_large",
                     id="a body over max_body_bytes is 413"),
        pytest.param({"headers": {"X-Pad": "y" * 3000}}, 431, "headers_too_large",
                     id="headers over max_header_bytes are 431"),
        pytest.param({"params": {"q": "z" * 3000}}, 414, "uri_too_long",
                     id="a target over max_url_bytes is 414"),
        pytest.param({"params": {"_method": "DELETE"}}, 400, "method_override",
                     id="a _method query override is refused"),
    ],
)
async def test_limits_answer_problem_json_and_nothing_reaches_the_backend(
    backend: Backend, start_sidecar: StartSidecar, kwargs: dict[str, Any], status: int,
    code: str,
) -> None:
    sidecar = await start_sidecar(base_config(backend.url, server={
        "max_body_bytes": "1KiB", "max_header_bytes": "2KiB", "max_url_bytes": "2KiB"}))
    got, headers, body = await _get(sidecar.url + "/x", **kwargs)
    assert got == status
    assert headers["Content-Type"] == "application/problem+json"
    data = problem(body)
    assert data["code"] == code and data["status"] == status
    assert data["request_id"] == headers["X-Request-Id"]
    assert backend.requests == []


async def test_a_chunked_upload_over_the_limit_is_refused(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url, server={"max_body_bytes": "64KiB"}))

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"z" * 4096

    status, _, body = await _get(sidecar.url + "/upload", method="POST", data=chunks())
    assert status == 413
    assert problem(body)["code"] == "payload_too_large"


async def test_an_unreachable_backend_is_502_without_internals(
    start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(f"http://127.0.0.1:{free_port()}"))
    status, headers, body = await _get(sidecar.url + "/x")
    assert status == 502
    data = problem(body)
    assert data["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in body.decode() and "Errno" not in body.decode()
    assert headers["Content-Type"] == "application/problem+json"


async def test_a_backend_slower_than_the_timeout_is_504(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url, upstream={
        "url": backend.url, "timeout": "200ms"}))
    status, _, body = await _get(sidecar.url + "/slow?s=2")
    assert status == 504
    assert problem(body)["code"] == "upstream_timeout"


async def test_a_client_that_never_finishes_its_headers_is_disconnected(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url, server={
        "header_read_timeout": "300ms"}))
    port = int(sidecar.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n")  # no final CRLF: headers never end
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # EOF when the sidecar hangs up
    assert data == b""
    writer.close()
    assert backend.requests == []


async def test_without_rbac_every_request_is_denied(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    config = base_config(backend.url)
    del config["rbac"]
    sidecar = await start_sidecar(config)
    status, _, body = await _get(sidecar.url + "/x")
    assert status == 404 and problem(body)["code"] == "no_route"
    assert backend.requests == []


async def test_requests_are_counted_by_rule_method_status(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url))
    await _get(sidecar.url + "/x")
    await _get(URL(sidecar.url + "/a/../b", encoded=True))
    reg = sidecar.metrics.registry
    assert reg.get_sample_value("sidecar_requests_total", {
        "rule": "all", "method": "GET", "status": "200", "decision": "allow"}) == 1
    assert reg.get_sample_value("sidecar_requests_total", {
        "rule": "none", "method": "GET", "status": "400", "decision": "deny"}) == 1
    assert reg.get_sample_value("sidecar_denials_total", {
        "stage": "request", "reason": "bad_path"}) == 1


def test_free_port_helper_returns_a_bindable_port() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_an_unmatched_path_is_404_and_a_wrong_method_405_with_allow(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    sidecar = await start_sidecar(base_config(backend.url, rbac={"rules": [
        {"name": "health", "path": "/v1/health", "methods": ["GET"], "public": True}]}))
    status, _, body = await _get(sidecar.url + "/v1/other")
    assert status == 404 and problem(body)["code"] == "no_route"
    status, headers, body = await _get(sidecar.url + "/v1/health", method="DELETE")
    assert status == 405 and problem(body)["code"] == "method_not_allowed"
    assert headers["Allow"] == "GET, HEAD"
    status, _, _ = await _get(sidecar.url + "/v1/health", method="HEAD")
    assert status == 200
    assert [r.method for r in backend.requests] == ["HEAD"]
