"""Audit event model: what one request or security event records (pure).

Field names are the contract in ``docs/audit.md`` and
``sidecar/schemas/audit-event.schema.json``; the chain fields (``chain``, ``seq``, ``prev``,
``hash``) are added by :mod:`sidecar.audit.chain`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, Literal

from sidecar.audit.redact import (
    FieldKind,
    compile_names,
    filter_fields,
    filter_flags,
    redact_target,
    safe_string,
)
from sidecar.context import Identity, RequestContext
from sidecar.ids import random_id

EVENT_VERSION: Final = 1

_IDENTITY_CACHE_SIZE: Final = 4096
_SAFE_METHODS: Final[Mapping[str, str]] = {
    m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

SecurityEventType = Literal[
    "token_issued", "token_excessive_issuance", "signature_replay", "jwks_refresh_failed",
    "rate_limit_store_error", "config_reload", "checkpoint",
]

_COMMON: Final[Mapping[str, FieldKind]] = {
    "request_id": "str", "client_id": "str?", "source_ip": "str", "rule": "str?",
    "reason": "str",
}

# SECURITY: the only fields a security event may carry, each with its JSON type; anything
# else a caller passes (or a value of another type) is dropped. Defence in depth: a careless
# ``emit`` must not be able to leak a secret, nor produce an event the schema rejects.
SECURITY_FIELDS: Final[Mapping[str, Mapping[str, FieldKind]]] = {
    "token_issued": {**_COMMON, "jti": "str?", "scopes": "strs", "expires_in": "int",
                     "kid": "str", "audience": "str"},
    "token_excessive_issuance": {**_COMMON, "count": "int", "limit": "int", "window_s": "num"},
    "signature_replay": {**_COMMON, "keyid": "str", "created": "int"},
    "jwks_refresh_failed": {**_COMMON, "issuer": "str", "url": "str", "error": "str",
                            "failures": "int", "stale_s": "num?", "using_stale": "bool"},
    "rate_limit_store_error": {**_COMMON, "operation": "str", "error": "str", "policy": "str",
                               "on_store_error": "str", "degraded": "bool"},
    "config_reload": {**_COMMON, "result": "str", "source": "str", "digest": "str",
                      "error_count": "int", "error_paths": "strs"},
    "checkpoint": {"reason": "str", "head_seq": "int", "head_hash": "str", "mac": "str"},
}
SECURITY_EVENT_TYPES: Final = frozenset(SECURITY_FIELDS)
INTERNAL_EVENT_TYPES: Final = frozenset({"checkpoint"})
"""Written by the audit log itself; :meth:`EventBuilder.security` refuses them from callers."""

def rfc3339(ts: float) -> str:
    """``2026-11-22T08:00:00.123456Z``: UTC with microseconds."""
    secs, frac = divmod(round(ts * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def new_event_id() -> str:
    """128 random bits as 32 hex digits (a uuid4's entropy, without its object cost)."""
    return random_id()


def _sanitize_url(value: Any) -> Any:
    # SECURITY: a URL may carry credentials in its userinfo or query; keep scheme/host/path.
    if not isinstance(value, str):
        return value
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    authority, slash, path = rest.partition("/")
    authority = authority.split("?", 1)[0].split("#", 1)[0]
    path = path.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


class EventBuilder:
    """Builds event dicts from requests and security-event fields, with redaction compiled
    once from ``audit.redact``."""

    def __init__(self, query_params: tuple[str, ...], headers: tuple[str, ...]) -> None:
        self._query_names = compile_names(query_params)
        self._denied = compile_names(headers)
        self._second = -1
        self._second_text = ""
        self._identities: dict[int, tuple[Identity, tuple[str, str, dict[str, Any]]]] = {}

    def _time(self, now: float) -> str:
        """:func:`rfc3339`, formatting the date part once per second."""
        secs, frac = divmod(round(now * 1_000_000), 1_000_000)
        if secs != self._second:
            self._second = secs
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        return f"{self._second_text}.{frac:06d}Z"

    def request(self, ctx: RequestContext, now: float, elapsed: float) -> dict[str, Any]:
        """The ``request`` event of a finished request, at wall-clock ``now``, ``elapsed``
        seconds after it started."""
        identity = ctx.identity
        client_id: str | None = None
        subject: str | None = None
        token: dict[str, Any] | None = None
        if identity is not None:
            client_id, subject, token = self._identity_fields(identity)
        method = _SAFE_METHODS.get(ctx.method) or safe_string(ctx.method[:32])
        route = ctx.route
        stage = ctx.stage
        upstream = ctx.upstream_seconds
        event: dict[str, Any] = {
            "v": EVENT_VERSION,
            "type": "request",
            "time": self._time(now),
            "event_id": new_event_id(),
            "request_id": ctx.request_id,  # random, or a proxy's id the pipeline checked
            "client_id": client_id,
            "subject": subject,
            "source_ip": ctx.client_ip,
            "method": method,
            "rule": route.name if route is not None else None,
            "path": redact_target(ctx.path, ctx.query, self._query_names),
            "status": ctx.status,
            "decision": "deny" if stage else "allow",
            "reason": ctx.reason,
            "latency_ms": round(elapsed * 1000.0, 3) if elapsed > 0.0 else 0.0,
            "upstream_ms": (None if upstream is None
                            else round(upstream * 1000.0, 3) if upstream > 0.0 else 0.0),
            "rate_limit": None,
            "signature": None,
            "token": token,
        }
        if stage:
            event["stage"] = stage
        rl = ctx.rate_limit
        if rl is not None:
            limit: dict[str, Any] = {"policy": rl.policy, "remaining": rl.remaining}
            if rl.degraded:
                limit["degraded"] = True
            event["rate_limit"] = limit
        if ctx.signature_keyid:
            event["signature"] = {"keyid": safe_string(ctx.signature_keyid)}
        if ctx.client_cert is not None:
            event["mtls"] = {"x5t#S256": ctx.client_cert.sha256_thumbprint}
        if ctx.audit_flags:
            flags = filter_flags(ctx.audit_flags, self._denied)
            if flags:
                event["flags"] = flags
        return event

    def _identity_fields(
        self, identity: Identity,
    ) -> tuple[str, str, dict[str, Any]]:
        """``client_id``, ``subject`` and ``token`` of an identity, computed once per
        identity object: the verified-token cache hands out the same object for every
        request bearing that token. The ``token`` dict is shared by those events and must
        not be mutated."""
        cached = self._identities.get(id(identity))
        if cached is not None and cached[0] is identity:
            return cached[1]
        fields = (
            safe_string(identity.client_id),
            safe_string(identity.subject),
            {"iss": identity.issuer,  # must equal a configured issuer
             "jti": safe_string(identity.token_id) if identity.token_id else None},
        )
        if len(self._identities) >= _IDENTITY_CACHE_SIZE:
            self._identities.clear()
        # Holding the identity keeps its id() from being reused while the entry lives.
        self._identities[id(identity)] = (identity, fields)
        return fields

    def security(self, event_type: str, fields: Mapping[str, Any], now: float,
                 internal: bool = False) -> dict[str, Any] | None:
        """A security event with only its type's allowed fields, or None for a type that is
        not known (or internal, unless ``internal``)."""
        allowed = SECURITY_FIELDS.get(event_type)
        if allowed is None or (event_type in INTERNAL_EVENT_TYPES and not internal):
            return None
        event: dict[str, Any] = {
            "v": EVENT_VERSION,
            "type": event_type,
            "time": self._time(now),
            "event_id": new_event_id(),
        }
        if internal:
            event.update((k, v) for k, v in fields.items() if k in allowed)
            return event
        clean = filter_fields(fields, allowed, self._denied)
        if "url" in clean:
            clean["url"] = _sanitize_url(clean["url"])
        event.update(clean)
        return event
