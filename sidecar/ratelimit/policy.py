"""Compiled policies and bucket keys, pure.

Key layout (one Redis hash tag per request, so a request's buckets share a cluster slot
and one Lua script can take from all of them atomically)::

    {prefix}rl:{c:<client_id>}:<policy>[:<value>]   authenticated request
    {prefix}rl:{ip:<address>}:unauthenticated       unauthenticated request

Every bucket of an authenticated request is therefore scoped to its client: a policy keyed
by ``ip``, ``route``, ``subject`` or ``header:NAME`` counts per client *and* that value.
See docs/rate-limits.md for the trade-off.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sidecar.config.ratelimit import UNAUTHENTICATED_POLICY, PolicyConfig, UnauthenticatedConfig
from sidecar.context import Identity, RequestContext
from sidecar.ratelimit.bucket import BucketSpec

KeyKind = Literal["client_id", "ip", "subject", "route", "header"]
_SAFE_PART = re.compile(r"[A-Za-z0-9._:@/-]{1,100}")


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy ready for the hot path: its bucket shape and pre-encoded script argument."""

    name: str
    kind: KeyKind
    header: str | None
    """Lower-cased header name when ``kind`` is ``header``."""
    spec: BucketSpec
    script_arg: bytes
    """``capacity rate cost`` as the Lua script reads it."""


def _script_arg(spec: BucketSpec) -> bytes:
    return f"{spec.capacity} {spec.rate!r} {spec.cost}".encode()


def compile_policy(cfg: PolicyConfig) -> Policy:
    spec = BucketSpec(capacity=cfg.capacity, rate=cfg.refill, cost=cfg.cost)
    kind, _, header = cfg.key.partition(":")
    return Policy(name=cfg.name, kind=kind,  # type: ignore[arg-type]  # validated by config
                  header=header or None, spec=spec, script_arg=_script_arg(spec))


def compile_unauthenticated(cfg: UnauthenticatedConfig) -> Policy:
    spec = BucketSpec(capacity=cfg.capacity, rate=cfg.refill, cost=1)
    return Policy(name=UNAUTHENTICATED_POLICY, kind="ip", header=None, spec=spec,
                  script_arg=_script_arg(spec))


def key_part(value: str) -> str:
    """A key segment: short safe values as they are, anything else as a digest.

    Digests keep client-controlled values (header values, odd client ids) from making
    keys long, from adding ``{``/``}`` (which would move the hash tag) and from colliding
    with safe values (``~`` never appears in a safe value).
    """
    if _SAFE_PART.fullmatch(value):
        return value
    return "~" + hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def client_tag(client_id: str) -> str:
    return "c:" + key_part(client_id)


def ip_tag(ip: str) -> str:
    return "ip:" + key_part(ip)


def bucket_key(prefix: str, tag: str, policy: Policy, value: str | None) -> str:
    """The store key of one bucket; ``tag`` becomes the Redis Cluster hash tag."""
    base = f"{prefix}rl:{{{tag}}}:{policy.name}"
    return base if value is None else f"{base}:{key_part(value)}"


def bucket_value(policy: Policy, ctx: RequestContext, identity: Identity,
                 headers: Mapping[str, str] | None) -> str | None:
    """What the bucket is per, beyond the client (None: the client alone).

    A missing header is its own bucket (the empty value), so leaving the header out never
    escapes the limit.
    """
    kind = policy.kind
    if kind == "client_id":
        return None
    if kind == "ip":
        return ctx.client_ip
    if kind == "subject":
        return identity.subject
    if kind == "route":
        return ctx.rule_name
    assert policy.header is not None
    return (headers or {}).get(policy.header, "")
