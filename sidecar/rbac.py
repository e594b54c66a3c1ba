"""Step 4: does the verified identity satisfy the matched rule? (pure)

Effective roles are the token's roles claim plus ``rbac.clients[client_id]``; effective
permissions are the token's scopes plus the permissions of every effective role. A rule's
``require`` is checked in a fixed order (all_scopes, any_scopes, any_roles, claims, mtls)
and the first failure decides the reason: ``insufficient_scope`` for scopes, ``forbidden``
for everything else. :class:`Decision` keeps the finer ``detail`` (``missing_role``,
``claim_mismatch``, ...) for ``sidecar explain``, logs and audit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.config.rbac import (
    RBACConfig,
    RuleConfig,
    SignatureMode,
    parse_template,
    template_params,
)
from sidecar.context import ClientCert, Identity, RouteMatch
from sidecar.problem import SidecarError

_EMPTY: frozenset[str] = frozenset()
_SCOPE_CHECKS = frozenset({"all_scopes", "any_scopes"})
MISSING: Any = object()
"""What :func:`claim_value` returns for an absent claim."""


class Forbidden(SidecarError):
    """403: a role, claim binding or mTLS requirement of the rule is not met."""

    status, code, title, stage = 403, "forbidden", "Forbidden", "rbac"
    detail = "The caller is not allowed to perform this request."

    def __init__(self, log_detail: str = "", *, reason_detail: str = "forbidden") -> None:
        super().__init__(log_detail)
        self.reason_detail = reason_detail
        """Finer cause for logs and audit: missing_role, claim_mismatch, mtls_required, ..."""


class InsufficientScope(SidecarError):
    """403 with the RFC 6750 §3.1 challenge naming the scopes the rule needs."""

    status, code, title, stage = 403, "insufficient_scope", "Insufficient scope", "rbac"
    detail = "The access token does not carry the scope this request requires."

    def __init__(self, log_detail: str = "", *, scopes: tuple[str, ...] = (),
                 realm: str | None = None, reason_detail: str = "missing_scope") -> None:
        quoted = (realm or "").replace("\\", "\\\\").replace('"', '\\"')
        challenge = f'Bearer realm="{quoted}", ' if realm else "Bearer "
        challenge += 'error="insufficient_scope"'
        if scopes:
            # Scope tokens are validated at config load (RFC 6749 §3.3): no quote, no space.
            challenge += f', scope="{" ".join(scopes)}"'
        super().__init__(log_detail, headers={"WWW-Authenticate": challenge})
        self.scopes = scopes
        self.reason_detail = reason_detail


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """``claim`` (a dotted path) must equal ``literal`` or the path parameter ``param``."""

    claim: str
    literal: str | None
    param: str | None


@dataclass(frozen=True, slots=True)
class Requirement:
    """A rule's compiled ``require``; an empty one admits any authenticated caller."""

    all_scopes: tuple[str, ...] = ()
    any_scopes: tuple[str, ...] = ()
    any_roles: tuple[str, ...] = ()
    claims: tuple[ClaimCondition, ...] = ()
    mtls: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule: what ``RouteMatch.rule`` holds."""

    name: str
    index: int
    """Position in ``rbac.rules``."""
    path: str
    segments: tuple[str, ...]
    param_names: tuple[str, ...]
    methods: tuple[str, ...]
    """Accepted methods in ``Allow`` order (HEAD included when GET is listed)."""
    public: bool
    require: Requirement
    signature: SignatureMode | None
    """required | off | None (unset); only ``required`` adds to ``signatures.required``."""
    rate_limits: tuple[str, ...]


def compile_rule(cfg: RuleConfig, index: int) -> Rule:
    """Compile one validated rule config (no validation happens here)."""
    segments = parse_template(cfg.path)
    req = cfg.require
    requirement = Requirement()
    if req is not None:
        conditions = []
        for claim, expected in req.claims.items():
            is_param = expected.startswith("{") and expected.endswith("}")
            conditions.append(ClaimCondition(claim, None if is_param else expected,
                                             expected[1:-1] if is_param else None))
        requirement = Requirement(
            all_scopes=tuple(sorted(set(req.all_scopes))),
            any_scopes=tuple(sorted(set(req.any_scopes))),
            any_roles=tuple(sorted(set(req.any_roles))),
            claims=tuple(conditions),
            mtls=bool(req.mtls),
        )
    return Rule(
        name=cfg.name, index=index, path=cfg.path, segments=segments,
        param_names=template_params(segments), methods=cfg.effective_methods,
        public=cfg.public, require=requirement, signature=cfg.signature,
        rate_limits=cfg.rate_limits,
    )


@dataclass(frozen=True, slots=True)
class Check:
    """One evaluated condition of a rule's ``require``."""

    kind: str
    """all_scopes | any_scopes | any_roles | claim | mtls"""
    ok: bool
    detail: str
    """ok, or why not: missing_scope, missing_role, claim_missing, claim_mismatch,
    claim_type, mtls_required."""
    required: tuple[str, ...]
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The RBAC verdict and the evidence ``sidecar explain`` prints."""

    allowed: bool
    reason: str
    """ok | insufficient_scope | forbidden | token_missing (the problem code)."""
    detail: str
    """ok | public | unauthenticated | a failing :attr:`Check.detail`."""
    rule: str
    roles: frozenset[str] = _EMPTY
    """Effective roles (token claim + ``rbac.clients``)."""
    permissions: frozenset[str] = _EMPTY
    """Effective permissions (token scopes + role permissions)."""
    required_scopes: tuple[str, ...] = ()
    """The scopes of the failing scope check, for ``WWW-Authenticate: ... scope=``."""
    missing: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()
    """Every condition of the rule, evaluated (only with ``exhaustive=True``)."""


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``: an exact key first (``https://x.example/tenant``), else the dotted
    path through nested objects (``realm_access.roles``). Returns a sentinel when missing."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def _claim_failure(cond: ClaimCondition, claims: Mapping[str, Any],
                   params: Mapping[str, str]) -> str | None:
    """None when the claim condition holds, else the failure detail."""
    value = claim_value(claims, cond.claim)
    if value is MISSING or value is None:
        return "claim_missing"
    # SECURITY: compare as strings, exactly. Only str and int claims can match; a bool,
    # float, list or object never does (no truthiness, no "1.0" == "1", no membership).
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "claim_type"
    expected = cond.literal if cond.param is None else params.get(cond.param)
    if expected is None or str(value) != expected:
        return "claim_mismatch"
    return None


def _claim_check(cond: ClaimCondition, claims: Mapping[str, Any], params: Mapping[str, str],
                 detail: str | None) -> Check:
    expected = cond.literal if cond.param is None else params.get(cond.param)
    required = (f"{cond.claim}={expected}",)
    if detail is None:
        return Check("claim", True, "ok", required)
    return Check("claim", False, detail, required, (cond.claim,))


def _checks(req: Requirement, permissions: frozenset[str], roles: frozenset[str],
            identity: Identity, params: Mapping[str, str],
            client_cert: ClientCert | None) -> Iterator[Check]:
    """Every condition of ``req``, evaluated, in the documented order."""
    if req.all_scopes:
        missing = tuple(s for s in req.all_scopes if s not in permissions)
        yield Check("all_scopes", not missing, "missing_scope" if missing else "ok",
                    req.all_scopes, missing)
    if req.any_scopes:
        ok = not permissions.isdisjoint(req.any_scopes)
        yield Check("any_scopes", ok, "ok" if ok else "missing_scope", req.any_scopes,
                    () if ok else req.any_scopes)
    if req.any_roles:
        ok = not roles.isdisjoint(req.any_roles)
        yield Check("any_roles", ok, "ok" if ok else "missing_role", req.any_roles,
                    () if ok else req.any_roles)
    for cond in req.claims:
        yield _claim_check(cond, identity.claims, params,
                           _claim_failure(cond, identity.claims, params))
    if req.mtls:
        ok = client_cert is not None
        yield Check("mtls", ok, "ok" if ok else "mtls_required", ("client certificate",))


def _first_failure(req: Requirement, permissions: frozenset[str], roles: frozenset[str],
                   identity: Identity, params: Mapping[str, str],
                   client_cert: ClientCert | None) -> Check | None:
    """The first failing condition of :func:`_checks`, without building the passing ones
    (the hot path)."""
    for scope in req.all_scopes:
        if scope not in permissions:
            missing = tuple(s for s in req.all_scopes if s not in permissions)
            return Check("all_scopes", False, "missing_scope", req.all_scopes, missing)
    if req.any_scopes and permissions.isdisjoint(req.any_scopes):
        return Check("any_scopes", False, "missing_scope", req.any_scopes, req.any_scopes)
    if req.any_roles and roles.isdisjoint(req.any_roles):
        return Check("any_roles", False, "missing_role", req.any_roles, req.any_roles)
    for cond in req.claims:
        detail = _claim_failure(cond, identity.claims, params)
        if detail is not None:
            return _claim_check(cond, identity.claims, params, detail)
    if req.mtls and client_cert is None:
        return Check("mtls", False, "mtls_required", ("client certificate",))
    return None


def effective_roles(identity: Identity, clients_map: Mapping[str, frozenset[str]]
                    ) -> frozenset[str]:
    """The token's roles plus the static roles of its client."""
    static = clients_map.get(identity.client_id, _EMPTY)
    return identity.roles | static if static else identity.roles


