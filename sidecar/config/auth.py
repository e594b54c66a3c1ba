"""Models of the `auth` and `token_endpoint` sections (owned by the token-validation stage).

An entry of ``auth.issuers`` is one of three kinds, told apart by its keys:

- ``builtin: true`` -> :class:`BuiltinIssuerConfig` (tokens of this sidecar's
  ``token_endpoint``, validated with its public keys, no HTTP);
- ``introspection: {...}`` -> :class:`IntrospectionIssuerConfig` (RFC 7662, opaque tokens);
- anything else -> :class:`JWTIssuerConfig` (signed JWTs; keys from ``jwks_url``,
  ``jwks_file`` or OIDC discovery at ``{issuer}/.well-known/openid-configuration``).

Whole-config checks (a builtin issuer needs an enabled ``token_endpoint``; ``insecure_*``
warnings) are in :func:`auth_cross_checks`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)
from yarl import URL

from sidecar.config.types import Duration, StrictModel
from sidecar.secrets import parse_secret_hash

if TYPE_CHECKING:
    from sidecar.config.loader import ConfigIssue
    from sidecar.config.models import SidecarConfig

JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
"""The closed set of JWS algorithms a JWKS issuer may allow (asymmetric only)."""

JWSAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                       "EdDSA"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
IDENTITY_FIELDS = frozenset({"client_id", "scopes", "roles", "sub", "iss", "jti"})
"""Identity values ``forward.headers`` may map a header to (or ``claim:<dotted.path>``)."""


def _check_algorithm(value: Any) -> Any:
    if isinstance(value, str) and value not in JWKS_ALGORITHMS:
        if value.lower() == "none":
            raise ValueError("'none' is never accepted: every token must be signed")
        if value.upper().startswith("HS"):
            raise ValueError(
                f"{value} is refused for a JWKS issuer: an HMAC algorithm would let the "
                "issuer's public key be used as a shared secret")
        raise ValueError(f"unsupported algorithm {value!r} (names are case-sensitive); "
                         f"use one of {', '.join(JWKS_ALGORITHMS)}")
    return value


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return value


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host is None:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_fetch_url(value: str, allow_http: bool, what: str) -> str:
    """Require an absolute https URL, or http on loopback / when ``allow_http``.

    Raises:
        ValueError: with the reason.
    """
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{what} must be an absolute https:// URL")
    if url.user or url.password:
        raise ValueError(f"{what} must not carry credentials")
    if url.scheme == "http" and not (allow_http or is_loopback_host(url.host)):
        raise ValueError(f"{what} must use https (http is allowed only on a loopback host, or "
                         "with insecure_allow_http_jwks: true)")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Algorithm = Annotated[JWSAlgorithm, BeforeValidator(_check_algorithm)]


class JWTIssuerConfig(StrictModel):
    """An external issuer of signed JWT access tokens."""

    name: Name
    """Label in metrics, readiness (``issuer:<name>``) and logs."""
    issuer: str = Field(min_length=1)
    """Exact ``iss`` value; also selects this issuer for a token (before any signature work)."""
    audiences: tuple[str, ...] = Field(min_length=1)
    """The token's ``aud`` must contain at least one of these."""
    jwks_url: str | None = None
    jwks_file: str | None = None
    """A local JWKS file, reloaded when its mtime changes."""
    algorithms: tuple[Algorithm, ...] = Field(default=("RS256", "ES256", "EdDSA"), min_length=1)
    leeway: Duration = Field(default=30.0, ge=0, le=300)
    max_lifetime: Duration | None = 3600.0
    """Reject tokens whose ``exp - iat`` is longer; ``iat`` is then required. null disables."""
    jwks_min_refresh: Duration = Field(default=30.0, ge=1)
    """Least time between two JWKS fetches (unknown kid, background refresh, retries)."""
    jwks_max_stale: Duration = Field(default=86400.0, gt=0)
    """Keep using the last good keys this long after the last successful fetch."""
    jwks_timeout: Duration = Field(default=5.0, gt=0, le=60)
    """Timeout of one JWKS or discovery fetch."""
    insecure_allow_http_jwks: bool = False
    """Allow a plain-http ``jwks_url`` / discovery on a non-loopback host (logged loudly)."""

    @model_validator(mode="after")
    def _key_source(self) -> JWTIssuerConfig:
        if self.jwks_url is not None and self.jwks_file is not None:
            raise ValueError("set jwks_url or jwks_file, not both")
        if self.jwks_url is not None:
            check_fetch_url(self.jwks_url, self.insecure_allow_http_jwks, "jwks_url")
        elif self.jwks_file is None:
            check_fetch_url(self.issuer, self.insecure_allow_http_jwks,
                            "issuer (used for OIDC discovery)")
        if self.max_lifetime is not None and self.max_lifetime <= 0:
            raise ValueError("max_lifetime must be positive (or null to disable)")
        return self

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class IntrospectionConfig(StrictModel):
    """RFC 7662 endpoint, called with ``client_secret_basic``."""

    url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    cache_ttl: Duration = Field(default=60.0, ge=0, le=3600)
    """Active results are cached until min(exp, cache_ttl); inactive ones at most 5 s."""
    timeout: Duration = Field(default=2.0, gt=0, le=60)
    insecure_allow_http: bool = False
    """Allow a plain-http endpoint on a non-loopback host (sends the secret in clear)."""

    @model_validator(mode="after")
    def _url(self) -> IntrospectionConfig:
        check_fetch_url(self.url, self.insecure_allow_http, "url")
        return self


