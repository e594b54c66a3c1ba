"""A circuit breaker for the shared store, on an injected clock.

Closed: calls go through; ``failures`` consecutive failures open it. Open: calls are
refused without touching the network until ``cooldown`` has passed; then exactly one call
(the probe) is let through. A successful probe closes the breaker, a failed one opens it
for another cooldown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float]) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        if self._open_until is None:
            return "closed"
        return "half_open" if self._probing else "open"

    @property
    def is_open(self) -> bool:
        """True from opening until a probe succeeds."""
        return self._open_until is not None

    def retry_in(self) -> float:
        """Seconds until the next probe may run (0 when closed or due)."""
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def allow(self) -> bool:
        """May a call use the store now? True once per cooldown while open (the probe)."""
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def success(self) -> bool:
        """Record a successful call; True when this closed an open breaker."""
        self._failures = 0
        self._probing = False
        if self._open_until is None:
            return False
        self._open_until = None
        return True

    def failure(self) -> bool:
        """Record a failed call; True when this opened a closed breaker."""
        self._failures += 1
        if self._open_until is not None:
            if self._probing:
                self._probing = False
                self._open_until = self._clock() + self._cooldown
            return False
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._cooldown
            return True
        return False

    def abandon(self) -> None:
        """A probe ended without a verdict (cancelled): let the next call probe."""
        self._probing = False
