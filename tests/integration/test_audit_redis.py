"""The Redis Stream sink against a real redis-server, through an outage."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sidecar.audit import AuditLog
from sidecar.audit.verify import Line, verify
from sidecar.metrics import Metrics
from tests.fixtures.redis import RedisServer
from tests.integration.test_audit_file import until
from tests.unit.test_audit_support import audit_config, make_ctx, sample, validator

STREAM = "sidecar:audit"


@pytest.fixture
async def client(durable_redis: RedisServer) -> AsyncIterator[Redis]:
    redis = Redis.from_url(durable_redis.url, socket_timeout=1, socket_connect_timeout=1)
    yield redis
    await redis.aclose()


async def stream_events(redis: Redis) -> list[dict[str, object]]:
    entries = await redis.xrange(STREAM)
    return [json.loads(fields[b"event"]) for _id, fields in entries or () if fields]


@pytest.mark.slow
async def test_events_survive_a_redis_outage_in_order(
        tmp_path: Path, durable_redis: RedisServer, client: Redis) -> None:
    metrics = Metrics()
    log = AuditLog(audit_config(tmp_path, {"type": "redis_stream", "stream": STREAM,
                                           "maxlen": None}, checkpoint_every=100),
                   client, metrics)
    await log.start()
    sent = 0

    async def traffic(seconds: float) -> None:
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(10):
                log.record_request(make_ctx(sent))
                sent += 1
            await asyncio.sleep(0.01)

    await traffic(1.0)
    await until(lambda: sample(metrics, "redis_stream", "written") > 0)
    durable_redis.stop()
    await traffic(3.0)  # events keep flowing while Redis is down
    assert sample(metrics, "redis_stream", "spooled") > 0
    durable_redis.start()
    await traffic(1.0)
    await log.close()

    events = await stream_events(client)
    requests = [e for e in events if e["type"] == "request"]
    assert len(requests) == sent
    assert [e["request_id"] for e in requests] == [f"req-{i}" for i in range(sent)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert await client.xlen(STREAM) == len(events)
    report = verify((Line(0, STREAM, i, json.dumps(e)) for i, e in enumerate(events, 1)), b"",
                    1, lambda _line: iter(()), strict=True)
    assert report.ok, report.broken
    v = validator()
    for event in events[::25]:
        v.validate(event)
    assert sample(metrics, "redis_stream", "written") == len(events)
    assert sample(metrics, "redis_stream", "dropped") == 0
    assert not list((tmp_path / "spool").glob("*.jsonl"))


async def test_maxlen_trims_approximately(tmp_path: Path, client: Redis) -> None:
    log = AuditLog(audit_config(tmp_path, {"type": "redis_stream", "stream": STREAM,
                                           "maxlen": 100}), client, Metrics())
    await log.start()
    for i in range(2000):
        log.record_request(make_ctx(i))
    await log.close()
    length = await client.xlen(STREAM)
    assert 100 <= length < 2000
    events = await stream_events(client)
    assert [(e["type"], e.get("reason")) for e in events[-2:]] == [
        ("checkpoint", "count"), ("checkpoint", "shutdown")]  # after 2000 events, at close
    assert events[-3]["request_id"] == "req-1999"


async def test_redis_down_at_shutdown_leaves_a_spool_the_next_start_replays(
        tmp_path: Path, durable_redis: RedisServer, client: Redis) -> None:
    cfg = audit_config(tmp_path, {"type": "redis_stream", "stream": STREAM},
                       shutdown_timeout="1s")
    durable_redis.stop()
    first_metrics = Metrics()
    first = AuditLog(cfg, client, first_metrics)
    await first.start()
    for i in range(100):
        first.record_request(make_ctx(i))
    await first.close()
    assert sample(first_metrics, "redis_stream", "spooled") == 101
    assert sample(first_metrics, "redis_stream", "dropped") == 0

    durable_redis.start()
    second = AuditLog(cfg, client, Metrics())
    await second.start()
    second.record_request(make_ctx(100))
    await second.close()
    events = await stream_events(client)
    assert [e["request_id"] for e in events if e["type"] == "request"] == [
        f"req-{i}" for i in range(101)]
    assert not list((tmp_path / "spool").glob("*.jsonl"))