class IntrospectionIssuerConfig(StrictModel):
    """Opaque (non-JWT) tokens, checked by the issuer's introspection endpoint."""

    name: Name
    introspection: IntrospectionConfig
    audiences: tuple[str, ...] = ()
    """When set, the introspection response's ``aud`` must contain one of these."""


class BuiltinIssuerConfig(StrictModel):
    """Tokens minted by this sidecar's ``token_endpoint``."""

    name: Name
    builtin: Literal[True]
    leeway: Duration = Field(default=30.0, ge=0, le=300)


def _issuer_kind(value: Any) -> str:
    if isinstance(value, dict):
        if "builtin" in value:
            return "builtin()"
        return "introspection()" if "introspection" in value else "jwt()"
    if isinstance(value, BuiltinIssuerConfig):
        return "builtin()"
    return "introspection()" if isinstance(value, IntrospectionIssuerConfig) else "jwt()"


# Tags carry "()" so the loader's location cleaner drops them from error paths.
IssuerConfig = Annotated[
    Annotated[JWTIssuerConfig, Tag("jwt()")]
    | Annotated[IntrospectionIssuerConfig, Tag("introspection()")]
    | Annotated[BuiltinIssuerConfig, Tag("builtin()")],
    Discriminator(_issuer_kind),
]


