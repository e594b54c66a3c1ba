"""Model of the `rbac` section: roles, static client roles and the route rules.

A rule's ``path`` is a template of literal segments, ``{param}`` segments (exactly one
non-empty segment) and an optional final ``/**`` (the prefix itself and everything below
it). Rules are validated here, once; :mod:`sidecar.routes` and :mod:`sidecar.rbac` compile
them into immutable runtime objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, field_validator, model_validator

from sidecar.config.loader import ConfigIssue, register_cross_check
from sidecar.config.types import StrictModel

if TYPE_CHECKING:
    from sidecar.config.models import SidecarConfig

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Methods a rule may list, in the order ``Allow`` headers use. TRACE and CONNECT are never
proxied."""

SignatureMode = Literal["required", "off"]

_PARAM_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# RFC 3986 pchar without pct-encoded, ";" (always rejected by path safety) and "*"
# (reserved for the final "/**").
_LITERAL_RE = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,=:@]+$")
# RFC 6749 §3.3 scope-token: also keeps the WWW-Authenticate scope="..." value well formed.
_SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_CLAIM_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")

PARAM = "{}"
"""Placeholder for any ``{param}`` segment in a :func:`pattern_key`."""
REST = "**"


def parse_template(path: str) -> tuple[str, ...]:
    """Split and validate a path template into segments.

    Returns the segments after the leading ``/``: literals, ``{name}`` and a final ``**``.
    An empty final segment is a literal trailing slash (``/`` alone is the root).

    Raises:
        ValueError: the template is malformed (the message says which segment and why).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("path must start with '/'")
    segments = tuple(path[1:].split("/"))
    names: set[str] = set()
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == "":
            if i != last:
                raise ValueError(f"empty segment in path {path!r} ('//' never matches)")
            continue
        if seg == REST:
            if i != last:
                raise ValueError("'**' is only allowed as the final segment ('/prefix/**')")
            continue
        param = _PARAM_RE.match(seg)
        if param is not None:
            if param.group(1) in names:
                raise ValueError(f"path parameter {{{param.group(1)}}} appears twice")
            names.add(param.group(1))
            continue
        if "{" in seg or "}" in seg:
            raise ValueError(
                f"segment {seg!r}: a {{param}} must be a whole segment named like an identifier"
            )
        if "*" in seg:
            raise ValueError(f"segment {seg!r}: '*' is only allowed as a final '/**'")
        if seg in (".", ".."):
            raise ValueError(f"segment {seg!r}: dot segments never reach the matcher")
        if "%" in seg:
            raise ValueError(f"segment {seg!r}: write literal segments unencoded")
        if not _LITERAL_RE.match(seg):
            raise ValueError(f"segment {seg!r} has characters a path segment cannot hold")
    return segments


def template_params(segments: tuple[str, ...]) -> tuple[str, ...]:
    """The ``{param}`` names of parsed template segments, in path order."""
    return tuple(seg[1:-1] for seg in segments if _PARAM_RE.match(seg))


def pattern_key(segments: tuple[str, ...]) -> tuple[str, ...]:
    """The template with every parameter name erased: ``/a/{x}`` and ``/a/{y}`` are equal."""
    return tuple(PARAM if _PARAM_RE.match(seg) else seg for seg in segments)


def _check_scopes(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not _SCOPE_RE.match(value):
            raise ValueError(f"invalid scope {value!r} (RFC 6749 scope-token: no spaces or quotes)")
    return values


def _check_names(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"invalid role name {value!r} (empty or contains whitespace)")
    return values


def _stringify_int(value: Any) -> Any:
    # A YAML `tier: 3` is meant as the string "3"; booleans stay errors.
    if isinstance(value, dict):
        return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in value.items()}
    return value


def _signature_mode(value: Any) -> Any:
    # YAML 1.1 reads an unquoted `off` as false and `on` as true.
    if value is True:
        return "required"
    if value is False:
        return "off"
    return value


class RequireConfig(StrictModel):
    """What a non-public rule requires of the verified identity. Every key must hold."""

    all_scopes: tuple[str, ...] = ()
    """Every one of these must be among the effective permissions."""
    any_scopes: tuple[str, ...] = ()
    """At least one of these must be among the effective permissions."""
    any_roles: tuple[str, ...] = ()
    """At least one of these must be among the effective roles."""
    claims: Annotated[dict[str, str], BeforeValidator(_stringify_int)] = {}
    """Claim (dotted path) -> literal value, or ``"{param}"``: equal to that path segment."""
    mtls: bool | None = None
    """True: the connection must have presented a verified client certificate."""

    @field_validator("all_scopes", "any_scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_scopes(value)

    @field_validator("any_roles")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_names(value)

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expected in value.items():
            if not _CLAIM_RE.match(name):
                raise ValueError(f"invalid claim name {name!r} (a dotted path like a.b)")
            if ("{" in expected or "}" in expected) and not _PARAM_RE.match(expected):
                raise ValueError(
                    f"claim {name}: a parameter reference is the whole value, like "
                    f'"{{merchant_id}}", got {expected!r}'
                )
        return value


class RuleConfig(StrictModel):
    """One route rule: a method set on a path template and what it requires."""

    name: str
    """Unique; the metric label, audit `rule` and log name of requests matching it."""
    path: str
    methods: tuple[str, ...]
    """Uppercase; GET also admits HEAD; OPTIONS only where listed."""
    public: bool = False
    """No token is validated and no identity is forwarded. Cannot have `require`."""
    require: RequireConfig | None = None
    signature: Annotated[SignatureMode | None, BeforeValidator(_signature_mode)] = None
    """required | off (YAML true/false too); unset or off follows `signatures.required`,
    which a rule cannot opt out of."""
    rate_limits: tuple[str, ...] = ()
    """Rate-limit policy names applied, after `rate_limits.default`, to this rule."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"invalid rule name {value!r}: 1-64 of A-Z a-z 0-9 . _ : - (it is a metric label)"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_template(value)
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one method")
        for method in value:
            if method.upper() in ALLOWED_METHODS and method != method.upper():
                raise ValueError(f"methods are case-sensitive: write {method.upper()!r}")
            if method not in ALLOWED_METHODS:
                raise ValueError(f"unknown method {method!r} (one of {', '.join(ALLOWED_METHODS)})")
        if len(set(value)) != len(value):
            raise ValueError("a method is listed twice")
        if "GET" in value and "HEAD" in value:
            raise ValueError("HEAD is implied by GET; list GET only")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        if self.public and self.require is not None:
            raise ValueError("a public rule must not have require (no token is validated)")
        if self.require is not None:
            params = set(template_params(parse_template(self.path)))
            for claim, expected in self.require.claims.items():
                ref = _PARAM_RE.match(expected)
                if ref is not None and ref.group(1) not in params:
                    known = ", ".join(sorted(params)) or "none"
                    raise ValueError(
                        f"require.claims.{claim}: {expected} is not a parameter of path "
                        f"{self.path!r} (parameters: {known})"
                    )
        return self

    @property
    def effective_methods(self) -> tuple[str, ...]:
        """The listed methods plus HEAD when GET is listed, in ``Allow`` order."""
        listed = set(self.methods) | ({"HEAD"} if "GET" in self.methods else set())
        return tuple(m for m in ALLOWED_METHODS if m in listed)


