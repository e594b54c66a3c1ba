"""The Redis store on a 3-master Redis Cluster and on a Sentinel-managed master."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.config.server import RedisConfig
from sidecar.context import Identity, RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.ratelimit import RateLimitStage, RateLimitUnavailable
from sidecar.redisconn import build_redis, close_redis
from sidecar.stages import discard_event
from tests.fixtures.redis_topologies import RedisClusterNodes, RedisSentinelSetup
from tests.integration.test_ratelimit_accuracy import CAPACITY, RATE, check_accuracy, drive

pytestmark = pytest.mark.slow


def ctx(client_id: str) -> RequestContext:
    c = RequestContext(request_id="r", method="GET", path="/p", query="", client_ip="192.0.2.1",
                       peer_ip="192.0.2.1", scheme="http", host="h", started=0.0)
    c.route = RouteMatch(rule=None, name="pay", params={}, public=False)
    c.identity = Identity(client_id=client_id, subject="s", issuer="i", scopes=frozenset(),
                          roles=frozenset(), claims={}, expires_at=0.0)
    return c


def stage_for(redis: dict[str, Any]) -> tuple[RateLimitStage, Any]:
    cfg = RateLimitsConfig.model_validate({
        "store": "redis",
        "policies": [
            {"name": "per-client", "key": "client_id", "capacity": 10, "refill": "1/m"},
            {"name": "per-route", "key": "route", "capacity": 100, "refill": "1/m"},
        ],
        "default": ["per-client", "per-route"]})
    rcfg = RedisConfig.model_validate({"timeout": "250ms", **redis})
    client = build_redis(rcfg)
    return RateLimitStage(cfg, client, Metrics(), discard_event, redis_config=rcfg), client


def sentinel_config(setup: RedisSentinelSetup) -> dict[str, Any]:
    return {"url": "redis://ignored:6379/0", "mode": "sentinel",
            "sentinel": {"master": setup.master_name,
                         "nodes": [f"127.0.0.1:{setup.sentinel_port}"]}}


async def test_cluster_spreads_clients_over_nodes_and_keeps_each_request_in_one_slot(
    redis_cluster: RedisClusterNodes,
) -> None:
    stage, client = stage_for({"url": redis_cluster.url, "mode": "cluster"})
    await stage.start()
    try:
        outcomes = await asyncio.gather(
            *(stage.check_authenticated(ctx(f"client-{i}"), ()) for i in range(40)))
        assert all(o is not None and o.allowed and o.remaining == 9 for o in outcomes)
        again = await stage.check_authenticated(ctx("client-0"), ())
        assert again is not None and again.remaining == 8
        sizes = []
        for node in redis_cluster.nodes:
            raw = Redis(port=node.port)
            sizes.append(await raw.dbsize())
            await raw.aclose()
        assert sum(sizes) == 80 and sum(1 for s in sizes if s) >= 2, sizes
    finally:
        await stage.close()
        await close_redis(client)


async def test_cluster_reloads_a_flushed_script(redis_cluster: RedisClusterNodes) -> None:
    stage, client = stage_for({"url": redis_cluster.url, "mode": "cluster"})
    await stage.start()
    try:
        for node in redis_cluster.nodes:
            raw = Redis(port=node.port)
            await raw.script_flush()
            await raw.aclose()
        single = await stage.check_authenticated(ctx("flush-0"), ())
        batch = await asyncio.gather(
            *(stage.check_authenticated(ctx(f"flush-{i}"), ()) for i in range(1, 20)))
        assert single is not None and single.allowed
        assert all(o is not None and o.allowed for o in batch)
    finally:
        await stage.close()
        await close_redis(client)


async def test_cluster_two_limiters_share_one_bucket_accurately(
    redis_cluster: RedisClusterNodes,
) -> None:
    redis = {"url": redis_cluster.url, "mode": "cluster"}
    start = time.time() + 0.3
    results = await asyncio.gather(
        *(drive(redis, start, 2.0, CAPACITY, RATE) for _ in range(2)))
    check_accuracy(list(results), CAPACITY, RATE)


async def test_sentinel_two_limiters_share_one_bucket_accurately(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    redis = sentinel_config(redis_sentinel)
    start = time.time() + 0.3
    results = await asyncio.gather(
        *(drive(redis, start, 2.0, CAPACITY, RATE) for _ in range(2)))
    check_accuracy(list(results), CAPACITY, RATE)


async def test_sentinel_failover_is_followed_without_rebuilding_the_stage(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    stage, client = stage_for(sentinel_config(redis_sentinel))
    await stage.start()
    try:
        for _ in range(3):
            await stage.check_authenticated(ctx("merchant-a"), ())
        master = Redis(port=redis_sentinel.master.port)
        assert await master.execute_command("WAIT", 1, 2000) == 1  # the replica has it all
        await master.aclose()
        redis_sentinel.kill_master()
        killed = time.monotonic()
        failures = 0
        while True:
            try:
                outcome = await stage.check_authenticated(ctx("merchant-a"), ())
                break
            except RateLimitUnavailable:
                failures += 1
                assert time.monotonic() - killed < 30, "the limiter never followed the failover"
                await asyncio.sleep(0.1)
        assert failures > 0
        assert redis_sentinel.master_port() == redis_sentinel.replica.port
        assert outcome is not None and outcome.remaining == 6, "buckets survive the failover"
    finally:
        await stage.close()
        await close_redis(client)
