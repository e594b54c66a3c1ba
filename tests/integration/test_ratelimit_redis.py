"""The Redis store against a real redis-server: round trips, script reloads, outages.

Outages are real: the session's redis-server is killed and restarted, or the store points
at a listener that accepts connections and never answers (to count what the breaker saves:
bytes and connections, not time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.config.server import RedisConfig
from sidecar.context import Identity, RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.ratelimit import RateLimited, RateLimitStage, RateLimitUnavailable, rate_limit_headers
from sidecar.redisconn import build_redis, close_redis, ping
from tests.fixtures.redis import BlackHole, RedisServer

POLICIES: list[dict[str, Any]] = [
    {"name": "per-client", "key": "client_id", "capacity": 5, "refill": "1/m"},
    {"name": "per-route", "key": "route", "capacity": 100, "refill": "1/m"},
]


def ctx(client_id: str = "merchant-a") -> RequestContext:
    c = RequestContext(request_id="r", method="GET", path="/p", query="", client_ip="192.0.2.1",
                       peer_ip="192.0.2.1", scheme="http", host="h", started=0.0)
    c.route = RouteMatch(rule=None, name="pay", params={}, public=False)
    c.identity = Identity(client_id=client_id, subject="s", issuer="i", scopes=frozenset(),
                          roles=frozenset(), claims={}, expires_at=0.0)
    return c


@dataclass
class Events:
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, event_type: str, fields: Any) -> None:
        self.seen.append((event_type, dict(fields)))


@dataclass
class Rig:
    stage: RateLimitStage
    metrics: Metrics
    events: Events
    client: Any

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    @property
    def redis_errors(self) -> float:
        return self.value("sidecar_redis_errors_total", {"operation": "ratelimit"})


async def make_rig(url: str, on_store_error: str = "fail_closed", timeout: str = "250ms",
                   **extra: Any) -> Rig:
    cfg = RateLimitsConfig.model_validate({
        "store": "redis", "on_store_error": on_store_error, "policies": POLICIES,
        "default": ["per-client"], "breaker_failures": 3, **extra})
    rcfg = RedisConfig(url=url, timeout=timeout)
    client = build_redis(rcfg)
    metrics, events = Metrics(), Events()
    stage = RateLimitStage(cfg, client, metrics, events, redis_config=rcfg)
    await stage.start()
    return Rig(stage, metrics, events, client)


async def close_rig(rig: Rig) -> None:
    await rig.stage.close()
    await close_redis(rig.client)


@pytest.fixture
def restore_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session server, started again after a test that kills it."""
    yield redis_server
    if redis_server.proc is None:
        redis_server.start()




async def top_level_calls(raw: Redis) -> dict[str, int]:
    """Calls per command sent by clients (commands a script runs are left out)."""
    stats = await raw.info("commandstats")
    inner = {"cmdstat_time", "cmdstat_mget", "cmdstat_set"}
    return {k: int(v["calls"]) for k, v in stats.items() if k not in inner}


async def test_every_check_is_exactly_one_command(redis_url: str) -> None:
    rig = await make_rig(redis_url)
    raw = Redis.from_url(redis_url)
    try:
        await raw.config_resetstat()
        for i in range(20):  # one at a time
            await rig.stage.check_authenticated(ctx(f"seq-{i}"), ["per-route"])
        await asyncio.gather(*(  # concurrent: pipelined together
            rig.stage.check_authenticated(ctx(f"con-{i}"), ["per-route"]) for i in range(30)))
        calls = await top_level_calls(raw)
        handshakes = calls.pop("cmdstat_hello", 0)  # new pooled connections, not checks
        assert handshakes <= 4
        assert calls == {"cmdstat_config|resetstat": 1, "cmdstat_evalsha": 50}
    finally:
        await raw.aclose()
        await close_rig(rig)


async def test_a_flushed_script_is_reloaded_transparently(redis_url: str) -> None:
    rig = await make_rig(redis_url)
    raw = Redis.from_url(redis_url)
    try:
        await rig.stage.check_authenticated(ctx(), [])
        await raw.script_flush()
        await raw.config_resetstat()
        outcome = await rig.stage.check_authenticated(ctx(), [])
        assert outcome is not None and outcome.remaining == 3
        await rig.stage.check_authenticated(ctx(), [])
        stats = await raw.info("commandstats")
        assert stats["cmdstat_eval"]["calls"] == 1, "NOSCRIPT is retried once with EVAL"
        assert stats["cmdstat_evalsha"]["calls"] == 2
        assert rig.redis_errors == 0
    finally:
        await raw.aclose()
        await close_rig(rig)


