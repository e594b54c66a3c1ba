"""Authentication denials, each with its RFC 6750 §3 challenge.

The ``error_description`` texts are fixed: the cause of a rejection goes to ``log_detail``
(logs and audit), never to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from sidecar.problem import BadRequest, SidecarError

REALM = "sidecar"


def bearer_challenge(description: str | None) -> str:
    """``WWW-Authenticate`` value; without a description it is the bare RFC 6750 §3.1 form."""
    if description is None:
        return f'Bearer realm="{REALM}"'
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'


class _AuthError(SidecarError):
    status, stage = 401, "auth"
    challenge: ClassVar[str | None] = None

    def __init__(self, log_detail: str = "", *, headers: Mapping[str, str] | None = None,
                 code: str | None = None) -> None:
        merged = {"WWW-Authenticate": bearer_challenge(self.challenge)}
        merged.update(headers or {})
        super().__init__(log_detail, headers=merged, code=code)


class TokenMissing(_AuthError):
    """No bearer token (no ``Authorization`` header, or another scheme). RFC 6750 §3.1:
    the challenge carries no error code."""

    code, title = "token_missing", "Authentication required"
    detail = "A bearer token is required."


class TokenInvalid(_AuthError):
    code, title = "token_invalid", "Invalid token"
    detail = "The access token is invalid."
    challenge = "The access token is invalid"


class TokenExpired(_AuthError):
    code, title = "token_expired", "Token expired"
    detail = "The access token has expired."
    challenge = "The access token expired"


class IssuerUnavailable(SidecarError):
    """The token's issuer has no usable keys yet (or they are older than ``jwks_max_stale``),
    or its introspection endpoint failed."""

    status, code, title, stage = 503, "issuer_unavailable", "Issuer unavailable", "auth"
    detail = "The token issuer cannot be reached; try again later."


class DuplicateAuthorization(BadRequest):
    """More than one ``Authorization`` header: which one a backend would read is undefined."""

    code, title, stage = "duplicate_authorization", "Duplicate Authorization header", "auth"
    detail = "The request carries more than one Authorization header."
