"""Model of the `signatures` section."""

from __future__ import annotations

from sidecar.config.types import StrictModel


class SignaturesConfig(StrictModel):
    """Placeholder until the signature stage models `signatures` in full."""
