"""The Redis Stream audit sink of a running sidecar survives a 3 s Redis outage under load:
afterwards the stream holds one event per request sent, in order."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from tests.fixtures.proxy import Backend, StartSidecar, base_config
from tests.fixtures.redis import RedisServer


async def test_a_redis_outage_under_load_loses_no_audit_event_and_keeps_order(
    backend: Backend, start_sidecar: StartSidecar, durable_redis: RedisServer, tmp_path: Path
) -> None:
    config = base_config(
        backend.url, redis={"url": durable_redis.url, "timeout": "200ms"},
        audit={"sinks": [{"type": "redis_stream", "stream": "audit-test"}],
               "spool_dir": str(tmp_path / "spool")})
    sidecar = await start_sidecar(config)
    sent = 0

    async def traffic(seconds: float) -> None:
        nonlocal sent
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                async with s.get(sidecar.url + f"/v1/r{sent}") as r:
                    assert r.status == 200
                    sent += 1

    await traffic(0.5)
    durable_redis.stop()
    await traffic(3.0)
    durable_redis.start()
    await traffic(0.5)

    client = Redis.from_url(durable_redis.url)
    try:
        deadline = time.monotonic() + 20
        while True:
            entries = await client.xrange("audit-test")
            events = [json.loads(fields[b"event"]) for _, fields in entries]
            requests = [e for e in events if e["type"] == "request"]
            if len(requests) >= sent or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
    assert len(requests) == sent
    assert [e["path"] for e in requests] == [f"/v1/r{i}" for i in range(sent)]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    dropped = sidecar.metrics.registry.get_sample_value(
        "sidecar_audit_events_total", {"sink": "redis_stream", "result": "dropped"})
    assert not dropped
