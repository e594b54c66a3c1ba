"""Step 5 of the pipeline (and the per-IP limit before authentication).

:class:`RateLimitStage` implements :class:`sidecar.stages.RateLimiter`: it builds the
request's bucket keys (pure, :mod:`sidecar.ratelimit.policy`), asks the store to take from
all of them at once, and turns the store's answer into a :class:`RateLimitOutcome` or a
:class:`RateLimited` error. Store failures go through a circuit breaker and then the
configured ``on_store_error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.config.ratelimit import UNAUTHENTICATED_POLICY, RateLimitsConfig
from sidecar.config.server import RedisConfig
from sidecar.context import RateLimitOutcome, RequestContext
from sidecar.metrics import Metrics
from sidecar.ratelimit import bucket
from sidecar.ratelimit.breaker import CircuitBreaker
from sidecar.ratelimit.errors import RateLimited, RateLimitUnavailable, StoreError
from sidecar.ratelimit.memory import MemoryStore
from sidecar.ratelimit.policy import (
    Policy,
    bucket_key,
    bucket_value,
    client_tag,
    compile_policy,
    compile_unauthenticated,
    ip_tag,
)
from sidecar.ratelimit.redis_store import RedisStore
from sidecar.ratelimit.script import pack_check
from sidecar.redisconn import RedisClient
from sidecar.stages import EventEmitter

log = logging.getLogger("sidecar.ratelimit")

_MAX_PLANS = 8192
"""Compiled request shapes kept per stage (per client and rule; more clear the cache)."""
_MAX_CACHED_VALUE = 100
"""Longer key values (client-chosen headers) are not cached: they would grow the cache."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """One request shape compiled for the hot path (a client and its rule's policies, or
    an IP): its buckets and the pre-encoded store command."""

    policies: tuple[Policy, ...]
    specs: tuple[bucket.BucketSpec, ...]
    keys: tuple[str, ...]
    command: bytes | None
    """``EVALSHA`` of the keys (None with the memory store)."""


def rate_limit_headers(outcome: RateLimitOutcome | None) -> dict[str, str]:
    """``RateLimit-Limit/-Remaining/-Reset`` (and ``Retry-After`` when refused).

    Empty for no outcome and for degraded outcomes: while the shared store is down the
    numbers would describe this replica, not the limit. ``Retry-After`` is whole seconds,
    rounded up.
    """
    if outcome is None or outcome.degraded:
        return {}
    headers = {
        "RateLimit-Limit": str(outcome.limit),
        "RateLimit-Remaining": str(max(0, outcome.remaining)),
        "RateLimit-Reset": str(bucket.header_seconds(outcome.reset_seconds)),
    }
    if not outcome.allowed:
        headers["Retry-After"] = str(max(1, bucket.header_seconds(outcome.retry_after)))
    return headers


def outcome_of(policies: Sequence[Policy], tokens: Sequence[float], allowed: bool,
               degraded: bool = False) -> RateLimitOutcome:
    """The outcome the headers, audit and metrics describe: the most constraining bucket."""
    if len(tokens) != len(policies):
        raise ValueError("one token count per policy")
    return _outcome(policies, [p.spec for p in policies], tokens, allowed, degraded)


def _outcome(policies: Sequence[Policy], specs: Sequence[bucket.BucketSpec],
             tokens: Sequence[float], allowed: bool, degraded: bool) -> RateLimitOutcome:
    i, remaining, reset, retry = bucket.headline(specs, tokens, allowed)
    return RateLimitOutcome(policies[i].name, specs[i].capacity, remaining, reset, allowed,
                            retry, degraded)


class RateLimitStage:
    """Token-bucket limits on a memory or Redis store.

    Args:
        cfg: the ``rate_limits`` section.
        redis: the shared client (``sidecar.redisconn.build_redis``), or None.
        metrics: ``ratelimit_decisions``, ``redis_errors``, ``ratelimit_breaker_open``.
        emit: security events (``rate_limit_store_error``, once per breaker opening).
        clock: monotonic seconds, for the memory store, the breaker and the local view.
        redis_config: key prefix and timeout (defaults of :class:`RedisConfig` otherwise).
        batching: pipeline concurrent checks into one round trip (see redis_store).

    Raises:
        ValueError: ``store: redis`` without a Redis client.
    """

    def __init__(self, cfg: RateLimitsConfig, redis: RedisClient | None, metrics: Metrics,
                 emit: EventEmitter, clock: Callable[[], float] = time.monotonic, *,
                 redis_config: RedisConfig | None = None, batching: bool = True) -> None:
        rcfg = redis_config or RedisConfig()
        self._prefix = rcfg.key_prefix
        self._metrics = metrics
        self._emit = emit
        self._clock = clock
        self._mode = cfg.on_store_error
        self._policies = {p.name: compile_policy(p) for p in cfg.policies}
        self._default = tuple(self._policies[n] for n in cfg.default)
        self._unauth = (compile_unauthenticated(cfg.unauthenticated)
                        if cfg.unauthenticated is not None else None)
        self._combined: dict[tuple[str, ...], tuple[tuple[Policy, ...], bool]] = {}
        """rule policy names -> (default + rule policies, whether any key has a value)."""
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._ip_plans: dict[str, _Plan] = {}
        self._memory = MemoryStore(clock, cfg.max_local_buckets)
        self._remote: RedisStore | None = None
        if cfg.effective_store(redis is not None) == "redis":
            if redis is None:
                raise ValueError("rate_limits.store is redis but no Redis client was given")
            self._remote = RedisStore(redis, timeout=rcfg.timeout, batching=batching)
        self.breaker = CircuitBreaker(cfg.breaker_failures, cfg.breaker_cooldown, clock)
        self._exhausted: dict[str, float] = {}
        self._max_exhausted = cfg.max_local_buckets
        self._decision_counters: dict[str, dict[str, Any]] = {
            "allowed": {}, "limited": {}, "degraded": {}}
        self._redis_errors = metrics.redis_errors.labels(operation="ratelimit")
        metrics.ratelimit_breaker_open.set(0)

    # --- Lifecycle / ReadinessCheck ---------------------------------------------------

    async def start(self) -> None:
        """Cache the Lua script on Redis; a Redis that is down now is not fatal."""
        if self._remote is not None:
            try:
                await self._remote.load_script()
            except StoreError as exc:
                log.warning("rate-limit store not reachable at start: %s", exc)

    async def close(self) -> None:
        if self._remote is not None:
            await self._remote.close()

    def readiness(self) -> Mapping[str, bool]:
        """``rate_limit_store``: False while the breaker is open (Redis failing)."""
        if self._remote is None:
            return {}
        return {"rate_limit_store": not self.breaker.is_open}

    # --- RateLimiter --------------------------------------------------------------------

    async def check_unauthenticated(self, ctx: RequestContext) -> RateLimitOutcome | None:
        """Take from the client IP's ``unauthenticated`` bucket.

        Raises:
            RateLimited: the bucket is empty (429, ``Retry-After``).
            RateLimitUnavailable: the store failed under ``fail_closed`` (503).
        """
        if self._unauth is None:
            return None
        plan = self._ip_plans.get(ctx.client_ip)
        if plan is None:
            plan = self._ip_plan(ctx.client_ip, self._unauth)
        return await self._check(ctx, plan)

    def unauthenticated_exhausted(self, ctx: RequestContext) -> bool:
        """Cheap local view: was this IP's unauthenticated bucket last seen empty?"""
        until = self._exhausted.get(ctx.client_ip)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._exhausted[ctx.client_ip]
        return False

    async def check_authenticated(
        self, ctx: RequestContext, rule_policies: Sequence[str], *,
        headers: Mapping[str, str] | None = None,
    ) -> RateLimitOutcome | None:
        """Take from ``default`` and the rule's policies for ``ctx.identity``, all or none.

        ``headers`` (case-insensitive, e.g. aiohttp's ``request.headers``) feeds
        ``header:NAME`` policies; a header that is absent is its own bucket.

        Raises:
            RateLimited: a bucket is empty (429, ``Retry-After``, ``RateLimit-*``).
            RateLimitUnavailable: the store failed under ``fail_closed`` (503).
            ValueError: no identity on the context, or an unknown policy name (config
                checks make both unreachable).
        """
        identity = ctx.identity
        if identity is None:
            raise ValueError("check_authenticated needs ctx.identity")
        names = rule_policies if type(rule_policies) is tuple else tuple(rule_policies)
        combined = self._combined.get(names)
        if combined is None:
            combined = self._combine(names)
        policies, valued = combined
        if not policies:
            return None
        if not valued:
            cache_key: tuple[Any, ...] = (identity.client_id, names)
            values: tuple[str | None, ...] = ()
        else:
            values = tuple(bucket_value(p, ctx, identity, headers) for p in policies)
            cache_key = (identity.client_id, names, *values)
        plan = self._plans.get(cache_key)
        if plan is None:
            plan = self._client_plan(cache_key, identity.client_id, policies, values)
        return await self._check(ctx, plan)

    def exhausted_error(self, ctx: RequestContext) -> RateLimited:
        """A 429 for an IP :meth:`unauthenticated_exhausted` reports, without a store call."""
        assert self._unauth is not None
        wait = max(0.0, self._exhausted.get(ctx.client_ip, 0.0) - self._clock())
        outcome = RateLimitOutcome(
            policy=UNAUTHENTICATED_POLICY, limit=self._unauth.spec.capacity, remaining=0,
            reset_seconds=self._unauth.spec.capacity / self._unauth.spec.rate,
            allowed=False, retry_after=wait)
        ctx.rate_limit = outcome
        return RateLimited(outcome, rate_limit_headers(outcome))

    # --- internals ----------------------------------------------------------------------

    def _combine(self, rule_policies: tuple[str, ...]) -> tuple[tuple[Policy, ...], bool]:
        seen = {p.name for p in self._default}
        extra = []
        for name in rule_policies:
            if name not in self._policies:
                raise ValueError(f"unknown rate-limit policy {name!r}")
            if name not in seen:
                seen.add(name)
                extra.append(self._policies[name])
        policies = (*self._default, *extra)
        valued = any(p.kind != "client_id" for p in policies)
        combined = self._combined[rule_policies] = (policies, valued)
        return combined

    def _new_plan(self, policies: tuple[Policy, ...], tag: str,
                  values: Sequence[str | None]) -> _Plan:
        keys = tuple(bucket_key(self._prefix, tag, p, v)
                     for p, v in zip(policies, values, strict=True))
        command = pack_check(keys, policies) if self._remote is not None else None
        return _Plan(policies, tuple(p.spec for p in policies), keys, command)

    def _client_plan(self, cache_key: tuple[Any, ...], client_id: str,
                     policies: tuple[Policy, ...], values: tuple[str | None, ...]) -> _Plan:
        plan = self._new_plan(policies, client_tag(client_id),
                              values or (None,) * len(policies))
        if len(client_id) <= _MAX_CACHED_VALUE and all(
                v is None or len(v) <= _MAX_CACHED_VALUE for v in values):
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[cache_key] = plan
        return plan

    def _ip_plan(self, ip: str, policy: Policy) -> _Plan:
        plan = self._new_plan((policy,), ip_tag(ip), (None,))
        if len(ip) <= _MAX_CACHED_VALUE:
            if len(self._ip_plans) >= _MAX_PLANS:
                self._ip_plans.clear()
            self._ip_plans[ip] = plan
        return plan

    async def _check(self, ctx: RequestContext, plan: _Plan) -> RateLimitOutcome:
        degraded = False
        policies = plan.policies
        if self._remote is None:
            allowed, tokens = self._memory.take_now(plan.keys, policies)
        else:
            try:
                allowed, tokens = await self._take_remote(plan)
            except StoreError:
                if self._mode == "fail_closed":
                    raise RateLimitUnavailable(
                        "rate-limit store failing", headers=self._unavailable_headers()
                    ) from None
                degraded = True
                if self._mode == "fail_open":
                    return self._fail_open(ctx, policies)
                allowed, tokens = self._memory.take_now(plan.keys, policies)
        outcome = _outcome(policies, plan.specs, tokens, allowed, degraded)
        self._count(outcome.policy, "allowed" if allowed else "limited")
        ctx.rate_limit = outcome
        if policies[0] is self._unauth:
            # Remember an IP whose next request will find its bucket empty, until refill.
            spec = policies[0].spec
            left = tokens[0] - spec.cost if allowed else tokens[0]
            if left < spec.cost:
                self._remember_exhausted(ctx.client_ip, (spec.cost - left) / spec.rate)
        if not allowed:
            headers = rate_limit_headers(outcome) or {
                "Retry-After": str(max(1, bucket.header_seconds(outcome.retry_after)))}
            raise RateLimited(outcome, headers)
        return outcome

    async def _take_remote(self, plan: _Plan) -> tuple[bool, list[float]]:
        assert self._remote is not None
        breaker = self.breaker
        if not breaker.allow():
            raise StoreError("circuit breaker open")
        try:
            result = await self._remote.take(plan.keys, plan.policies, plan.command)
        except StoreError as exc:
            self._on_failure(exc)
            raise
        except BaseException:  # cancelled: no verdict, the next call may probe
            breaker.abandon()
            raise
        if breaker.success():
            log.warning("rate-limit store recovered; shared limits resume")
            self._metrics.ratelimit_breaker_open.set(0)
        return result

    def _on_failure(self, exc: StoreError) -> None:
        self._redis_errors.inc()
        if self.breaker.failure():
            self._metrics.ratelimit_breaker_open.set(1)
            cause = exc.__cause__
            log.warning("rate-limit store failing (%s); breaker open, on_store_error=%s",
                        exc, self._mode)
            self._emit("rate_limit_store_error", {
                "error": type(cause).__name__ if cause is not None else "StoreError",
                "on_store_error": self._mode,
                "breaker": "open",
            })

    def _fail_open(self, ctx: RequestContext, policies: Sequence[Policy]) -> RateLimitOutcome:
        first = policies[0]
        outcome = RateLimitOutcome(policy=first.name, limit=first.spec.capacity,
                                   remaining=first.spec.capacity, reset_seconds=0.0,
                                   allowed=True, degraded=True)
        self._count(first.name, "degraded")
        ctx.rate_limit = outcome
        return outcome

    def _count(self, policy: str, decision: str) -> None:
        counters = self._decision_counters[decision]
        counter = counters.get(policy)
        if counter is None:
            counter = counters[policy] = self._metrics.ratelimit_decisions.labels(
                policy, decision)
        counter.inc()

    def _unavailable_headers(self) -> dict[str, str]:
        wait = self.breaker.retry_in()
        return {"Retry-After": str(max(1, bucket.header_seconds(wait)))}

    def _remember_exhausted(self, ip: str, seconds: float) -> None:
        exhausted = self._exhausted
        exhausted.pop(ip, None)
        exhausted[ip] = self._clock() + seconds
        if len(exhausted) > self._max_exhausted:
            del exhausted[next(iter(exhausted))]
