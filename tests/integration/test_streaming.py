"""Bodies stream both ways in bounded memory: the sidecar's peak RSS is measured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

from tests.fixtures.proxy import Backend, SidecarProcess, base_config

MIB = 1024 * 1024
TRANSFER_MIB = 200
# Python, aiohttp and the loaded stages take ~60-80 MiB; the transfer may add buffers
# (socket and stream buffers, a few 64 KiB chunks) but nothing proportional to 200 MiB.
GROWTH_BUDGET_MIB = 48


def _rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"{field} not found")


async def test_a_200_mib_response_and_a_chunked_200_mib_upload_stream_in_bounded_memory(
    backend: Backend, sidecar_process: Callable[..., SidecarProcess]
) -> None:
    config = base_config(backend.url, server={"max_body_bytes": "512MiB"})
    proc = await asyncio.to_thread(sidecar_process, config)
    pid = proc.proc.pid
    async with aiohttp.ClientSession() as session:
        async with session.get(proc.url + "/x") as warmup:
            assert warmup.status == 200
        baseline = _rss_mib(pid, "VmRSS")

        received = 0
        async with session.get(proc.url + f"/big?mb={TRANSFER_MIB}") as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(MIB):
                received += len(chunk)
        assert received == TRANSFER_MIB * MIB

        async def upload() -> AsyncIterator[bytes]:
            block = b"u" * MIB
            for _ in range(TRANSFER_MIB):
                yield block

        async with session.post(proc.url + "/upload", data=upload()) as response:
            assert response.status == 200
            assert (await response.json())["received"] == TRANSFER_MIB * MIB
    peak = _rss_mib(pid, "VmHWM")
    assert peak - baseline < GROWTH_BUDGET_MIB, (
        f"peak RSS {peak:.0f} MiB vs {baseline:.0f} MiB before the transfers")
    assert await asyncio.to_thread(proc.stop) == 0
