"""Rate-limit denials (client-facing) and the store failure (internal)."""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.context import RateLimitOutcome
from sidecar.problem import SidecarError


class RateLimited(SidecarError):
    """429: a bucket that applies to the request is empty.

    Carries ``Retry-After`` and the ``RateLimit-*`` headers, and the outcome for audit.
    """

    status, code, title, stage = 429, "rate_limited", "Too many requests", "ratelimit"
    detail = "The rate limit for this client was exceeded; retry after the indicated time."

    def __init__(self, outcome: RateLimitOutcome, headers: Mapping[str, str]) -> None:
        super().__init__(f"policy {outcome.policy} exhausted", headers=headers)
        self.outcome = outcome


class RateLimitUnavailable(SidecarError):
    """503: the shared store failed and ``on_store_error`` is ``fail_closed``."""

    status, code, title, stage = 503, "rate_limit_unavailable", "Service unavailable", "ratelimit"
    detail = "Rate limits cannot be checked right now; retry shortly."


class StoreError(Exception):
    """The bucket store failed (timeout, connection, Redis error) or its breaker is open.

    Internal: the stage turns it into the ``on_store_error`` behaviour; never rendered.
    """
