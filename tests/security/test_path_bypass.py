"""The path-ambiguity corpus over the wire: every case is 400 and reaches nothing.

The config puts a public ``/**`` wildcard beside protected routes, the layout where a
normalisation difference would turn into an authorisation bypass. Requests are written as
raw bytes on a socket so no client library normalises them first.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fixtures.proxy import Backend, StartSidecar, base_config
from tests.unit.test_pathsafety import AMBIGUOUS_PATHS

RBAC = {
    "rules": [
        {"name": "public", "path": "/**", "methods": ["GET", "POST"], "public": True},
        {"name": "admin", "path": "/v1/admin", "methods": ["GET", "POST"],
         "require": {"any_roles": ["admin"]}},
        {"name": "admin-sub", "path": "/v1/admin/**", "methods": ["GET", "POST"],
         "require": {"any_roles": ["admin"]}},
    ]
}
# Cases a conforming HTTP parser already refuses (plain 400 before the sidecar sees them,
# as SPEC allows): control characters, spaces, non-origin-form targets.
PARSER_REJECTS = {"", "*", "http://evil/v1/admin", "v1/admin", "/v1/\x00", "/v1/\ttab", "/v1/a b",
                  "/v1/caf\u00e9", "/v1/a#frag"}


async def _raw_request(port: int, target: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("path", AMBIGUOUS_PATHS)
async def test_an_ambiguous_path_is_400_and_never_reaches_the_backend(
    path: str, backend: Backend, start_sidecar: StartSidecar
) -> None:
    config = base_config(backend.url, rbac=RBAC)
    sidecar = await start_sidecar(config)
    port = int(sidecar.url.rsplit(":", 1)[1])
    status, body = await _raw_request(port, path.encode("utf-8", "surrogateescape"))
    assert status == 400
    if path not in PARSER_REJECTS:
        problem = json.loads(body)
        assert problem["code"] == "bad_path"
    assert backend.requests == []
