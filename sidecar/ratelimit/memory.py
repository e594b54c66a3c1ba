"""In-process bucket store: the ``memory`` store and the ``local`` fallback.

Same arithmetic as the Redis script (both use :mod:`sidecar.ratelimit.bucket`), on an
injected monotonic clock. Bounded: a bucket is forgotten once it has refilled to full
(then it is indistinguishable from a new one); when the bound is reached anyway, the
least recently used bucket is dropped, which can only hand a client a fresh burst.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sidecar.ratelimit import bucket
from sidecar.ratelimit.policy import Policy

_PURGE_PER_CALL = 2


class MemoryStore:
    """Buckets in a dict ordered by last update; at most ``max_buckets`` of them."""

    def __init__(self, clock: Callable[[], float], max_buckets: int = 100_000) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[str, tuple[bucket.BucketState, float]] = {}
        """key -> (state, time it is full again)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def take_now(self, keys: Sequence[str],
                 policies: Sequence[Policy]) -> tuple[bool, list[float]]:
        """Take every bucket's cost, or none; return the verdict and tokens held before."""
        now = self._clock()
        buckets = self._buckets
        states = []
        for key in keys:
            entry = buckets.get(key)
            states.append(None if entry is None else entry[0])
        specs = [p.spec for p in policies]
        allowed, tokens, new = bucket.take(specs, states, now)
        if allowed:
            for key, spec, state in zip(keys, specs, new, strict=True):
                buckets.pop(key, None)  # re-insert at the end: most recently used
                buckets[key] = (state, now + bucket.time_to_full(spec, state.tokens))
            self._evict(now)
        return allowed, tokens

    async def take(self, keys: Sequence[str],
                   policies: Sequence[Policy]) -> tuple[bool, list[float]]:
        return self.take_now(keys, policies)

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        for _ in range(_PURGE_PER_CALL):
            oldest = next(iter(buckets), None)
            if oldest is None or buckets[oldest][1] > now:
                break
            del buckets[oldest]
        while len(buckets) > self._max:
            del buckets[next(iter(buckets))]
