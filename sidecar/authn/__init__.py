"""Bearer-token authentication: extraction, JWT validation, key sources, introspection and
the verified-token cache. ``app.py`` builds one :class:`JWTAuthenticator` from ``auth``."""

from sidecar.authn.authenticator import JWTAuthenticator
from sidecar.authn.errors import (
    DuplicateAuthorization,
    IssuerUnavailable,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
)
from sidecar.authn.keys import BuiltinIssuerKeys

__all__ = [
    "BuiltinIssuerKeys",
    "DuplicateAuthorization",
    "IssuerUnavailable",
    "JWTAuthenticator",
    "TokenExpired",
    "TokenInvalid",
    "TokenMissing",
]
