"""Scalar types shared by every config section: durations, sizes and the strict base model.

Every section model derives from :class:`StrictModel`, so an unknown key anywhere in the
YAML is an error (a typo must never silently weaken security) and a loaded config is
immutable.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3,
}


def parse_duration(value: Any) -> float:
    """Parse ``250ms``, ``30s``, ``5m``, ``1h`` or ``1d`` into seconds.

    Bare numbers are refused: a unit-less ``30`` is ambiguous (seconds? ms?) and that
    ambiguity has caused outages elsewhere.

    Raises:
        ValueError: the value is not a duration string.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be a duration string such as 250ms, 30s, 5m or 1h")
    match = _DURATION_RE.match(value)
    if match is None:
        raise ValueError(f"invalid duration {value!r}: use a number and ms, s, m, h or d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: Any) -> int:
    """Parse ``512KiB``, ``1MiB`` or a plain byte count into bytes.

    Raises:
        ValueError: the value is not a size.
    """
    if isinstance(value, bool):
        raise ValueError("must be a size such as 16KiB or 1MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a size such as 16KiB or 1MiB")
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"invalid size {value!r}: use a number and B, KiB, MiB or GiB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A duration in seconds, written in YAML as ``250ms``, ``30s``, ``5m``, ``1h``."""

ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""A size in bytes, written in YAML as ``16KiB``, ``1MiB`` or a plain integer."""


def format_duration(seconds: float) -> str:
    """Render seconds the way the config writes them (for summaries and explain)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000, 3):g}ms"


class StrictModel(BaseModel):
    """Base of every config model: unknown keys rejected, values frozen after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