class RBACConfig(StrictModel):
    """Roles, static client roles and rules. Requests no rule matches are denied."""

    roles: dict[str, tuple[str, ...]] = {}
    """Role -> permissions (permissions are scope strings)."""
    clients: dict[str, tuple[str, ...]] = {}
    """client_id -> roles granted to every token of that client."""
    rules: tuple[RuleConfig, ...] = ()

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        _check_names(tuple(value))
        for perms in value.values():
            _check_scopes(perms)
        return value

    @field_validator("clients")
    @classmethod
    def _clients(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for client_id, roles in value.items():
            if not client_id:
                raise ValueError("empty client_id")
            _check_names(roles)
        return value


@register_cross_check
def check_rbac(config: SidecarConfig) -> Iterator[ConfigIssue]:
    """Whole-config checks: unique rule names, no two rules for one method and pattern,
    client roles that exist; warnings for ``any_roles`` no config grants, ``signature: off``
    under ``signatures.required`` and ``mtls`` without client certificates."""
    rbac = config.rbac
    if rbac is None:
        return
    names: dict[str, int] = {}
    owners: dict[tuple[str, tuple[str, ...]], int] = {}
    for i, rule in enumerate(rbac.rules):
        if rule.name in names:
            yield ConfigIssue(f"rbac.rules[{i}].name",
                              f"duplicate rule name {rule.name!r} "
                              f"(first at rbac.rules[{names[rule.name]}].name)")
        else:
            names[rule.name] = i
        key = pattern_key(parse_template(rule.path))
        clashes: list[tuple[str, int]] = []
        for method in rule.effective_methods:
            first = owners.setdefault((method, key), i)
            if first != i:
                clashes.append((method, first))
        if clashes:
            other = clashes[0][1]
            methods = ", ".join(m for m, j in clashes if j == other)
            yield ConfigIssue(
                f"rbac.rules[{i}].path",
                f"rule {rule.name!r} conflicts with rule {rbac.rules[other].name!r} "
                f"(rbac.rules[{other}].path): both match {methods} "
                f"{rule.path} (parameter names do not make paths different"
                f"{'; GET implies HEAD' if methods == 'HEAD' else ''})",
            )
    signatures_required = bool(getattr(config.signatures, "required", False))
    tls = config.server.tls
    client_certs = tls is not None and tls.client_ca_file is not None
    for i, rule in enumerate(rbac.rules):
        if rule.signature == "off" and signatures_required and not rule.public:
            yield ConfigIssue(f"rbac.rules[{i}].signature",
                              "warning: signature: off does not exempt a rule from "
                              "signatures.required")
        if rule.require is not None and rule.require.mtls and not client_certs:
            yield ConfigIssue(f"rbac.rules[{i}].require.mtls",
                              "warning: no request can satisfy mtls: "
                              "server.tls.client_ca_file is not set")
    granted = {role for roles in rbac.clients.values() for role in roles}
    for client_id, roles in rbac.clients.items():
        for j, role in enumerate(roles):
            if role not in rbac.roles:
                yield ConfigIssue(f"rbac.clients.{client_id}[{j}]",
                                  f"role {role!r} is not defined in rbac.roles")
    for i, rule in enumerate(rbac.rules):
        if rule.require is None:
            continue
        for j, role in enumerate(rule.require.any_roles):
            if role not in rbac.roles and role not in granted:
                yield ConfigIssue(
                    f"rbac.rules[{i}].require.any_roles[{j}]",
                    f"warning: role {role!r} is not in rbac.roles or rbac.clients; only a "
                    "token's roles claim can grant it",
                )
