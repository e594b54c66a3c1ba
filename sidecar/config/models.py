"""The root config model: one field per top-level YAML section.

Sections are optional where the stage they configure is optional; a stage receives its own
section, never this root object.
"""

from __future__ import annotations

from sidecar.config.audit import AuditConfig
from sidecar.config.auth import AuthConfig, TokenEndpointConfig
from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.config.rbac import RBACConfig
from sidecar.config.server import AdminConfig, RedisConfig, ServerConfig, UpstreamConfig
from sidecar.config.signatures import SignaturesConfig
from sidecar.config.types import StrictModel


class SidecarConfig(StrictModel):
    """The whole YAML document."""

    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    auth: AuthConfig | None = None
    token_endpoint: TokenEndpointConfig | None = None
    rbac: RBACConfig | None = None
    redis: RedisConfig | None = None
    rate_limits: RateLimitsConfig | None = None
    signatures: SignaturesConfig | None = None
    audit: AuditConfig | None = None
