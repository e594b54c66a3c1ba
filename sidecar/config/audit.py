"""Model of the `audit` section: sinks, queue, spool, hash-chain key, redaction, checkpoints.

Cross-section rules (a ``redis_stream`` sink needs the top-level ``redis`` section; where the
spool directory is usable) are in :func:`audit_cross_check`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from sidecar.config.types import ByteSize, Duration, StrictModel

if TYPE_CHECKING:
    from sidecar.config.loader import ConfigIssue
    from sidecar.config.models import SidecarConfig

DEFAULT_SPOOL_DIR = "/var/lib/sidecar/spool"
DEFAULT_REDACTED_QUERY_PARAMS = ("card_number", "pan", "cvv", "ssn")
_SINK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _check_sink_name(value: str | None) -> str | None:
    if value is not None and not _SINK_NAME_RE.match(value):
        raise ValueError("must be 1-63 chars of a-z, 0-9, '_' or '-' (it names spool files "
                         "and the metric label)")
    return value


SinkName = Annotated[str | None, AfterValidator(_check_sink_name)]


class _SinkBase(StrictModel):
    type: str
    name: SinkName = None
    """Label for metrics and spool file names; defaults to the sink type. Two sinks of the
    same type need distinct names."""

    @property
    def label(self) -> str:
        return self.name or self.type


class StdoutSink(_SinkBase):
    """JSON lines on the process's standard output (for a container log collector)."""

    type: Literal["stdout"]


class FileSink(_SinkBase):
    """JSON lines appended to a file, rotated by size like ``logging``'s rotating handler."""

    type: Literal["file"]
    path: str
    max_bytes: ByteSize = 100 * 1024 * 1024
    """Rotate when the file reaches this size: ``path`` -> ``path.1`` -> ... ``path.N``."""
    backups: int = Field(default=10, ge=1, le=1000)
    """Rotated files kept; the oldest is deleted at rotation."""
    fsync: Literal["always", "batch", "never"] = "batch"
    """``always``: fsync every write batch before it counts as written; ``batch``: fsync at
    most once a second (group commit) and at rotation; ``never``: leave it to the OS (fsynced
    only at shutdown)."""

    @field_validator("path")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("max_bytes")
    @classmethod
    def _min_size(cls, value: int) -> int:
        if value < 4096:
            raise ValueError("must be at least 4KiB")
        return value


class RedisStreamSink(_SinkBase):
    """``XADD`` to a Redis Stream on the top-level ``redis`` connection; field ``event``."""

    type: Literal["redis_stream"]
    stream: str = "sidecar:audit"
    """The stream key, used as written (``redis.key_prefix`` is not added)."""
    maxlen: int | None = Field(default=1_000_000, ge=1)
    """Approximate cap (``MAXLEN ~``); null keeps every entry."""


AuditSink = Annotated[StdoutSink | FileSink | RedisStreamSink, Field(discriminator="type")]


class RedactConfig(StrictModel):
    """Data minimisation on top of what is never recorded (tokens, secrets, bodies)."""

    query_params: tuple[str, ...] = DEFAULT_REDACTED_QUERY_PARAMS
    """Query parameters whose value is replaced by ``[REDACTED]`` (case-insensitive)."""
    headers: tuple[str, ...] = ()
    """Header names that must never be recorded. No header value is recorded today; a
    security-event field of one of these names is dropped as well."""


class AuditConfig(StrictModel):
    """The audit log: one event per request plus security events, hash-chained."""

    sinks: tuple[AuditSink, ...] = (StdoutSink(type="stdout"),)
    queue_size: int = Field(default=10_000, ge=1, le=10_000_000)
    """Events waiting per sink in memory; beyond it they go straight to the spool."""
    spool_dir: str = DEFAULT_SPOOL_DIR
    """A failing sink's events wait here (one JSONL file per sink) and are replayed in order.
    Always used (every sink can fail); created at start, which fails if it cannot be."""
    chain_key: SecretStr = SecretStr("")
    """HMAC-SHA256 key of the hash chain and checkpoints; empty: plain SHA-256, which
    detects accidental damage but not an attacker able to rewrite the whole file."""
    redact: RedactConfig = RedactConfig()
    checkpoint_every: int = Field(default=1000, ge=1)
    """Write a checkpoint event after this many events."""
    checkpoint_interval: Duration = 60.0
    """...and at least this often while events flow (and always at shutdown)."""
    shutdown_timeout: Duration = 10.0
    """Longest shutdown waits for sinks; what is left stays in the spool for the next start."""

    @field_validator("spool_dir")
    @classmethod
    def _spool_non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (events of a failing sink wait here)")
        return value

    @field_validator("checkpoint_interval", "shutdown_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _distinct_sinks(self) -> AuditConfig:
        labels = [s.label for s in self.sinks]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"two sinks are named {label!r}: give each a distinct name")
        paths = [os.path.abspath(s.path) for s in self.sinks if isinstance(s, FileSink)]
        if len(set(paths)) != len(paths):
            raise ValueError("two file sinks write the same path")
        _register_cross_check_once()
        return self

    @property
    def key_bytes(self) -> bytes:
        return self.chain_key.get_secret_value().encode("utf-8")


_registered = False


def _register_cross_check_once() -> None:
    # The loader imports the root model, which imports this module, so a module-level
    # ``register_cross_check`` import here would be circular. Validation of an audit section
    # always runs inside the loader, after it is fully imported: register from there.
    global _registered
    if not _registered:
        from sidecar.config.loader import register_cross_check

        register_cross_check(audit_cross_check)
        _registered = True


def audit_cross_check(config: SidecarConfig) -> Iterator[ConfigIssue]:
    """``redis_stream`` needs ``redis``; the spool directory must be usable here (warning:
    the check may run on another machine than the sidecar, whose start fails instead)."""
    from sidecar.config.loader import ConfigIssue

    audit = config.audit
    if audit is None:
        return
    for i, sink in enumerate(audit.sinks):
        if isinstance(sink, RedisStreamSink) and config.redis is None:
            yield ConfigIssue(f"audit.sinks[{i}]",
                              "a redis_stream sink needs the top-level redis section")
    problem = spool_dir_problem(audit.spool_dir)
    if problem is not None:
        yield ConfigIssue("audit.spool_dir",
                          f"warning: {problem}; the sidecar will refuse to start")
    if not audit.chain_key.get_secret_value():
        yield ConfigIssue("audit.chain_key",
                          "warning: empty: the hash chain is plain SHA-256 and can be rewritten "
                          "by anyone who can write the file; set an HMAC key")


def spool_dir_problem(spool_dir: str) -> str | None:
    """Why ``spool_dir`` cannot be used on this machine, or None when it can."""
    path = Path(spool_dir)
    if path.exists():
        if not path.is_dir():
            return f"{spool_dir} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{spool_dir} is not writable"
        return None
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{spool_dir} does not exist and cannot be created ({parent} is not writable)"
    return None