def effective_permissions(identity: Identity, roles: frozenset[str],
                          roles_map: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The token's scopes plus every permission the roles grant."""
    granted = [roles_map[r] for r in roles if r in roles_map]
    return identity.scopes.union(*granted) if granted else identity.scopes


def decide(identity: Identity | None, rule: Rule, params: Mapping[str, str],
           client_cert: ClientCert | None, roles_map: Mapping[str, frozenset[str]],
           clients_map: Mapping[str, frozenset[str]], *, exhaustive: bool = False
           ) -> Decision:
    """Decide whether ``identity`` may make a request that matched ``rule``.

    ``identity`` is None for an anonymous caller: allowed on public rules, otherwise denied
    with ``token_missing``. With ``exhaustive`` every condition is evaluated (for explain);
    otherwise evaluation stops at the first failure. Never raises.
    """
    if rule.public:
        return Decision(True, "ok", "public", rule.name)
    if identity is None:
        return Decision(False, "token_missing", "unauthenticated", rule.name)
    roles = effective_roles(identity, clients_map)
    permissions = effective_permissions(identity, roles, roles_map)
    req = rule.require
    if exhaustive:
        checks = tuple(_checks(req, permissions, roles, identity, params, client_cert))
        failed = next((c for c in checks if not c.ok), None)
    else:
        checks = ()
        failed = _first_failure(req, permissions, roles, identity, params, client_cert)
    if failed is None:
        return Decision(True, "ok", "ok", rule.name, roles, permissions, checks=checks)
    return _denial(failed, rule.name, roles, permissions, checks)


def _denial(failed: Check, rule: str, roles: frozenset[str], permissions: frozenset[str],
            checks: tuple[Check, ...] = ()) -> Decision:
    scope_failure = failed.kind in _SCOPE_CHECKS
    return Decision(
        False, "insufficient_scope" if scope_failure else "forbidden", failed.detail,
        rule, roles, permissions,
        required_scopes=failed.required if scope_failure else (),
        missing=failed.missing, checks=checks,
    )


def role_permissions(cfg: RBACConfig) -> dict[str, frozenset[str]]:
    """``rbac.roles`` compiled: role -> frozenset of permissions."""
    return {role: frozenset(perms) for role, perms in cfg.roles.items()}


def client_roles(cfg: RBACConfig) -> dict[str, frozenset[str]]:
    """``rbac.clients`` compiled: client_id -> frozenset of roles."""
    return {client: frozenset(roles) for client, roles in cfg.clients.items()}


_MEMO_MAX = 10_000
"""Verified identities whose effective roles are remembered (the token cache's order)."""


class RBACAuthorizer:
    """The :class:`sidecar.stages.Authorizer` over compiled ``rbac`` roles and clients."""

    def __init__(self, roles_map: Mapping[str, frozenset[str]],
                 clients_map: Mapping[str, frozenset[str]], *, realm: str | None = None) -> None:
        self._roles = dict(roles_map)
        self._clients = dict(clients_map)
        self._realm = realm
        self._memo: dict[int, tuple[Identity, frozenset[str], frozenset[str]]] = {}

    @classmethod
    def from_config(cls, cfg: RBACConfig, *, realm: str | None = None) -> RBACAuthorizer:
        """Compile ``rbac.roles`` and ``rbac.clients``; ``realm`` goes into challenges."""
        return cls(role_permissions(cfg), client_roles(cfg), realm=realm)

    def decide(self, identity: Identity | None, route: RouteMatch,
               client_cert: ClientCert | None, *, exhaustive: bool = False) -> Decision:
        """:func:`decide` for a route match of this table."""
        rule = route.rule
        if not isinstance(rule, Rule):
            raise TypeError("RouteMatch.rule must be a sidecar.rbac.Rule")
        return decide(identity, rule, route.params, client_cert, self._roles, self._clients,
                      exhaustive=exhaustive)

    def _effective(self, identity: Identity) -> tuple[frozenset[str], frozenset[str]]:
        """Effective roles and permissions, memoised per verified identity.

        The token cache hands out the same Identity object for every request of a token,
        so this is computed once per token. The entry keeps the identity alive, so its id
        cannot be reused while the entry exists.
        """
        memo = self._memo.get(id(identity))
        if memo is not None and memo[0] is identity:
            return memo[1], memo[2]
        roles = effective_roles(identity, self._clients)
        permissions = effective_permissions(identity, roles, self._roles)
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[id(identity)] = (identity, roles, permissions)
        return roles, permissions

    def authorize(self, identity: Identity, route: RouteMatch,
                  client_cert: ClientCert | None) -> frozenset[str]:
        """Allow, returning the effective roles (token roles plus ``rbac.clients``), or raise.

        Raises:
            InsufficientScope: a scope requirement failed (403 with the RFC 6750 challenge).
            Forbidden: a role, claim or mTLS requirement failed (403).
        """
        rule = route.rule
        if not isinstance(rule, Rule):
            raise TypeError("RouteMatch.rule must be a sidecar.rbac.Rule")
        roles, all_permissions = self._effective(identity)
        if rule.public:
            return roles
        req = rule.require
        permissions = all_permissions if req.all_scopes or req.any_scopes else _EMPTY
        failed = _first_failure(req, permissions, roles, identity, route.params, client_cert)
        if failed is None:
            return roles
        log = f"rule {rule.name}: {failed.detail}"
        if failed.missing:
            # Names of scopes, roles or claims only, never claim values.
            log += f" ({', '.join(failed.missing)})"
        if failed.kind in _SCOPE_CHECKS:
            raise InsufficientScope(log, scopes=failed.required, realm=self._realm,
                                    reason_detail=failed.detail)
        raise Forbidden(log, reason_detail=failed.detail)


__all__ = [
    "MISSING",
    "Check",
    "ClaimCondition",
    "Decision",
    "Forbidden",
    "InsufficientScope",
    "RBACAuthorizer",
    "Requirement",
    "Rule",
    "claim_value",
    "compile_rule",
    "decide",
]
