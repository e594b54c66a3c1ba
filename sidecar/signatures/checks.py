"""Whole-config checks of the `signatures` section (they need `redis` and `server` too).

They live here rather than in ``sidecar/config/signatures.py`` because that module is
imported by ``sidecar.config.models`` while ``sidecar.config.loader`` is still initialising,
so it cannot call :func:`register_cross_check` at import time. Importing this module
registers the checks; ``sidecar.commands.sign`` and ``sidecar.signatures.verifier`` import it.
"""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.config.loader import ConfigIssue, register_cross_check
from sidecar.config.models import SidecarConfig
from sidecar.config.signatures import effective_nonce_store


@register_cross_check
def signatures_cross_check(config: SidecarConfig) -> Iterator[ConfigIssue]:
    """Issues of the `signatures` section that depend on other sections."""
    sig = config.signatures
    if sig is None:
        return
    if sig.nonce_store == "redis" and config.redis is None:
        yield ConfigIssue("signatures.nonce_store", "redis needs the top-level redis section")
    if effective_nonce_store(config) == "memory" and config.server.workers > 1:
        yield ConfigIssue("signatures.nonce_store",
                          "warning: the memory nonce store is per worker process, so a nonce "
                          "replayed to another worker is accepted; use redis")
    if sig.required and not sig.keys:
        yield ConfigIssue("signatures.keys",
                          "warning: signatures are required but no key is registered; every "
                          "non-public request will be denied")
    if not sig.require_nonce:
        yield ConfigIssue("signatures.require_nonce",
                          "warning: without nonces a captured request can be replayed until "
                          "max_age")
