"""Models of the `auth` and `token_endpoint` sections (owned by the token-validation stage)."""

from __future__ import annotations

from typing import Literal

from sidecar.config.types import StrictModel


class ForwardConfig(StrictModel):
    """Which identity headers the backend trusts and how they are protected."""

    strip_prefixes: tuple[str, ...] = ("X-Auth-",)
    """Incoming headers whose name starts with one of these are removed from every request."""
    headers: dict[str, str] = {
        "X-Auth-Client-Id": "client_id",
        "X-Auth-Scopes": "scopes",
        "X-Auth-Subject": "sub",
    }
    """Header -> identity field set on the forwarded request, from verified claims only."""
    authorization: Literal["strip", "forward"] = "strip"


class AuthConfig(StrictModel):
    """Placeholder until the token stage models `auth` in full."""

    forward: ForwardConfig = ForwardConfig()


class TokenEndpointConfig(StrictModel):
    """Placeholder until the embedded issuer models `token_endpoint` in full."""
