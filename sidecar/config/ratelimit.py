"""Model of the `rate_limits` section."""

from __future__ import annotations

from sidecar.config.types import StrictModel


class RateLimitsConfig(StrictModel):
    """Placeholder until the rate-limit stage models `rate_limits` in full."""