def _path_list(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class ClaimsConfig(StrictModel):
    """Where identity values are read from in the verified claims."""

    client_id: tuple[str, ...] = Field(default=("client_id", "azp", "sub"), min_length=1)
    """First claim present (a non-empty string) wins."""
    scopes: Annotated[tuple[str, ...], BeforeValidator(_path_list)] = ("scope", "scp")
    """Claim(s) holding scopes: a space-separated string or a list. First present wins."""
    roles: Annotated[tuple[str, ...], BeforeValidator(_path_list)] = ("roles",)
    """Dotted paths (``realm_access.roles``); a list or space-separated string."""


class ForwardConfig(StrictModel):
    """Which identity headers the backend trusts and how they are protected."""

    strip_prefixes: tuple[str, ...] = ("X-Auth-",)
    """Incoming headers whose name starts with one of these are removed from every request."""
    headers: dict[str, str] = {
        "X-Auth-Client-Id": "client_id",
        "X-Auth-Scopes": "scopes",
        "X-Auth-Subject": "sub",
    }
    """Header -> identity field set on the forwarded request, from verified claims only.

    Fields: ``client_id``, ``scopes`` (space-separated), ``roles`` (space-separated),
    ``sub``, ``iss``, ``jti`` or ``claim:<dotted.path>`` (a string or number claim)."""
    authorization: Literal["strip", "forward"] = "strip"

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header, source in value.items():
            if not _HEADER_NAME_RE.match(header):
                raise ValueError(f"{header!r} is not a valid header name")
            if source not in IDENTITY_FIELDS and not (
                source.startswith("claim:") and len(source) > len("claim:")
            ):
                raise ValueError(f"{header}: unknown identity field {source!r}; use one of "
                                 f"{', '.join(sorted(IDENTITY_FIELDS))} or claim:<path>")
        return value


class AuthConfig(StrictModel):
    """The `auth` section: who may issue tokens and how identity reaches the backend."""

    issuers: tuple[IssuerConfig, ...] = ()
    claims: ClaimsConfig = ClaimsConfig()
    forward: ForwardConfig = ForwardConfig()

    @field_validator("issuers")
    @classmethod
    def _unique(cls, issuers: tuple[IssuerConfig, ...]) -> tuple[IssuerConfig, ...]:
        names = [i.name for i in issuers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"issuer names must be unique: {', '.join(dupes)}")
        iss = [i.issuer for i in issuers if isinstance(i, JWTIssuerConfig)]
        dupes = sorted({n for n in iss if iss.count(n) > 1})
        if dupes:
            raise ValueError(f"two issuers share the iss value {dupes[0]!r}")
        if sum(isinstance(i, BuiltinIssuerConfig) for i in issuers) > 1:
            raise ValueError("at most one builtin issuer")
        return issuers


# --- token_endpoint --------------------------------------------------------------------

def _check_hash(value: str) -> str:
    parse_secret_hash(value)
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/") or "//" in value or "?" in value or "#" in value:
        raise ValueError("must be an absolute path without query or fragment")
    return value


class SigningKeyConfig(StrictModel):
    kid: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    alg: Literal["EdDSA", "ES256"]
    private_key_file: str
    """PEM private key (Ed25519 for EdDSA, P-256 for ES256); see ``sidecar keygen``."""


RESERVED_CLAIMS = ("iss", "aud", "sub", "client_id", "scope", "iat", "exp", "nbf", "jti",
                   "cnf", "azp", "scp", "roles")


class ClientConfig(StrictModel):
    client_id: Name
    secret_hash: Annotated[str, AfterValidator(_check_hash)]
    """``scrypt$N$r$p$<salt>$<hash>`` from ``sidecar hash-secret``."""
    scopes: tuple[str, ...] = ()
    """Scopes this client may request; a request without ``scope`` gets all of them."""
    claims: dict[str, str] = {}
    """Extra claims in every token of this client (e.g. ``merchant_id: m-1`` for RBAC
    claim bindings). Registered and identity claims cannot be set here."""

    @field_validator("claims")
    @classmethod
    def _extra_claims(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = set(RESERVED_CLAIMS) & set(value)
        if reserved:
            raise ValueError(f"cannot set reserved claim(s): {', '.join(sorted(reserved))}")
        return value

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:  # RFC 6749 §3.3 scope-token
            if not scope or any(c <= " " or c in '"\\' or c > "~" for c in scope):
                raise ValueError(f"{scope!r} is not a valid scope token")
        return value


class TokenEndpointConfig(StrictModel):
    """The embedded OAuth 2.0 client-credentials issuer."""

    enabled: bool = True
    path: Annotated[str, AfterValidator(_check_path)] = "/oauth/token"
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    ttl: Duration = 600.0
    """Token lifetime, 10s to 24h."""
    signing_keys: tuple[SigningKeyConfig, ...] = ()
    """The first key signs; every key stays published in the JWKS (rotation)."""
    jwks_path: Annotated[str, AfterValidator(_check_path)] = "/.well-known/jwks.json"
    clients: tuple[ClientConfig, ...] = ()
    excessive_issuance: int = Field(default=3, ge=1)
    """More tokens than this for one client within one ``ttl`` is a security event."""

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if not 10 <= value <= 86400:
            raise ValueError("must be between 10s and 24h")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TokenEndpointConfig:
        if self.enabled and not self.signing_keys:
            raise ValueError("signing_keys: at least one key is needed to sign tokens")
        if self.path == self.jwks_path:
            raise ValueError("path and jwks_path must differ")
        kids = [k.kid for k in self.signing_keys]
        if len(set(kids)) != len(kids):
            raise ValueError("signing key kids must be unique")
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("client_ids must be unique")
        return self


# --- whole-config checks ------------------------------------------------------------------

def auth_cross_checks(config: SidecarConfig) -> Iterator[ConfigIssue]:
    """Checks spanning `auth` and `token_endpoint`; warnings start with ``warning:``."""
    from sidecar.config.loader import ConfigIssue

    te = config.token_endpoint
    te_on = te is not None and te.enabled
    issuers = config.auth.issuers if config.auth is not None else ()
    has_builtin = False
    for index, issuer in enumerate(issuers):
        where = f"auth.issuers[{index}]"
        if isinstance(issuer, BuiltinIssuerConfig):
            has_builtin = True
            if not te_on:
                yield ConfigIssue(f"{where}.builtin", "a builtin issuer needs an enabled "
                                  "token_endpoint section")
            elif te is not None and any(isinstance(i, JWTIssuerConfig) and i.issuer == te.issuer
                                        for i in issuers):
                yield ConfigIssue(f"{where}", "token_endpoint.issuer equals the iss of another "
                                  "issuer; tokens could not be told apart")
        elif isinstance(issuer, JWTIssuerConfig) and issuer.insecure_allow_http_jwks:
            yield ConfigIssue(f"{where}.insecure_allow_http_jwks",
                              "warning: JWKS may be fetched over plain http; keys can be forged "
                              "in transit")
        elif isinstance(issuer, IntrospectionIssuerConfig) and \
                issuer.introspection.insecure_allow_http:
            yield ConfigIssue(f"{where}.introspection.insecure_allow_http",
                              "warning: the introspection secret and tokens travel in clear")
    if te_on and not has_builtin:
        yield ConfigIssue("token_endpoint", "warning: the proxy accepts the embedded endpoint's "
                          "tokens only when auth.issuers has an entry with builtin: true")


def _register() -> None:
    from sidecar.config.loader import register_cross_check

    register_cross_check(auth_cross_checks)


_register()
