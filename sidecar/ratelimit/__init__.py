"""Token-bucket rate limits: pure bucket math, a memory store and a Redis store (one Lua
script per request), behind :class:`RateLimitStage` (``sidecar.stages.RateLimiter``)."""

from sidecar.ratelimit.errors import RateLimited, RateLimitUnavailable
from sidecar.ratelimit.stage import RateLimitStage, outcome_of, rate_limit_headers

__all__ = [
    "RateLimitStage",
    "RateLimitUnavailable",
    "RateLimited",
    "outcome_of",
    "rate_limit_headers",
]
