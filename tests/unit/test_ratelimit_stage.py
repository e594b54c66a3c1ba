"""RateLimitStage on the memory store (injected clock), keys, headers and the breaker."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.context import Identity, RateLimitOutcome, RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.ratelimit import RateLimited, RateLimitStage, rate_limit_headers
from sidecar.ratelimit.breaker import CircuitBreaker
from sidecar.ratelimit.memory import MemoryStore
from sidecar.ratelimit.policy import (
    bucket_key,
    client_tag,
    compile_policy,
    ip_tag,
    key_part,
)
from sidecar.stages import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ctx(client_id: str | None = "merchant-a", ip: str = "192.0.2.1", rule: str = "pay",
        subject: str = "sub-1") -> RequestContext:
    c = RequestContext(request_id="r", method="GET", path="/x", query="", client_ip=ip,
                       peer_ip=ip, scheme="http", host="h", started=0.0)
    c.route = RouteMatch(rule=None, name=rule, params={}, public=client_id is None)
    if client_id is not None:
        c.identity = Identity(client_id=client_id, subject=subject, issuer="iss",
                              scopes=frozenset(), roles=frozenset(), claims={},
                              expires_at=0.0)
    return c


CFG: dict[str, Any] = {
    "store": "memory",
    "policies": [
        {"name": "per-client", "key": "client_id", "capacity": 5, "refill": "1/s"},
        {"name": "refunds", "key": "client_id", "capacity": 2, "refill": "1/m"},
        {"name": "per-merchant", "key": "header:X-Merchant-Id", "capacity": 1, "refill": "1/s"},
        {"name": "per-subject", "key": "subject", "capacity": 1, "refill": "1/s"},
    ],
    "default": ["per-client"],
    "unauthenticated": {"capacity": 2, "refill": "1/s"},
}


def stage(clock: Clock, **overrides: Any) -> tuple[RateLimitStage, Metrics]:
    metrics = Metrics()
    cfg = RateLimitsConfig.model_validate({**CFG, **overrides})
    return RateLimitStage(cfg, None, metrics, lambda t, f: None, clock), metrics


def sample(metrics: Metrics, policy: str, decision: str) -> float:
    value = metrics.registry.get_sample_value(
        "sidecar_ratelimit_decisions_total", {"policy": policy, "decision": decision})
    return value or 0.0


def test_the_stage_is_a_rate_limiter() -> None:
    limiter: RateLimiter = stage(Clock())[0]
    assert limiter is not None


async def test_default_and_rule_policies_apply_together_all_or_nothing() -> None:
    clock = Clock()
    limiter, metrics = stage(clock)
    c = ctx()
    first = await limiter.check_authenticated(c, ["refunds"])
    assert first is not None and (first.policy, first.remaining) == ("refunds", 1)
    await limiter.check_authenticated(c, ["refunds"])
    with pytest.raises(RateLimited) as info:
        await limiter.check_authenticated(c, ["refunds"])
    assert info.value.outcome.policy == "refunds"
    assert info.value.headers["Retry-After"] == "60"
    assert c.rate_limit is info.value.outcome
    # per-client was charged twice, not three times: the refused request took nothing.
    plain = await limiter.check_authenticated(c, [])
    assert plain is not None and (plain.policy, plain.remaining) == ("per-client", 2)
    assert sample(metrics, "refunds", "limited") == 1
    assert sample(metrics, "refunds", "allowed") == 2


async def test_a_policy_listed_by_default_and_rule_is_taken_once() -> None:
    limiter, _ = stage(Clock())
    outcome = await limiter.check_authenticated(ctx(), ["per-client"])
    assert outcome is not None and outcome.remaining == 4


async def test_refill_follows_the_injected_clock() -> None:
    clock = Clock()
    limiter, _ = stage(clock)
    for _ in range(5):
        await limiter.check_authenticated(ctx(), [])
    with pytest.raises(RateLimited):
        await limiter.check_authenticated(ctx(), [])
    clock.now += 2.0
    outcome = await limiter.check_authenticated(ctx(), [])
    assert outcome is not None and outcome.remaining == 1


async def test_header_policy_uses_the_header_value_and_a_missing_header_is_a_bucket() -> None:
    limiter, _ = stage(Clock(), default=[])
    m1 = CIMultiDict({"X-Merchant-Id": "m-1"})
    await limiter.check_authenticated(ctx(), ["per-merchant"], headers=m1)
    with pytest.raises(RateLimited):
        await limiter.check_authenticated(ctx(), ["per-merchant"], headers=m1)
    await limiter.check_authenticated(ctx(), ["per-merchant"],
                                      headers=CIMultiDict({"x-merchant-id": "m-2"}))
    await limiter.check_authenticated(ctx(), ["per-merchant"], headers=CIMultiDict())
    with pytest.raises(RateLimited):
        await limiter.check_authenticated(ctx(), ["per-merchant"])


async def test_subject_policy_counts_per_subject_within_the_client() -> None:
    limiter, _ = stage(Clock(), default=[])
    await limiter.check_authenticated(ctx(subject="s1"), ["per-subject"])
    await limiter.check_authenticated(ctx(subject="s2"), ["per-subject"])
    with pytest.raises(RateLimited):
        await limiter.check_authenticated(ctx(subject="s1"), ["per-subject"])


async def test_no_policies_means_no_outcome() -> None:
    limiter, _ = stage(Clock(), default=[], unauthenticated=None)
    assert await limiter.check_authenticated(ctx(), []) is None
    assert await limiter.check_unauthenticated(ctx(None)) is None


async def test_unknown_policy_is_an_error_not_a_silent_pass() -> None:
    limiter, _ = stage(Clock())
    with pytest.raises(ValueError, match="unknown rate-limit policy"):
        await limiter.check_authenticated(ctx(), ["nope"])


async def test_unauthenticated_is_per_ip_and_the_local_view_remembers_empty_buckets() -> None:
    clock = Clock()
    limiter, _ = stage(clock)
    a, b = ctx(None, ip="198.51.100.7"), ctx(None, ip="198.51.100.8")
    assert not limiter.unauthenticated_exhausted(a)
    await limiter.check_unauthenticated(a)
    assert not limiter.unauthenticated_exhausted(a)
    await limiter.check_unauthenticated(a)
    assert limiter.unauthenticated_exhausted(a), "the bucket is empty after the last token"
    with pytest.raises(RateLimited) as info:
        await limiter.check_unauthenticated(a)
    assert info.value.outcome.policy == "unauthenticated"
    assert not limiter.unauthenticated_exhausted(b)
    assert limiter.exhausted_error(a).headers["Retry-After"] == "1"
    clock.now += 1.0
    assert not limiter.unauthenticated_exhausted(a)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (RateLimitOutcome("p", 100, 42, 3.2, True),
         {"RateLimit-Limit": "100", "RateLimit-Remaining": "42", "RateLimit-Reset": "4"}),
        (RateLimitOutcome("p", 5, 0, 300.0, False, retry_after=59.01),
         {"RateLimit-Limit": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "300",
          "Retry-After": "60"}),
        (RateLimitOutcome("p", 5, 5, 0.0, True, degraded=True), {}),
        (None, {}),
    ],
    ids=["allowed: the three RateLimit headers, reset rounded up",
         "refused: Retry-After in whole seconds, rounded up",
         "degraded: no numbers that would describe one replica only",
         "no policy: no headers"],
)
def test_rate_limit_headers(outcome: RateLimitOutcome | None, expected: dict[str, str]) -> None:
    assert rate_limit_headers(outcome) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("merchant-a", "merchant-a"), ("2001:db8::1", "2001:db8::1"),
     ("a}b", "~"), ("", "~"), ("x" * 101, "~"), ("ü", "~")],
    ids=["a plain id stays readable", "an IPv6 address stays readable",
         "a brace is digested (it would move the hash tag)", "empty is digested",
         "long values are digested", "non-ASCII is digested"],
)
def test_key_parts(value: str, expected: str) -> None:
    part = key_part(value)
    assert part == value if expected != "~" else (part.startswith("~") and len(part) == 33)
    assert "{" not in part and "}" not in part


def test_one_request_shares_one_hash_tag_and_keys_are_stable() -> None:
    cfg = RateLimitsConfig.model_validate(CFG)
    per_client, refunds = (compile_policy(p) for p in cfg.policies[:2])
    tag = client_tag("merchant-a")
    keys = [bucket_key("sidecar:", tag, p, None) for p in (per_client, refunds)]
    assert keys == ["sidecar:rl:{c:merchant-a}:per-client", "sidecar:rl:{c:merchant-a}:refunds"]
    by_ip = bucket_key("p:", ip_tag("10.0.0.1"), per_client, "x")
    assert by_ip == "p:rl:{ip:10.0.0.1}:per-client:x"


def test_memory_store_forgets_full_buckets_and_stays_bounded() -> None:
    clock = Clock()
    cfg = RateLimitsConfig.model_validate(CFG)
    policy = compile_policy(cfg.policies[0])
    store = MemoryStore(clock, max_buckets=100)
    for i in range(300):
        store.take_now([f"k{i}"], [policy])
    assert len(store) == 100
    clock.now += 10.0  # every bucket is full again: forgotten a couple per call
    for i in range(60):
        store.take_now([f"n{i}"], [policy])
    assert len(store) == 60, "the old, full buckets are gone; the new ones stay"


def test_breaker_opens_after_n_failures_probes_once_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=1.0, clock=clock)
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.0
    assert breaker.allow(), "one probe after the cooldown"
    assert not breaker.allow(), "only one"
    assert breaker.failure() is False and breaker.state == "open"
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    assert breaker.success() is True and breaker.state == "closed"
    assert breaker.allow()


def test_breaker_abandoned_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()


def test_store_redis_without_a_client_is_refused() -> None:
    cfg = RateLimitsConfig.model_validate({**CFG, "store": "redis"})
    with pytest.raises(ValueError, match="no Redis client"):
        RateLimitStage(cfg, None, Metrics(), lambda t, f: None)


async def test_a_client_s_keys_are_compiled_once_per_rule_and_header_value() -> None:
    clock = Clock()
    limiter, _ = stage(clock)
    for merchant in ("m-1", "m-2", "m-1"):
        clock.now += 1
        headers = CIMultiDict({"x-merchant-id": merchant})
        await limiter.check_authenticated(ctx(), ("per-merchant",), headers=headers)
    await limiter.check_authenticated(ctx(), ["refunds"])
    await limiter.check_authenticated(ctx(), ("refunds",))
    assert len(limiter._plans) == 3, "m-1, m-2, and refunds (a list and a tuple alike)"
    plan = limiter._plans[("merchant-a", ("per-merchant",), None, "m-2")]
    assert plan.keys == (bucket_key("sidecar:", client_tag("merchant-a"),
                                    limiter._policies["per-client"], None),
                         bucket_key("sidecar:", client_tag("merchant-a"),
                                    limiter._policies["per-merchant"], "m-2"))


async def test_long_header_values_are_keyed_by_digest_and_never_cached() -> None:
    limiter, _ = stage(Clock())
    long = CIMultiDict({"x-merchant-id": "m" * 5000})
    await limiter.check_authenticated(ctx(), ["per-merchant"], headers=long)
    with pytest.raises(RateLimited):
        await limiter.check_authenticated(ctx(), ["per-merchant"], headers=long)
    assert limiter._plans == {}


async def test_the_compiled_key_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.ratelimit.stage._MAX_PLANS", 10)
    limiter, _ = stage(Clock())
    for i in range(25):
        await limiter.check_authenticated(ctx(f"client-{i}"), [])
        await limiter.check_unauthenticated(ctx(None, ip=f"192.0.2.{i}"))
    assert 0 < len(limiter._plans) <= 10 and 0 < len(limiter._ip_plans) <= 10
