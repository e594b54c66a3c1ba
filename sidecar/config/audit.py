"""Model of the `audit` section."""

from __future__ import annotations

from sidecar.config.types import StrictModel


class AuditConfig(StrictModel):
    """Placeholder until the audit stage models `audit` in full."""
