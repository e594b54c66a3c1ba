"""One contract table, run against the memory store and the Redis store (real redis-server).

The memory store runs on an injected clock; Redis runs on its own clock (``TIME``), so a
``Wait`` is a real sleep there. Rates are chosen so the few milliseconds a step takes never
move a whole token, and retry times are checked within a generous window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict
from redis.asyncio import Redis

from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.config.server import RedisConfig
from sidecar.context import Identity, RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.ratelimit import RateLimited, RateLimitStage
from sidecar.redisconn import build_redis, close_redis

CFG: dict[str, Any] = {
    "policies": [
        {"name": "burst", "key": "client_id", "capacity": 3, "refill": "1/s"},
        {"name": "fast", "key": "client_id", "capacity": 2, "refill": "10/s"},
        {"name": "heavy", "key": "client_id", "capacity": 10, "refill": "1/s", "cost": 3},
        {"name": "big", "key": "client_id", "capacity": 5, "refill": "1/s"},
        {"name": "tiny", "key": "client_id", "capacity": 1, "refill": "2/s"},
        {"name": "per-route", "key": "route", "capacity": 2, "refill": "1/m"},
        {"name": "per-merchant", "key": "header:X-Merchant", "capacity": 1, "refill": "1/m"},
        {"name": "per-ip", "key": "ip", "capacity": 1, "refill": "1/m"},
    ],
    "unauthenticated": {"capacity": 2, "refill": "1/m"},
}


@dataclass(frozen=True)
class Take:
    policies: tuple[str, ...] = ()
    allowed: bool = True
    remaining: int | None = None
    policy: str | None = None
    retry: tuple[float, float] | None = None
    """Refused: ``retry_after`` must lie in this window."""
    retry_header: str | None = None
    client: str | None = "merchant-a"
    """None: the unauthenticated per-IP check."""
    ip: str = "192.0.2.10"
    rule: str = "pay"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    seconds: float


CASES: dict[str, list[Take | Wait]] = {
    "a burst of capacity passes, the next request is refused until one token refills": [
        Take(("burst",), remaining=2), Take(("burst",), remaining=1), Take(("burst",), remaining=0),
        Take(("burst",), allowed=False, remaining=0, retry=(0.8, 1.0), retry_header="1"),
    ],
    "tokens refill over time, up to capacity": [
        Take(("fast",), remaining=1), Take(("fast",), remaining=0), Take(("fast",), allowed=False),
        Wait(0.35), Take(("fast",), remaining=1),
    ],
    "a request with cost 3 takes three tokens and waits for the missing ones": [
        Take(("heavy",), remaining=7), Take(("heavy",), remaining=4), Take(("heavy",), remaining=1),
        Take(("heavy",), allowed=False, remaining=1, retry=(1.8, 2.0), retry_header="2"),
    ],
    "a refused request takes nothing from its other buckets (all or nothing)": [
        Take(("big", "tiny"), policy="tiny", remaining=0),
        Take(("big", "tiny"), allowed=False, policy="tiny"),
        Take(("big",), remaining=3),
    ],
    "the outcome describes the policy with the least remaining": [
        Take(("big", "burst"), policy="burst", remaining=2),
    ],
    "Retry-After is whole seconds rounded up": [
        Take(("tiny",)), Take(("tiny",), allowed=False, retry=(0.3, 0.5), retry_header="1"),
    ],
    "clients have separate buckets": [
        Take(("tiny",)), Take(("tiny",), allowed=False), Take(("tiny",), client="merchant-b"),
    ],
    "a route policy counts per client and route": [
        Take(("per-route",)), Take(("per-route",)), Take(("per-route",), allowed=False),
        Take(("per-route",), rule="refund"),
    ],
    "a header policy counts per value, and a missing header is its own bucket": [
        Take(("per-merchant",), headers={"X-Merchant": "m-1"}),
        Take(("per-merchant",), headers={"x-merchant": "m-1"}, allowed=False),
        Take(("per-merchant",), headers={"X-Merchant": "m-2"}),
        Take(("per-merchant",)), Take(("per-merchant",), allowed=False),
    ],
    "an ip policy counts per client and address": [
        Take(("per-ip",)), Take(("per-ip",), allowed=False), Take(("per-ip",), ip="192.0.2.11"),
    ],
    "unauthenticated requests count per IP": [
        Take(client=None, remaining=1), Take(client=None, remaining=0),
        Take(client=None, allowed=False, policy="unauthenticated", retry=(59.0, 60.0),
             retry_header="60"),
        Take(client=None, ip="192.0.2.99", remaining=1),
    ],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    stage: RateLimitStage
    wait: Callable[[float], Awaitable[None]]


def context(step: Take) -> RequestContext:
    c = RequestContext(request_id="r", method="POST", path="/p", query="", client_ip=step.ip,
                       peer_ip=step.ip, scheme="http", host="h", started=0.0)
    c.route = RouteMatch(rule=None, name=step.rule, params={}, public=step.client is None)
    if step.client is not None:
        c.identity = Identity(client_id=step.client, subject="s", issuer="i",
                              scopes=frozenset(), roles=frozenset(), claims={},
                              expires_at=0.0)
    return c


@pytest.fixture(params=["memory", "redis", "redis-unbatched"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    cfg = RateLimitsConfig.model_validate(CFG)
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Harness(RateLimitStage(cfg, None, Metrics(), lambda t, f: None, clock), advance)
        return
    url = request.getfixturevalue("redis_url")
    rcfg = RedisConfig(url=url, timeout="2s")
    client = build_redis(rcfg)
    stage = RateLimitStage(cfg, client, Metrics(), lambda t, f: None, redis_config=rcfg,
                           batching=request.param == "redis")
    await stage.start()
    try:
        yield Harness(stage, asyncio.sleep)
    finally:
        await stage.close()
        await close_redis(client)


async def run_step(stage: RateLimitStage, step: Take) -> None:
    ctx = context(step)
    error: RateLimited | None = None
    try:
        if step.client is None:
            outcome = await stage.check_unauthenticated(ctx)
        else:
            outcome = await stage.check_authenticated(
                ctx, step.policies, headers=CIMultiDict(step.headers))
    except RateLimited as exc:
        error, outcome = exc, exc.outcome
    assert outcome is not None
    assert outcome.allowed == step.allowed, step
    assert (error is None) == step.allowed, step
    if step.remaining is not None:
        assert outcome.remaining == step.remaining, step
    if step.policy is not None:
        assert outcome.policy == step.policy, step
    if step.retry is not None:
        low, high = step.retry
        assert low <= outcome.retry_after <= high + 1e-6, (step, outcome)
    if step.retry_header is not None:
        assert error is not None and error.headers["Retry-After"] == step.retry_header
    if error is not None:
        assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(error.headers)


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
async def test_store_contract(harness: Harness, steps: list[Take | Wait]) -> None:
    for step in steps:
        if isinstance(step, Wait):
            await harness.wait(step.seconds)
        else:
            await run_step(harness.stage, step)


async def test_concurrent_checks_of_one_bucket_never_oversell(harness: Harness) -> None:
    stage = harness.stage
    results = await asyncio.gather(*(run_one(stage) for _ in range(40)),
                                   return_exceptions=True)
    allowed = [r for r in results if r is True]
    assert len(allowed) == 3, results  # burst: capacity 3, 1/s refill
    assert all(isinstance(r, RateLimited) for r in results if r is not True)


async def run_one(stage: RateLimitStage) -> bool:
    await stage.check_authenticated(context(Take()), ("burst",))
    return True


async def test_redis_keys_expire_when_the_bucket_would_be_full(redis_url: str) -> None:
    rcfg = RedisConfig(url=redis_url, timeout="2s", key_prefix="t:")
    client = build_redis(rcfg)
    stage = RateLimitStage(RateLimitsConfig.model_validate(CFG), client, Metrics(),
                           lambda t, f: None, redis_config=rcfg)
    try:
        await stage.check_authenticated(context(Take()), ("burst", "per-route"))
        raw = Redis.from_url(redis_url)
        keys = sorted(k.decode() for k in await raw.keys("t:*"))
        assert keys == ["t:rl:{c:merchant-a}:burst", "t:rl:{c:merchant-a}:per-route:pay"]
        ttl_burst = await raw.pttl("t:rl:{c:merchant-a}:burst")
        ttl_route = await raw.pttl("t:rl:{c:merchant-a}:per-route:pay")
        assert 900 <= ttl_burst <= 1000  # one token short at 1/s
        assert 59_000 <= ttl_route <= 60_000  # one token short at 1/m
        await raw.aclose()
    finally:
        await stage.close()
        await close_redis(client)