async def test_fail_closed_opens_the_breaker_then_answers_without_the_network(
    black_hole: BlackHole,
) -> None:
    port = black_hole.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rig = await make_rig(f"redis://127.0.0.1:{port}/0", timeout="50ms")
    try:
        for _ in range(3):
            with pytest.raises(RateLimitUnavailable):
                await rig.stage.check_authenticated(ctx(), [])
        assert rig.stage.breaker.state == "open"
        assert rig.redis_errors == 3
        assert rig.value("sidecar_ratelimit_breaker_open") == 1
        connections, sent = black_hole.connections, black_hole.bytes
        for _ in range(200):
            with pytest.raises(RateLimitUnavailable) as info:
                await rig.stage.check_authenticated(ctx(), [])
        assert info.value.headers["Retry-After"] == "1"
        assert (black_hole.connections, black_hole.bytes) == (connections, sent)
        assert rig.redis_errors == 3, "refusals while open are not store calls"
        assert [e for e, _ in rig.events.seen] == ["rate_limit_store_error"]
        assert rig.events.seen[0][1]["on_store_error"] == "fail_closed"
        assert rig.stage.readiness() == {"rate_limit_store": False}
    finally:
        await close_rig(rig)


async def test_redis_killed_fail_closed_is_503(redis_url: str, restore_redis: RedisServer) -> None:
    rig = await make_rig(redis_url)
    try:
        await rig.stage.check_authenticated(ctx(), [])
        restore_redis.stop()
        for _ in range(5):
            with pytest.raises(RateLimitUnavailable) as info:
                await rig.stage.check_authenticated(ctx(), [])
        assert info.value.status == 503 and info.value.code == "rate_limit_unavailable"
        assert rig.redis_errors == 3
        assert len(rig.events.seen) == 1
    finally:
        await close_rig(rig)


async def test_redis_killed_fail_open_allows_degraded(redis_url: str,
                                                      restore_redis: RedisServer) -> None:
    rig = await make_rig(redis_url, on_store_error="fail_open")
    try:
        restore_redis.stop()
        for _ in range(10):
            outcome = await rig.stage.check_authenticated(ctx(), [])
            assert outcome is not None and outcome.allowed and outcome.degraded
        assert rate_limit_headers(outcome) == {}
        assert rig.value("sidecar_ratelimit_decisions_total",
                         {"policy": "per-client", "decision": "degraded"}) == 10
        assert rig.redis_errors == 3
    finally:
        await close_rig(rig)


async def test_redis_killed_local_limits_in_process(redis_url: str,
                                                    restore_redis: RedisServer) -> None:
    rig = await make_rig(redis_url, on_store_error="local")
    try:
        restore_redis.stop()
        for _ in range(5):
            outcome = await rig.stage.check_authenticated(ctx(), [])
            assert outcome is not None and outcome.allowed and outcome.degraded
        with pytest.raises(RateLimited) as info:
            await rig.stage.check_authenticated(ctx(), [])
        assert info.value.headers == {"Retry-After": "60"}, "local numbers are not advertised"
        other = await rig.stage.check_authenticated(ctx("merchant-b"), [])
        assert other is not None and other.allowed
    finally:
        await close_rig(rig)


async def test_restarted_redis_resumes_shared_limits_within_two_seconds(
    redis_url: str, restore_redis: RedisServer,
) -> None:
    first = await make_rig(redis_url)
    second = await make_rig(redis_url)
    try:
        restore_redis.stop()
        for _ in range(3):
            with pytest.raises(RateLimitUnavailable):
                await first.stage.check_authenticated(ctx(), [])
        assert first.stage.breaker.is_open
        restore_redis.start()
        restarted = time.monotonic()
        while True:
            try:
                outcome = await first.stage.check_authenticated(ctx(), [])
                break
            except RateLimitUnavailable:
                assert time.monotonic() - restarted < 2.0, "limits did not resume within 2 s"
                await asyncio.sleep(0.05)
        assert outcome is not None and outcome.remaining == 4
        shared = await second.stage.check_authenticated(ctx(), [])
        assert shared is not None and shared.remaining == 3, "both replicas see one bucket"
        assert not first.stage.breaker.is_open
        assert first.value("sidecar_ratelimit_breaker_open") == 0
        assert len(first.events.seen) == 1
        assert await ping(first.client, 1.0)
    finally:
        await close_rig(first)
        await close_rig(second)


async def test_start_with_redis_down_is_not_fatal(restore_redis: RedisServer) -> None:
    url = restore_redis.url
    restore_redis.stop()
    rig = await make_rig(url, on_store_error="fail_open")
    try:
        assert not await ping(rig.client, 0.2)
        outcome = await rig.stage.check_authenticated(ctx(), [])
        assert outcome is not None and outcome.degraded
    finally:
        await close_rig(rig)
