"""The audit stream of a running sidecar: SIGTERM under load leaves exactly one event per
completed request in the file sink, and the file verifies."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.fixtures.proxy import Backend, SidecarProcess, base_config, run_cli


async def test_sigterm_under_load_leaves_one_event_per_completed_request(
    backend: Backend, sidecar_process: Callable[..., SidecarProcess], tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    config = base_config(backend.url, audit={
        "sinks": [{"type": "file", "path": str(audit_file), "fsync": "batch"}],
        "spool_dir": str(tmp_path / "spool"), "chain_key": "k" * 32})
    proc = await asyncio.to_thread(sidecar_process, config)
    completed = 0
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal completed
        while not stop.is_set():
            try:
                async with session.get(proc.url + "/slow?s=0.05") as r:
                    await r.read()
                    if r.status == 200:
                        completed += 1
            except aiohttp.ClientError:
                return  # the listener closed: this request never started

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(16)]
        while completed < 100:
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*clients)
    assert await asyncio.to_thread(proc.proc.wait, 30) == 0

    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    requests = [e for e in events if e["type"] == "request"]
    assert len(requests) == completed
    assert all(e["status"] == 200 and e["decision"] == "allow" for e in requests)
    assert events[-1]["type"] == "checkpoint"
    verified = await asyncio.to_thread(
        run_cli, "audit", "verify", str(audit_file), "--key-env", "CHAIN_KEY",
        env={"CHAIN_KEY": "k" * 32})
    assert verified.returncode == 0, verified.stdout + verified.stderr
