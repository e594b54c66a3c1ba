"""Token-bucket arithmetic (pure): refill, take, all-or-nothing, the numbers clients see."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.ratelimit.bucket import (
    BucketDecision,
    BucketSpec,
    BucketState,
    available,
    header_seconds,
    headline,
    judge,
    most_constraining,
    take,
    time_to_full,
)

SPEC = BucketSpec(capacity=10, rate=2.0, cost=1)


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (None, 0.0, 10.0),
        (BucketState(0.0, 0.0), 0.0, 0.0),
        (BucketState(0.0, 0.0), 1.5, 3.0),
        (BucketState(4.0, 10.0), 100.0, 10.0),
        (BucketState(4.0, 10.0), 9.0, 4.0),
    ],
    ids=[
        "a missing bucket is full",
        "no time passed refills nothing",
        "refill is rate times elapsed",
        "refill stops at capacity",
        "a clock that went backwards refills nothing",
    ],
)
def test_available(state: BucketState | None, now: float, expected: float) -> None:
    assert available(SPEC, state, now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("spec", "tokens", "allowed", "expected"),
    [
        (SPEC, 10.0, True, BucketDecision(True, 9, 0.5, 0.0)),
        (SPEC, 1.0, True, BucketDecision(True, 0, 5.0, 0.0)),
        (SPEC, 0.5, False, BucketDecision(False, 0, 4.75, 0.25)),
        (SPEC, 5.0, False, BucketDecision(False, 5, 2.5, 0.0)),
        (BucketSpec(10, 1.0, cost=3), 2.0, False, BucketDecision(False, 2, 8.0, 1.0)),
        (BucketSpec(5, 1 / 60, cost=1), 0.0, False, BucketDecision(False, 0, 300.0, 60.0)),
    ],
    ids=[
        "allowed from a full bucket leaves capacity minus cost",
        "taking the last token leaves zero",
        "refused: retry after the missing half token refills",
        "a bucket with enough tokens refused by another bucket keeps them all",
        "cost larger than the tokens held waits for the difference",
        "one per minute: a minute to wait, five to be full",
    ],
)
def test_judge(spec: BucketSpec, tokens: float, allowed: bool, expected: BucketDecision) -> None:
    got = judge(spec, tokens, allowed)
    assert got.allowed == expected.allowed
    assert got.remaining == expected.remaining
    assert got.reset_seconds == pytest.approx(expected.reset_seconds)
    assert got.retry_after == pytest.approx(expected.retry_after)


def test_burst_then_refusal_then_refill() -> None:
    states: list[BucketState | None] = [None]
    allowed_count = 0
    for _ in range(12):
        ok, _, new = take([SPEC], states, 0.0)
        allowed_count += ok
        states = list(new)
    assert allowed_count == 10
    ok, tokens, _ = take([SPEC], states, 0.5)
    assert ok and tokens[0] == pytest.approx(1.0)


def test_all_or_nothing_takes_nothing_when_one_bucket_is_short() -> None:
    big, small = BucketSpec(10, 1.0), BucketSpec(1, 1.0)
    ok, _, states = take([big, small], [None, None], 0.0)
    assert ok
    ok, tokens, after = take([big, small], states, 0.0)
    assert not ok
    assert tokens == [9.0, 0.0]
    assert [s.tokens for s in after] == [9.0, 0.0], "the big bucket must not be charged"


@pytest.mark.parametrize(
    ("decisions", "index"),
    [
        ([BucketDecision(True, 5, 1, 0), BucketDecision(True, 2, 1, 0)], 1),
        ([BucketDecision(True, 2, 1, 0), BucketDecision(True, 2, 9, 0)], 1),
        ([BucketDecision(False, 3, 1, 0), BucketDecision(False, 0, 1, 7.0),
          BucketDecision(False, 0, 1, 2.0)], 1),
    ],
    ids=[
        "allowed: the policy with the least remaining",
        "allowed, equal remaining: the one that takes longest to refill",
        "refused: the policy that makes the client wait longest",
    ],
)
def test_most_constraining(decisions: list[BucketDecision], index: int) -> None:
    assert most_constraining(decisions) == index


@pytest.mark.parametrize(("seconds", "header"), [(0.0, 0), (0.01, 1), (1.0, 1), (1.2, 2)],
                         ids=["zero", "a fraction rounds up", "whole stays", "never early"])
def test_header_seconds(seconds: float, header: int) -> None:
    assert header_seconds(seconds) == header


@given(
    capacity=st.integers(1, 1000),
    rate=st.floats(0.01, 1000),
    cost=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.floats(0, 5), st.booleans()), max_size=40),
)
def test_never_more_than_capacity_plus_refill(capacity: int, rate: float, cost: int,
                                              steps: list[tuple[float, bool]]) -> None:
    spec = BucketSpec(capacity, rate, min(cost, capacity))
    state: BucketState | None = None
    now = 0.0
    taken = 0
    for dt, _ in steps:
        now += dt
        ok, tokens, new = take([spec], [state], now)
        state = new[0]
        decision = judge(spec, tokens[0], ok)
        assert 0 <= decision.remaining <= capacity
        assert decision.reset_seconds <= capacity / rate + 1e-6
        if ok:
            taken += spec.cost
            assert decision.retry_after == 0
        else:
            assert decision.retry_after > 0
            assert math.isclose(decision.retry_after * rate + tokens[0], spec.cost, rel_tol=1e-9)
    assert taken <= capacity + rate * now + 1e-6


def test_time_to_full() -> None:
    assert time_to_full(SPEC, 10.0) == 0.0
    assert time_to_full(SPEC, 0.0) == 5.0


@given(
    buckets=st.lists(st.tuples(st.integers(1, 50), st.floats(0.01, 100), st.integers(1, 50),
                               st.floats(-5, 60)), min_size=1, max_size=5),
    allowed=st.booleans(),
)
def test_headline_equals_judging_every_bucket_then_the_most_constraining(
    buckets: list[tuple[int, float, int, float]], allowed: bool,
) -> None:
    specs = [BucketSpec(c, r, min(k, c)) for c, r, k, _ in buckets]
    tokens = [min(float(c), t) for c, _, _, t in buckets]
    decisions = [judge(s, t, allowed) for s, t in zip(specs, tokens, strict=True)]
    i = most_constraining(decisions)
    d = decisions[i]
    assert headline(specs, tokens, allowed) == (i, d.remaining, d.reset_seconds, d.retry_after)


def test_headline_of_no_buckets_is_an_error() -> None:
    with pytest.raises(ValueError, match="no buckets"):
        headline([], [], True)
