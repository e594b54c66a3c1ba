"""The `rate_limits` section: parsing, per-field errors and whole-config checks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sidecar.config import ConfigError, parse_text
from sidecar.config.ratelimit import RateLimitsConfig, parse_refill

POLICIES: dict[str, Any] = {
    "policies": [
        {"name": "per-client", "key": "client_id", "capacity": 200, "refill": "100/s"},
        {"name": "refunds", "key": "client_id", "capacity": 5, "refill": "1/m", "cost": 1},
    ],
    "default": ["per-client"],
}


def load(doc: dict[str, Any]) -> Any:
    return parse_text(yaml.safe_dump(doc), env={})


def errors(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(doc)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("100/s", 100.0), ("6000/m", 100.0), ("1/m", 1 / 60), ("36/h", 0.01), ("2.5 / s", 2.5)],
    ids=["per second", "per minute", "one a minute", "per hour", "decimals and spaces"],
)
def test_refill_parses_to_tokens_per_second(text: str, per_second: float) -> None:
    assert parse_refill(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "0/s", "10/d", "fast", "-1/s"],
                         ids=["no unit", "zero", "unknown unit", "words", "negative"])
def test_refill_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate|greater"):
        parse_refill(text)


def test_full_section_loads_with_defaults() -> None:
    loaded = load({"redis": {}, "rate_limits": {
        **POLICIES, "store": "redis",
        "unauthenticated": {"key": "ip", "capacity": 20, "refill": "10/s"}}})
    rl = loaded.config.rate_limits
    assert isinstance(rl, RateLimitsConfig)
    assert rl.on_store_error == "fail_closed"
    assert rl.policy("refunds").refill == pytest.approx(1 / 60)
    assert rl.unauthenticated is not None and rl.unauthenticated.refill == 10.0
    assert rl.breaker_cooldown == 1.0


@pytest.mark.parametrize(
    ("key", "stored"),
    [("client_id", "client_id"), ("ip", "ip"), ("subject", "subject"), ("route", "route"),
     ("header:X-Merchant-Id", "header:x-merchant-id")],
    ids=["client", "ip", "subject", "route", "a header name is lower-cased"],
)
def test_policy_keys(key: str, stored: str) -> None:
    rl = load({"rate_limits": {"policies": [
        {"name": "p", "key": key, "capacity": 1, "refill": "1/s"}]}}).config.rate_limits
    assert rl.policies[0].key == stored


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"policies": [{"name": "p", "key": "cookie", "capacity": 1, "refill": "1/s"}]},
         "rate_limits.policies[0].key: must be client_id, ip, subject, route or header:NAME"),
        ({"policies": [{"name": "p", "key": "header:", "capacity": 1, "refill": "1/s"}]},
         "rate_limits.policies[0].key: must be"),
        ({"policies": [{"name": "p", "key": "ip", "capacity": 0, "refill": "1/s"}]},
         "rate_limits.policies[0].capacity: Input should be greater than 0"),
        ({"policies": [{"name": "p", "key": "ip", "capacity": 2, "refill": "1/s", "cost": 3}]},
         "rate_limits.policies[0]: cost is larger than capacity"),
        ({"policies": [{"name": "p", "key": "ip", "capacity": 2, "refill": "often"}]},
         "rate_limits.policies[0].refill: invalid rate"),
        ({"policies": [{"name": "p", "key": "ip", "capacity": 2, "refill": "1/s"}] * 2},
         "rate_limits.policies: policy name 'p' is used twice"),
        ({"policies": [{"name": "unauthenticated", "key": "ip", "capacity": 2,
                        "refill": "1/s"}]},
         "rate_limits.policies[0].name: 'unauthenticated' is reserved"),
        ({**POLICIES, "default": ["per-client", "nope"]},
         "rate_limits.default: [1]: unknown policy 'nope'"),
        ({"store": "disk"}, "rate_limits.store: Input should be 'memory' or 'redis'"),
        ({"unauthenticated": {"key": "client_id", "capacity": 1, "refill": "1/s"}},
         "rate_limits.unauthenticated.key: Input should be 'ip'"),
        ({"burst": 3}, "rate_limits.burst: unknown key"),
    ],
    ids=[
        "an unknown key kind",
        "a header key without a name",
        "zero capacity",
        "a cost no bucket could ever pay",
        "a refill without a unit",
        "a policy name used twice",
        "the reserved name",
        "a default naming no policy",
        "an unknown store",
        "unauthenticated is per IP only",
        "a typo in a key",
    ],
)
def test_section_errors_name_their_path(section: dict[str, Any], message: str) -> None:
    found = errors({"rate_limits": section})
    assert any(e.startswith(message) for e in found), found


def test_store_redis_needs_the_redis_section() -> None:
    found = errors({"rate_limits": {**POLICIES, "store": "redis"}})
    assert any(e.startswith("rate_limits.store: store: redis needs the top-level redis section")
               for e in found), found


def test_store_defaults_to_redis_when_a_redis_section_exists() -> None:
    with_redis = load({"redis": {}, "rate_limits": POLICIES}).config.rate_limits
    without = load({"rate_limits": POLICIES}).config.rate_limits
    assert with_redis.effective_store(True) == "redis"
    assert without.effective_store(False) == "memory"


def test_rules_must_name_existing_policies() -> None:
    rules = {"rules": [
        {"name": "ok", "path": "/a", "methods": ["GET"], "rate_limits": ["refunds"]},
        {"name": "bad", "path": "/b", "methods": ["GET"], "rate_limits": ["refunds", "typo"]},
    ]}
    found = errors({"rbac": rules, "rate_limits": POLICIES})
    assert any(e.startswith("rbac.rules[1].rate_limits[1]: unknown rate-limit policy 'typo'")
               for e in found), found
    assert not any("rules[0]" in e for e in found)


def test_rule_naming_a_policy_without_a_rate_limits_section_is_an_error() -> None:
    rules = {"rules": [{"name": "r", "path": "/a", "methods": ["GET"],
                        "rate_limits": ["refunds"]}]}
    found = errors({"rbac": rules})
    assert any("no rate_limits section" in e for e in found), found


def test_memory_store_with_several_workers_is_a_warning() -> None:
    loaded = load({"server": {"workers": 4}, "rate_limits": {**POLICIES, "store": "memory"}})
    messages = [w.message for w in loaded.warnings]
    assert any(m.startswith("warning: memory limits are per process") for m in messages)


def test_redis_store_with_several_workers_is_silent() -> None:
    loaded = load({"server": {"workers": 4}, "redis": {}, "rate_limits": POLICIES})
    assert not [w for w in loaded.warnings if "memory limits" in w.message]


@pytest.mark.parametrize(
    ("redis", "message"),
    [({"timeout": "0ms"}, "redis.timeout: must be greater than zero"),
     ({"key_prefix": "a{b}:"}, "redis.key_prefix: must not contain"),
     ({"mode": "sentinel", "sentinel": {"nodes": ["nohost"]}},
      "redis.sentinel.nodes: 'nohost' is not host:port")],
    ids=["a zero timeout", "braces in the key prefix", "a sentinel node without a port"],
)
def test_redis_section_errors(redis: dict[str, Any], message: str) -> None:
    found = errors({"redis": redis})
    assert any(e.startswith(message) or message in e for e in found), found
