"""The real CLI as subprocesses: draining on SIGTERM, reload on SIGHUP, workers, crashes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.fixtures.proxy import Backend, SidecarProcess, base_config, http_get

StartProcess = Callable[..., SidecarProcess]


async def _metric(admin_url: str, name: str, labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(p in line for p in labels.split(",") if p):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_sigterm_drains_an_in_flight_slow_request_and_exits_0(
    backend: Backend, sidecar_process: StartProcess
) -> None:
    proc = await asyncio.to_thread(sidecar_process, base_config(backend.url))
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.get(proc.url + "/slow?s=1.5"))
        while not backend.requests:
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGTERM)
        response = await pending
        assert response.status == 200
        assert (await response.json())["ok"] is True
    assert await asyncio.to_thread(proc.proc.wait, 30) == 0
    assert "draining" in proc.log()


async def test_sighup_with_a_broken_config_keeps_the_old_one_then_a_good_one_applies(
    backend: Backend, sidecar_process: StartProcess
) -> None:
    config = base_config(backend.url)
    proc = await asyncio.to_thread(sidecar_process, config)
    assert (await asyncio.to_thread(http_get, proc.url + "/x"))[0] == 200

    proc.config_path.write_text("server: {listen: [not, a, string]}\nbogus_section: 1\n")
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while await _metric(proc.admin_url, "sidecar_config_reloads_total",
                        'result="failure"') < 1:
        assert time.monotonic() < deadline, proc.log()
        await asyncio.sleep(0.05)
    assert (await asyncio.to_thread(http_get, proc.url + "/x"))[0] == 200
    assert "bogus_section: unknown key" in proc.log()

    config["rbac"] = {"rules": [{"name": "v1", "path": "/v1/**", "methods": ["GET"],
                                 "public": True}]}
    proc.config_path.write_text(yaml.safe_dump(config))
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while await _metric(proc.admin_url, "sidecar_config_reloads_total",
                        'result="success"') < 1:
        assert time.monotonic() < deadline, proc.log()
        await asyncio.sleep(0.05)
    assert (await asyncio.to_thread(http_get, proc.url + "/x"))[0] == 404
    assert (await asyncio.to_thread(http_get, proc.url + "/v1/x"))[0] == 200
    assert proc.stop() == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


async def test_two_workers_share_the_port_and_metrics_count_both(
    backend: Backend, sidecar_process: StartProcess, tmp_path: Path
) -> None:
    mp_dir = tmp_path / "metrics"
    proc = await asyncio.to_thread(
        sidecar_process, base_config(backend.url), "--workers", "2",
        env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
    deadline = time.monotonic() + 20
    while len(_children(proc.proc.pid)) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # New connection per request: SO_REUSEPORT spreads connections, not requests. A worker
    # still importing is not listening yet, so send batches until both have served.
    sent = 0
    deadline = time.monotonic() + 30
    while True:
        for _ in range(30):
            async with aiohttp.ClientSession() as session, session.get(proc.url + "/x") as r:
                assert r.status == 200
            sent += 1
        # Workers hand their samples to the shared files at least every second.
        flushed = time.monotonic() + 15
        while (total := await _metric(proc.admin_url, "sidecar_requests_total",
                                      'rule="all",status="200"')) < sent:
            assert time.monotonic() < flushed, (total, sent)
            await asyncio.sleep(0.2)
        assert total == sent
        pids = {m.group(1) for f in mp_dir.iterdir()
                if (m := re.match(r"counter_(\d+)\.db", f.name))}
        if len(pids) == 2:
            break
        assert time.monotonic() < deadline, "the second worker never served a request"

    victim = _children(proc.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        kids = _children(proc.proc.pid)
        if len(kids) == 2 and victim not in kids:
            break
        assert time.monotonic() < deadline, "crashed worker was not restarted"
        await asyncio.sleep(0.1)
    for _ in range(10):
        assert (await asyncio.to_thread(http_get, proc.url + "/x"))[0] == 200
    assert await asyncio.to_thread(proc.stop) == 0


@pytest.mark.parametrize("workers", ["0", "x"])
def test_an_invalid_workers_flag_is_a_usage_error(workers: str) -> None:
    from tests.fixtures.proxy import run_cli

    result = run_cli("run", "--workers", workers, "-c", "/nonexistent.yaml")
    assert result.returncode in (1, 2)
