"""Values that travel with one request through the pipeline.

Stages read what earlier stages put here and add their own result; none of them writes a
response. ``pipeline.py`` turns the final context into the response, the audit event and
the metric samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ClientCert:
    """The verified client certificate of an mTLS connection."""

    subject: str
    sans: tuple[str, ...]
    sha256_thumbprint: str
    """base64url (unpadded) SHA-256 of the DER certificate, as in RFC 8705 ``x5t#S256``."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the verified token says the caller is."""

    client_id: str
    subject: str
    issuer: str
    scopes: frozenset[str]
    roles: frozenset[str]
    claims: Mapping[str, Any]
    """The verified claims, for RBAC claim conditions; never logged or audited whole."""
    expires_at: float
    token_id: str | None = None
    """``jti``, the only representation of the token that leaves the process."""
    cnf_x5t_s256: str | None = None
    """Certificate thumbprint the token is bound to (RFC 8705), if any."""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The rule a request matched and the values of its ``{param}`` segments."""

    rule: Any
    """The compiled rule (``sidecar.rbac`` owns its type)."""
    name: str
    params: Mapping[str, str]
    public: bool


@dataclass(frozen=True, slots=True)
class RateLimitOutcome:
    """The most constraining bucket of a request, for headers, audit and metrics."""

    policy: str
    limit: int
    remaining: int
    reset_seconds: float
    allowed: bool
    retry_after: float = 0.0
    degraded: bool = False
    """True when the store failed and ``on_store_error`` let the request through."""


@dataclass(slots=True)
class RequestContext:
    """Mutable per-request state; created by the pipeline, enriched by each stage."""

    request_id: str
    """Random (32 hex digits), or a trusted proxy's ``X-Request-Id`` that passed the
    charset and ``sidecar.audit.redact.safe_string`` unchanged: safe to log as is."""
    method: str
    path: str
    """Raw path, byte-for-byte what is forwarded (already checked by path safety)."""
    query: str
    """Raw query string, without the ``?``."""
    client_ip: str
    peer_ip: str
    scheme: str
    host: str
    started: float
    forwarded_for: str = ""
    client_cert: ClientCert | None = None
    route: RouteMatch | None = None
    identity: Identity | None = None
    rate_limit: RateLimitOutcome | None = None
    signature_keyid: str | None = None
    upstream_seconds: float | None = None
    status: int = 0
    reason: str = "ok"
    """Stable reason code: ``ok`` or the ``code`` of the error that ended the request."""
    stage: str = ""
    """Stage that denied the request, empty when allowed."""
    audit_flags: Mapping[str, Any] | None = None
    """Stage flags for the audit event; assign a new mapping to set them."""

    @property
    def rule_name(self) -> str:
        return self.route.name if self.route is not None else "none"
