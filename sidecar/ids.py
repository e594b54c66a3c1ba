"""Random 128-bit identifiers (request ids, audit event ids), 32 lowercase hex digits.

Drawn from the OS CSPRNG like ``os.urandom(16).hex()``, but 256 at a time: one
``getrandom`` call per id was a measurable share of a request here. A forked child starts
with an empty batch, so two processes never hand out the same ids.
"""

from __future__ import annotations

import os
from typing import Final

_BATCH: Final = 256
_ready: list[str] = []


def _refill() -> None:
    raw = os.urandom(16 * _BATCH).hex()
    _ready.extend(raw[i:i + 32] for i in range(0, 32 * _BATCH, 32))


def random_id() -> str:
    """A fresh random 128-bit id as 32 hex digits."""
    if not _ready:
        _refill()
    return _ready.pop()


os.register_at_fork(after_in_child=_ready.clear)
