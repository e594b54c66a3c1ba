"""Model of the `rbac` section."""

from __future__ import annotations

from sidecar.config.types import StrictModel


class RBACConfig(StrictModel):
    """Placeholder until the RBAC stage models `rbac` in full."""
