"""Token-bucket arithmetic, pure: no clock, no store.

A bucket holds up to ``capacity`` tokens and gains ``rate`` tokens per second. A request
takes ``cost`` tokens from every bucket that applies to it, or from none of them: when one
bucket is short the request is refused and nothing is taken anywhere (all or nothing).

The Redis Lua script (``bucket.lua``) runs the same refill-and-take step next to the data;
:func:`judge` turns what either store saw into the numbers clients get.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """The shape of one bucket: burst, refill rate (tokens per second) and request cost."""

    capacity: int
    rate: float
    cost: int = 1


@dataclass(frozen=True, slots=True)
class BucketState:
    """Stored state: tokens left at ``stamp`` (seconds on the store's clock)."""

    tokens: float
    stamp: float


@dataclass(frozen=True, slots=True)
class BucketDecision:
    """What one bucket says about one request."""

    allowed: bool
    """Whether the whole request was allowed (all buckets had enough)."""
    remaining: int
    """Whole tokens left after this request (before it, when refused)."""
    reset_seconds: float
    """Time until the bucket is full again."""
    retry_after: float
    """Time until this bucket holds ``cost`` tokens; 0 when it already does."""


def available(spec: BucketSpec, state: BucketState | None, now: float) -> float:
    """Tokens in the bucket at ``now``: stored tokens plus refill, capped at capacity.

    A missing state is a full bucket; a clock that went backwards refills nothing.
    """
    if state is None:
        return float(spec.capacity)
    elapsed = max(0.0, now - state.stamp)
    return min(float(spec.capacity), state.tokens + elapsed * spec.rate)


def time_to_full(spec: BucketSpec, tokens: float) -> float:
    """Seconds until a bucket holding ``tokens`` is full (then it may be forgotten)."""
    return max(0.0, (spec.capacity - tokens) / spec.rate)


def all_allowed(specs: Sequence[BucketSpec], tokens: Sequence[float]) -> bool:
    """True when every bucket holds at least its cost."""
    return all(t >= s.cost for s, t in zip(specs, tokens, strict=True))


def judge(spec: BucketSpec, tokens: float, allowed: bool) -> BucketDecision:
    """The decision for one bucket that held ``tokens`` before the request.

    ``allowed`` is the verdict over all the request's buckets: when it is True the cost
    was taken from this bucket, otherwise nothing was.
    """
    after = tokens - spec.cost if allowed else tokens
    short = 0.0 if tokens >= spec.cost else (spec.cost - tokens) / spec.rate
    return BucketDecision(
        allowed=allowed,
        remaining=max(0, math.floor(after)),
        reset_seconds=time_to_full(spec, after),
        retry_after=short,
    )


def take(
    specs: Sequence[BucketSpec], states: Sequence[BucketState | None], now: float
) -> tuple[bool, list[float], list[BucketState]]:
    """Refill every bucket to ``now`` and take the cost from all of them, or from none.

    Returns the verdict, the tokens each bucket held before the request, and the states
    to store (unchanged refills when refused, which are equivalent to the old states).
    """
    tokens = [available(s, st, now) for s, st in zip(specs, states, strict=True)]
    allowed = all_allowed(specs, tokens)
    if allowed:
        new = [BucketState(t - s.cost, now) for s, t in zip(specs, tokens, strict=True)]
    else:
        new = [BucketState(t, now) for t in tokens]
    return allowed, tokens, new


def most_constraining(decisions: Sequence[BucketDecision]) -> int:
    """Index of the bucket the ``RateLimit-*`` headers describe.

    Refused: the bucket that makes the client wait longest. Allowed: the one with the
    least remaining (ties: the one that takes longest to refill).
    """
    if not decisions:
        raise ValueError("no buckets")
    best = 0
    refused = not decisions[0].allowed
    for i in range(1, len(decisions)):
        d, b = decisions[i], decisions[best]
        if refused:
            if (d.retry_after, -d.remaining) > (b.retry_after, -b.remaining):
                best = i
        elif (d.remaining, -d.reset_seconds) < (b.remaining, -b.reset_seconds):
            best = i
    return best


def headline(specs: Sequence[BucketSpec], tokens: Sequence[float],
             allowed: bool) -> tuple[int, int, float, float]:
    """The bucket the ``RateLimit-*`` headers describe and its numbers, without a
    :class:`BucketDecision` per bucket (the hot path): ``(index, remaining, reset_seconds,
    retry_after)``, equal to :func:`judge` of every bucket then :func:`most_constraining`.
    """
    floor = math.floor
    best, best_remaining, best_key = -1, 0, 0.0
    for i, spec in enumerate(specs):
        held = tokens[i]
        if allowed:
            after = held - spec.cost
            remaining = floor(after)
            if remaining < 0:
                remaining = 0
            key = (spec.capacity - after) / spec.rate  # reset: the later, the tighter
            if key <= 0.0:
                key = 0.0
            if best < 0 or remaining < best_remaining or (
                    remaining == best_remaining and key > best_key):
                best, best_remaining, best_key = i, remaining, key
        else:
            remaining = floor(held)
            if remaining < 0:
                remaining = 0
            key = 0.0 if held >= spec.cost else (spec.cost - held) / spec.rate  # retry
            if best < 0 or key > best_key or (key == best_key and remaining < best_remaining):
                best, best_remaining, best_key = i, remaining, key
    if best < 0:
        raise ValueError("no buckets")
    spec, held = specs[best], tokens[best]
    retry = 0.0 if held >= spec.cost else (spec.cost - held) / spec.rate
    if allowed:
        return best, best_remaining, best_key, retry
    return best, best_remaining, time_to_full(spec, held), retry


def header_seconds(seconds: float) -> int:
    """Whole seconds for ``Retry-After`` / ``RateLimit-Reset``: rounded up, never early."""
    return max(0, math.ceil(seconds))
