"""Model of the `rate_limits` section and its whole-config checks.

A policy is a token bucket: ``capacity`` tokens (the burst), refilled at ``refill`` tokens
per second, each request taking ``cost``. ``refill`` is written ``100/s``, ``6000/m`` or
``1/h`` and stored as tokens per second, so the hot path never parses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from sidecar.config.loader import ConfigIssue, register_cross_check
from sidecar.config.types import Duration, StrictModel

if TYPE_CHECKING:
    from sidecar.config.models import SidecarConfig

_REFILL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_REFILL_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_POLICY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
UNAUTHENTICATED_POLICY = "unauthenticated"
"""The policy name the ``unauthenticated`` bucket carries in metrics, headers and audit."""


def parse_refill(value: Any) -> float:
    """Parse ``100/s``, ``6000/m`` or ``1/h`` into tokens per second.

    Raises:
        ValueError: not a positive rate with a unit.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be a rate such as 100/s, 6000/m or 1/h")
    match = _REFILL_RE.match(value)
    if match is None:
        raise ValueError(f"invalid rate {value!r}: use a number, '/', and s, m or h")
    rate = float(match.group(1)) / _REFILL_UNITS[match.group(2)]
    if rate <= 0:
        raise ValueError("must be greater than zero")
    return rate


Refill = Annotated[float, BeforeValidator(parse_refill)]
"""Tokens per second, written in YAML as ``100/s``, ``6000/m`` or ``1/h``."""


def _check_key(value: str) -> str:
    if value in ("client_id", "ip", "subject", "route"):
        return value
    prefix, sep, name = value.partition(":")
    if prefix == "header" and sep and _HEADER_NAME_RE.match(name):
        return f"header:{name.lower()}"
    raise ValueError("must be client_id, ip, subject, route or header:NAME")


class PolicyConfig(StrictModel):
    """One named token bucket."""

    name: str
    key: Annotated[str, BeforeValidator(lambda v: _check_key(v) if isinstance(v, str) else v)]
    """What a bucket is per: ``client_id``, ``ip``, ``subject``, ``route`` or ``header:NAME``
    (always within the authenticated client; see docs/rate-limits.md)."""
    capacity: int = Field(gt=0, le=1_000_000_000)
    """Burst size: the most tokens the bucket holds."""
    refill: Refill
    """Tokens added per second (written ``100/s``, ``6000/m``)."""
    cost: int = Field(default=1, ge=1)
    """Tokens one request takes."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _POLICY_NAME_RE.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-'")
        if value == UNAUTHENTICATED_POLICY:
            raise ValueError(f"{UNAUTHENTICATED_POLICY!r} is reserved for the per-IP limit")
        return value

    @model_validator(mode="after")
    def _cost_fits(self) -> PolicyConfig:
        if self.cost > self.capacity:
            raise ValueError("cost is larger than capacity: no request could ever pass")
        return self


class UnauthenticatedConfig(StrictModel):
    """The per-IP bucket for public routes and failed authentication."""

    key: Literal["ip"] = "ip"
    capacity: int = Field(gt=0, le=1_000_000_000)
    refill: Refill


class RateLimitsConfig(StrictModel):
    """The `rate_limits` section: policies, which apply by default, and the store."""

    store: Literal["memory", "redis"] | None = None
    """``redis`` shares buckets between replicas; ``memory`` is per process. Default: redis
    when a ``redis`` section exists, else memory."""
    on_store_error: Literal["fail_closed", "fail_open", "local"] = "fail_closed"
    """When Redis fails: 503 ``rate_limit_unavailable``, allow (degraded), or limit locally."""
    policies: tuple[PolicyConfig, ...] = ()
    default: tuple[str, ...] = ()
    """Policies applied to every authenticated request, before the rule's own."""
    unauthenticated: UnauthenticatedConfig | None = None
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    """Consecutive store failures that open the circuit breaker."""
    breaker_cooldown: Duration = 1.0
    """How long the open breaker answers without the store before one probe is let through."""
    max_local_buckets: int = Field(default=100_000, ge=100)
    """Bound on buckets held in process (memory store, ``local`` fallback)."""

    @field_validator("policies")
    @classmethod
    def _unique(cls, value: tuple[PolicyConfig, ...]) -> tuple[PolicyConfig, ...]:
        seen: set[str] = set()
        for policy in value:
            if policy.name in seen:
                raise ValueError(f"policy name {policy.name!r} is used twice")
            seen.add(policy.name)
        return value

    @field_validator("default")
    @classmethod
    def _default_known(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        policies = info.data.get("policies")
        if policies is None:  # policies itself failed; its error is already reported
            return value
        known = {p.name for p in policies}
        for i, name in enumerate(value):
            if name not in known:
                raise ValueError(f"[{i}]: unknown policy {name!r}")
        return value

    def policy(self, name: str) -> PolicyConfig:
        """The policy called ``name``.

        Raises:
            KeyError: no such policy (the config checks make this unreachable).
        """
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise KeyError(name)

    def effective_store(self, has_redis: bool) -> Literal["memory", "redis"]:
        """The store in use: as configured, else redis when a redis section exists."""
        if self.store is not None:
            return self.store
        return "redis" if has_redis else "memory"


@register_cross_check
def check_rate_limits(config: SidecarConfig) -> Iterator[ConfigIssue]:
    """Whole-config checks: the redis section, policy names used by rules, workers."""
    rl = config.rate_limits
    known = {p.name for p in rl.policies} if rl is not None else set()
    rules = getattr(config.rbac, "rules", ()) or ()
    for i, rule in enumerate(rules):
        for j, name in enumerate(getattr(rule, "rate_limits", ()) or ()):
            if name not in known:
                where = "no rate_limits section" if rl is None else "no such policy"
                yield ConfigIssue(f"rbac.rules[{i}].rate_limits[{j}]",
                                  f"unknown rate-limit policy {name!r} ({where})")
    if rl is None:
        return
    if rl.store == "redis" and config.redis is None:
        yield ConfigIssue("rate_limits.store", "store: redis needs the top-level redis section")
    if rl.effective_store(config.redis is not None) == "memory" and config.server.workers > 1:
        yield ConfigIssue(
            "rate_limits.store",
            f"warning: memory limits are per process; with server.workers: "
            f"{config.server.workers} a client gets up to {config.server.workers}x each limit",
        )

