"""Property: the compiled matcher and decision agree with a naive reference on random rule
sets, requests and identities; an allowed request always has a matching rule whose
requirements hold."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config.rbac import RBACConfig
from sidecar.context import ClientCert, Identity
from sidecar.problem import MethodNotAllowed, NoRoute
from sidecar.rbac import RBACAuthorizer
from sidecar.routes import RouteTable

LITERALS = ("a", "b", "c")
SCOPES = ("s1", "s2", "s3")
ROLES = ("r1", "r2", "r3")
CLIENTS = ("c1", "c2", "c3")
RULE_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
REQUEST_METHODS = ("GET", "HEAD", "POST", "DELETE", "OPTIONS", "PUT")
CERT = ClientCert(subject="CN=t", sans=(), sha256_thumbprint="t")

# Specificity of one template position: literal < {param} < end of template < /**.
LIT, PARAM, END, REST = 0, 1, 2, 3


@st.composite
def rule_sets(draw: st.DrawFn) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for i in range(draw(st.integers(1, 8))):
        segments: list[str] = []
        params: list[str] = []
        for pos in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                segments.append(draw(st.sampled_from(LITERALS)))
            else:
                params.append(f"p{pos}r{i}")
                segments.append("{" + params[-1] + "}")
        if draw(st.booleans()) or not segments:
            segments.append("**")
        key = tuple("{}" if s.startswith("{") else s for s in segments)
        methods = draw(st.lists(st.sampled_from(RULE_METHODS), min_size=1, max_size=3,
                                unique=True))
        methods = [m for m in methods if (m, key) not in seen]
        if not methods:
            continue
        seen.update((m, key) for m in methods)
        rule: dict[str, Any] = {"name": f"rule{i}", "path": "/" + "/".join(segments),
                                "methods": methods}
        if draw(st.integers(0, 4)) == 0:
            rule["public"] = True
        else:
            claims: dict[str, str] = {}
            if params and draw(st.booleans()):
                claims["tenant"] = "{" + draw(st.sampled_from(params)) + "}"
            if draw(st.integers(0, 3)) == 0:
                claims["tier"] = "gold"
            rule["require"] = {
                "all_scopes": draw(st.lists(st.sampled_from(SCOPES), max_size=2, unique=True)),
                "any_scopes": draw(st.lists(st.sampled_from(SCOPES), max_size=2, unique=True)),
                "any_roles": draw(st.lists(st.sampled_from(ROLES), max_size=2, unique=True)),
                "claims": claims,
                "mtls": draw(st.integers(0, 4)) == 0,
            }
        rules.append(rule)
    subsets = st.lists(st.sampled_from(SCOPES), max_size=3, unique=True)
    return {
        "roles": {r: draw(subsets) for r in ROLES if draw(st.booleans())},
        "clients": {c: draw(st.lists(st.sampled_from(ROLES), max_size=2, unique=True))
                    for c in CLIENTS[:2] if draw(st.booleans())},
        "rules": rules,
    }


@st.composite
def identities(draw: st.DrawFn) -> Identity | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    claims: dict[str, Any] = {}
    if draw(st.booleans()):
        claims["tenant"] = draw(st.sampled_from(("a", "b", "x", 7)))
    if draw(st.booleans()):
        claims["tier"] = draw(st.sampled_from(("gold", "silver", True)))
    client_id = draw(st.sampled_from(CLIENTS))
    return Identity(
        client_id=client_id, subject=client_id, issuer="iss",
        scopes=frozenset(draw(st.lists(st.sampled_from(SCOPES), max_size=3))),
        roles=frozenset(draw(st.lists(st.sampled_from(ROLES), max_size=2))),
        claims=MappingProxyType(claims), expires_at=0.0,
    )


paths = st.lists(st.sampled_from((*LITERALS, "x", "7")), max_size=4).map(
    lambda segs: "/" + "/".join(segs))


# --- the naive reference: a linear scan with the documented precedence ------------------

@dataclass(frozen=True)
class Outcome:
    kind: str  # no_route | method_not_allowed | decided
    rule: str = ""
    params: tuple[tuple[str, str], ...] = ()
    allow: frozenset[str] = frozenset()
    reason: str = ""
    detail: str = ""


def template_matches(template: list[str], segs: list[str]) -> dict[str, str] | None:
    rest = bool(template) and template[-1] == "**"
    fixed = template[:-1] if rest else template
    if len(segs) < len(fixed) or (not rest and len(segs) != len(fixed)):
        return None
    params: dict[str, str] = {}
    for t, s in zip(fixed, segs, strict=False):
        if t.startswith("{"):
            if not s:
                return None
            params[t[1:-1]] = s
        elif t != s:
            return None
    return params


def specificity(template: list[str]) -> tuple[int, ...]:
    kinds = [REST if t == "**" else PARAM if t.startswith("{") else LIT for t in template]
    return tuple(kinds) if kinds and kinds[-1] == REST else (*kinds, END)


def reference(cfg: dict[str, Any], identity: Identity | None, method: str, path: str,
              cert: bool) -> Outcome:
    segs = path[1:].split("/")
    candidates = []
    for rule in cfg["rules"]:
        template = rule["path"][1:].split("/")
        params = template_matches(template, segs)
        if params is not None:
            candidates.append((specificity(template), rule, params))
    if not candidates:
        return Outcome("no_route")
    best = min(c[0] for c in candidates)
    allowed_here = {}
    for spec, rule, params in candidates:
        if spec == best:
            for m in rule["methods"] + (["HEAD"] if "GET" in rule["methods"] else []):
                allowed_here[m] = (rule, params)
    if method not in allowed_here:
        return Outcome("method_not_allowed", allow=frozenset(allowed_here))
    rule, params = allowed_here[method]
    reason, detail = evaluate(cfg, rule, params, identity, cert)
    return Outcome("decided", rule["name"], tuple(sorted(params.items())), reason=reason,
                   detail=detail)


def evaluate(cfg: dict[str, Any], rule: dict[str, Any], params: dict[str, str],
             identity: Identity | None, cert: bool) -> tuple[str, str]:
    if rule.get("public"):
        return "ok", "public"
    if identity is None:
        return "token_missing", "unauthenticated"
    roles = set(identity.roles) | set(cfg["clients"].get(identity.client_id, []))
    perms = set(identity.scopes)
    for role in roles:
        perms |= set(cfg["roles"].get(role, []))
    req = rule["require"]
    if not set(req["all_scopes"]) <= perms:
        return "insufficient_scope", "missing_scope"
    if req["any_scopes"] and not set(req["any_scopes"]) & perms:
        return "insufficient_scope", "missing_scope"
    if req["any_roles"] and not set(req["any_roles"]) & roles:
        return "forbidden", "missing_role"
    for claim, expected in req["claims"].items():
        if expected.startswith("{"):
            expected = params[expected[1:-1]]
        if claim not in identity.claims:
            return "forbidden", "claim_missing"
        value = identity.claims[claim]
        if type(value) not in (str, int):
            return "forbidden", "claim_type"
        if str(value) != expected:
            return "forbidden", "claim_mismatch"
    if req["mtls"] and not cert:
        return "forbidden", "mtls_required"
    return "ok", "ok"


def implementation(table: RouteTable, authorizer: RBACAuthorizer, identity: Identity | None,
                   method: str, path: str, cert: bool) -> Outcome:
    try:
        route = table.match(method, path)
    except NoRoute:
        return Outcome("no_route")
    except MethodNotAllowed as exc:
        return Outcome("method_not_allowed", allow=frozenset(exc.headers["Allow"].split(", ")))
    decision = authorizer.decide(identity, route, CERT if cert else None)
    return Outcome("decided", route.name, tuple(sorted(route.params.items())),
                   reason=decision.reason, detail=decision.detail)


@settings(max_examples=300, deadline=None)
@given(cfg=rule_sets(), identity=identities(), method=st.sampled_from(REQUEST_METHODS),
       path=paths, cert=st.booleans())
def test_the_compiled_policy_agrees_with_a_naive_linear_scan(
        cfg: dict[str, Any], identity: Identity | None, method: str, path: str,
        cert: bool) -> None:
    rbac = RBACConfig.model_validate(cfg)
    table, authorizer = RouteTable.from_config(rbac), RBACAuthorizer.from_config(rbac)
    got = implementation(table, authorizer, identity, method, path, cert)
    assert got == reference(cfg, identity, method, path, cert)
    if got.reason == "ok":
        # allowed => some rule matches the path and method, and its requirements hold
        rule = next(r for r in cfg["rules"] if r["name"] == got.rule)
        assert template_matches(rule["path"][1:].split("/"), path[1:].split("/")) is not None
        assert method in rule["methods"] or (method == "HEAD" and "GET" in rule["methods"])
        assert evaluate(cfg, rule, dict(got.params), identity, cert) == ("ok", got.detail)
