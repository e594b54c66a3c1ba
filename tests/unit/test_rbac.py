"""The RBAC decision: scopes, roles, static client roles, claim bindings, mTLS, and the
config that feeds it."""

from __future__ import annotations

import textwrap
from types import MappingProxyType
from typing import Any

import pytest

from sidecar.config import ConfigError, parse_text
from sidecar.context import ClientCert, Identity
from sidecar.policy import ClaimMapping, identity_from_claims
from sidecar.rbac import Forbidden, InsufficientScope, RBACAuthorizer, decide
from sidecar.routes import RouteTable

CONFIG = """
rbac:
  roles:
    merchant: [payments:read, payments:write]
    auditor: [payments:read, reports:read]
    refunds-admin: [refunds:write]
  clients:
    merchant-a: [merchant]
    backoffice: [auditor, refunds-admin]
  rules:
    - name: health
      path: /v1/health
      methods: [GET]
      public: true
    - name: read-payment
      path: /v1/merchants/{merchant_id}/payments/{payment_id}
      methods: [GET]
      require:
        all_scopes: [payments:read]
        claims: {merchant_id: "{merchant_id}"}
    - name: refund
      path: /v1/payments/{payment_id}/refunds
      methods: [POST]
      require: {any_roles: [refunds-admin]}
    - name: report
      path: /v1/reports/{kind}
      methods: [GET]
      require: {any_scopes: [reports:read, reports:admin]}
    - name: settle
      path: /v1/settlements
      methods: [POST]
      require: {all_scopes: [settlements:write, payments:write], mtls: true}
    - name: tenant
      path: /v1/tenants/{tenant}/ledger
      methods: [GET]
      require:
        claims: {org.tenant: "{tenant}", tier: gold, https://example.com/region: eu}
    - name: whoami
      path: /v1/whoami
      methods: [GET]
"""

CERT = ClientCert(subject="CN=merchant-a", sans=(), sha256_thumbprint="abc")


@pytest.fixture(scope="module")
def table() -> RouteTable:
    rbac = parse_text(CONFIG).config.rbac
    assert rbac is not None
    return RouteTable.from_config(rbac)


@pytest.fixture(scope="module")
def authorizer() -> RBACAuthorizer:
    rbac = parse_text(CONFIG).config.rbac
    assert rbac is not None
    return RBACAuthorizer.from_config(rbac, realm="payments")


def ident(client_id: str = "someone", scopes: str = "", roles: str = "",
          **claims: Any) -> Identity:
    return Identity(
        client_id=client_id, subject=client_id, issuer="https://idp.example/",
        scopes=frozenset(scopes.split()), roles=frozenset(roles.split()),
        claims=MappingProxyType({"client_id": client_id, **claims}), expires_at=0.0,
    )


CASES: list[tuple[str, Identity | None, str, str, bool, str, str]] = [
    # id, identity, method, path, client cert?, reason, detail
    ("a public rule admits an anonymous caller",
     None, "GET", "/v1/health", False, "ok", "public"),
    ("a protected rule denies an anonymous caller as token_missing",
     None, "GET", "/v1/whoami", False, "token_missing", "unauthenticated"),
    ("a rule without require admits any authenticated caller",
     ident(), "GET", "/v1/whoami", False, "ok", "ok"),
    ("a merchant reads its own payment",
     ident("m", "payments:read", merchant_id="m-1"), "GET", "/v1/merchants/m-1/payments/p-1",
     False, "ok", "ok"),
    ("BOLA: merchant A's token on merchant B's path is forbidden",
     ident("m", "payments:read", merchant_id="m-1"), "GET", "/v1/merchants/m-2/payments/p-1",
     False, "forbidden", "claim_mismatch"),
    ("a claim binding compares exactly, not by prefix or case",
     ident("m", "payments:read", merchant_id="M-1"), "GET", "/v1/merchants/m-1/payments/p",
     False, "forbidden", "claim_mismatch"),
    ("a claim binding compares with the raw, still-encoded path segment",
     ident("m", "payments:read", merchant_id="m 1"), "GET", "/v1/merchants/m%201/payments/p",
     False, "forbidden", "claim_mismatch"),
    ("a missing bound claim is forbidden",
     ident("m", "payments:read"), "GET", "/v1/merchants/m-1/payments/p-1",
     False, "forbidden", "claim_missing"),
    ("a null bound claim is forbidden",
     ident("m", "payments:read", merchant_id=None), "GET", "/v1/merchants/m-1/payments/p-1",
     False, "forbidden", "claim_missing"),
    ("an integer claim is compared as its decimal string",
     ident("m", "payments:read", merchant_id=42), "GET", "/v1/merchants/42/payments/p",
     False, "ok", "ok"),
    ("a boolean claim never matches",
     ident("m", "payments:read", merchant_id=True), "GET", "/v1/merchants/True/payments/p",
     False, "forbidden", "claim_type"),
    ("a list claim never matches, even when it contains the value",
     ident("m", "payments:read", merchant_id=["m-1"]), "GET", "/v1/merchants/m-1/payments/p",
     False, "forbidden", "claim_type"),
    ("a float claim never matches",
     ident("m", "payments:read", merchant_id=1.0), "GET", "/v1/merchants/1.0/payments/p",
     False, "forbidden", "claim_type"),
    ("a missing scope is insufficient_scope, checked before claims",
     ident("m", "payments:write", merchant_id="m-2"), "GET", "/v1/merchants/m-1/payments/p",
     False, "insufficient_scope", "missing_scope"),
    ("a role grants its permissions as scopes",
     ident("m", roles="auditor", merchant_id="m-1"), "GET", "/v1/merchants/m-1/payments/p",
     False, "ok", "ok"),
    ("rbac.clients grants static roles and their permissions",
     ident("merchant-a", merchant_id="m-1"), "GET", "/v1/merchants/m-1/payments/p",
     False, "ok", "ok"),
    ("a role from rbac.clients satisfies any_roles",
     ident("backoffice"), "POST", "/v1/payments/p/refunds", False, "ok", "ok"),
    ("a role from the token satisfies any_roles",
     ident("x", roles="refunds-admin"), "POST", "/v1/payments/p/refunds", False, "ok", "ok"),
    ("a role missing from token and client is forbidden",
     ident("merchant-a", "refunds:write"), "POST", "/v1/payments/p/refunds",
     False, "forbidden", "missing_role"),
    ("a scope with a role's name does not grant the role",
     ident("x", "refunds-admin"), "POST", "/v1/payments/p/refunds",
     False, "forbidden", "missing_role"),
    ("any_scopes is met by one of them",
     ident("x", "reports:admin"), "GET", "/v1/reports/daily", False, "ok", "ok"),
    ("any_scopes is met by a role permission",
     ident("backoffice"), "GET", "/v1/reports/daily", False, "ok", "ok"),
    ("any_scopes with none held is insufficient_scope",
     ident("x", "payments:read"), "GET", "/v1/reports/daily",
     False, "insufficient_scope", "missing_scope"),
    ("all_scopes needs every scope",
     ident("x", "settlements:write"), "POST", "/v1/settlements",
     True, "insufficient_scope", "missing_scope"),
    ("mtls requires a client certificate",
     ident("x", "settlements:write payments:write"), "POST", "/v1/settlements",
     False, "forbidden", "mtls_required"),
    ("mtls is met by a verified client certificate",
     ident("x", "settlements:write payments:write"), "POST", "/v1/settlements",
     True, "ok", "ok"),
    ("dotted, literal and URL-named claims all must hold",
     ident("x", **{"org": {"tenant": "t1"}, "tier": "gold", "https://example.com/region": "eu"}),
     "GET", "/v1/tenants/t1/ledger", False, "ok", "ok"),
    ("a dotted claim binding on another tenant is forbidden",
     ident("x", **{"org": {"tenant": "t1"}, "tier": "gold", "https://example.com/region": "eu"}),
     "GET", "/v1/tenants/t2/ledger", False, "forbidden", "claim_mismatch"),
    ("a literal claim condition must match",
     ident("x", **{"org": {"tenant": "t1"}, "tier": "silver",
                   "https://example.com/region": "eu"}),
     "GET", "/v1/tenants/t1/ledger", False, "forbidden", "claim_mismatch"),
    ("a dotted path through a non-object is a missing claim",
     ident("x", **{"org": "t1", "tier": "gold", "https://example.com/region": "eu"}),
     "GET", "/v1/tenants/t1/ledger", False, "forbidden", "claim_missing"),
]


@pytest.mark.parametrize(("identity", "method", "path", "cert", "reason", "detail"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_decision(table: RouteTable, authorizer: RBACAuthorizer, identity: Identity | None,
                      method: str, path: str, cert: bool, reason: str, detail: str) -> None:
    decision = authorizer.decide(identity, table.match(method, path), CERT if cert else None)
    assert (decision.allowed, decision.reason, decision.detail) == (reason == "ok", reason,
                                                                   detail)


def test_effective_permissions_and_roles_are_reported(table: RouteTable,
                                                      authorizer: RBACAuthorizer) -> None:
    route = table.match("GET", "/v1/whoami")
    decision = authorizer.decide(ident("backoffice", "extra", roles="custom"), route, None)
    assert decision.roles == {"auditor", "refunds-admin", "custom"}
    assert decision.permissions == {"extra", "payments:read", "reports:read", "refunds:write"}


def test_exhaustive_evaluation_reports_every_condition(table: RouteTable,
                                                       authorizer: RBACAuthorizer) -> None:
    route = table.match("POST", "/v1/settlements")
    decision = authorizer.decide(ident("x"), route, None, exhaustive=True)
    assert [(c.kind, c.ok, c.detail) for c in decision.checks] == [
        ("all_scopes", False, "missing_scope"), ("mtls", False, "mtls_required")]
    assert decision.missing == ("payments:write", "settlements:write")
    assert authorizer.decide(ident("x"), route, None).checks == ()


def test_a_missing_scope_raises_insufficient_scope_with_the_rfc6750_challenge(
        table: RouteTable, authorizer: RBACAuthorizer) -> None:
    with pytest.raises(InsufficientScope) as caught:
        authorizer.authorize(ident("x", "payments:write"), table.match("POST", "/v1/settlements"),
                             CERT)
    err = caught.value
    assert (err.status, err.code, err.stage) == (403, "insufficient_scope", "rbac")
    assert err.headers["WWW-Authenticate"] == (
        'Bearer realm="payments", error="insufficient_scope", '
        'scope="payments:write settlements:write"')
    assert "settlements:write" in err.log_detail


def test_a_failed_claim_binding_raises_forbidden_without_claim_values(
        table: RouteTable, authorizer: RBACAuthorizer) -> None:
    with pytest.raises(Forbidden) as caught:
        authorizer.authorize(ident("m", "payments:read", merchant_id="m-secret-1"),
                             table.match("GET", "/v1/merchants/m-2/payments/p"), None)
    err = caught.value
    assert (err.status, err.code, err.stage, err.reason_detail) == (
        403, "forbidden", "rbac", "claim_mismatch")
    assert "m-secret-1" not in err.log_detail
    assert "WWW-Authenticate" not in err.headers


def test_an_allowed_request_raises_nothing(table: RouteTable,
                                           authorizer: RBACAuthorizer) -> None:
    authorizer.authorize(ident("merchant-a", merchant_id="m-1"),
                         table.match("GET", "/v1/merchants/m-1/payments/p"), None)


def test_insufficient_scope_without_realm_or_scopes_is_a_bare_challenge() -> None:
    assert InsufficientScope().headers == {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}


def test_decide_is_a_pure_function_of_its_arguments(table: RouteTable) -> None:
    route = table.match("POST", "/v1/payments/p/refunds")
    args = (route.rule, route.params, None)
    denied = decide(ident("c"), *args, {}, {})
    allowed = decide(ident("c"), *args, {}, {"c": frozenset({"refunds-admin"})})
    assert (denied.allowed, allowed.allowed) == (False, True)


# --- identity from claims (explain / policy-test) ---------------------------------------

IDENTITIES = [
    ("client_id wins over azp and sub", {"client_id": "a", "azp": "b", "sub": "c"}, None,
     "a", set(), set()),
    ("azp is the first fallback", {"azp": "b", "sub": "c"}, None, "b", set(), set()),
    ("sub is the last fallback", {"sub": "c"}, None, "c", set(), set()),
    ("a scope string is split on spaces", {"sub": "c", "scope": "a b  c"}, None, "c",
     {"a", "b", "c"}, set()),
    ("an scp list is read when scope is absent", {"sub": "c", "scp": ["a", "b"]}, None, "c",
     {"a", "b"}, set()),
    ("roles come from the roles claim", {"sub": "c", "roles": ["r1", "r2"]}, None, "c", set(),
     {"r1", "r2"}),
    ("a configured dotted roles path is followed",
     {"sub": "c", "realm_access": {"roles": ["r1"]}},
     ClaimMapping(roles=("realm_access.roles",)), "c", set(), {"r1"}),
]


@pytest.mark.parametrize(("claims", "mapping", "client_id", "scopes", "roles"),
                         [c[1:] for c in IDENTITIES], ids=[c[0] for c in IDENTITIES])
def test_identity_from_claims(claims: dict[str, Any], mapping: ClaimMapping | None,
                              client_id: str, scopes: set[str], roles: set[str]) -> None:
    identity = identity_from_claims(claims, mapping)
    assert (identity.client_id, identity.scopes, identity.roles) == (client_id, scopes, roles)


@pytest.mark.parametrize("claims", [{"scope": "a"}, {"sub": "c", "scope": 3},
                                    {"sub": "c", "roles": [1]}],
                         ids=["no client id claim", "a numeric scope claim",
                              "a non-string role"])
def test_claims_the_proxy_would_reject_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="claim"):
        identity_from_claims(claims)


# --- the rbac config section ------------------------------------------------------------

def _errors(rbac: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_text("rbac:\n" + textwrap.indent(textwrap.dedent(rbac), "  "))
    return str(caught.value)


INVALID = [
    ("a public rule cannot have require",
     """\
     rules:
       - {name: a, path: /x, methods: [GET], public: true, require: {any_roles: [r]}}
     """, "rbac.rules[0]: a public rule must not have require"),
    ("a claim may only reference a param of its own path",
     """\
     rules:
       - {name: a, path: "/m/{id}", methods: [GET], require: {claims: {m: "{merchant}"}}}
     """, "{merchant} is not a parameter of path '/m/{id}' (parameters: id)"),
    ("a claim value cannot embed a param reference",
     """\
     rules:
       - {name: a, path: "/m/{id}", methods: [GET], require: {claims: {m: "x-{id}"}}}
     """, "rbac.rules[0].require.claims: claim m: a parameter reference is the whole value"),
    ("methods are uppercase",
     """\
     rules:
       - {name: a, path: /x, methods: [get]}
     """, "rbac.rules[0].methods: methods are case-sensitive: write 'GET'"),
    ("unknown methods are refused",
     """\
     rules:
       - {name: a, path: /x, methods: [TRACE]}
     """, "unknown method 'TRACE'"),
    ("methods are required",
     """\
     rules:
       - {name: a, path: /x}
     """, "rbac.rules[0].methods: Field required"),
    ("HEAD beside GET is redundant",
     """\
     rules:
       - {name: a, path: /x, methods: [GET, HEAD]}
     """, "HEAD is implied by GET"),
    ("a scope with a space is refused",
     """\
     rules:
       - {name: a, path: /x, methods: [GET], require: {all_scopes: ["a b"]}}
     """, "invalid scope 'a b'"),
    ("a role permission with a quote is refused",
     """\
     roles: {r: ['a"b']}
     """, "rbac.roles: invalid scope"),
    ("a rule name must be a safe metric label",
     """\
     rules:
       - {name: "a rule", path: /x, methods: [GET]}
     """, "invalid rule name 'a rule'"),
    ("unknown keys are refused",
     """\
     rules:
       - {name: a, path: /x, methods: [GET], requires: {}}
     """, "rbac.rules[0].requires: unknown key"),
    ("a static client role must be defined",
     """\
     roles: {merchant: [p]}
     clients: {merchant-a: [merchant, ghost]}
     """, "rbac.clients.merchant-a[1]: role 'ghost' is not defined in rbac.roles (line 3)"),
]


@pytest.mark.parametrize(("rbac", "expected"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_an_invalid_rbac_section_is_refused(rbac: str, expected: str) -> None:
    assert expected in _errors(rbac)


def test_a_role_no_config_grants_is_only_a_warning() -> None:
    loaded = parse_text("""
rbac:
  rules:
    - {name: a, path: /x, methods: [GET], require: {any_roles: [from-idp]}}
""")
    assert [str(w) for w in loaded.warnings] == [
        "rbac.rules[0].require.any_roles[0]: warning: role 'from-idp' is not in rbac.roles or "
        "rbac.clients; only a token's roles claim can grant it (line 4)"]


@pytest.mark.parametrize(("written", "mode"), [("required", "required"), ("true", "required"),
                                               ("off", "off"), ("false", "off")],
                         ids=["required", "yaml true is required", "yaml off is off",
                              "yaml false is off"])
def test_signature_accepts_words_and_yaml_booleans(written: str, mode: str) -> None:
    loaded = parse_text(f"""
rbac:
  rules:
    - {{name: a, path: /x, methods: [POST], signature: {written}}}
""")
    assert loaded.config.rbac is not None
    assert loaded.config.rbac.rules[0].signature == mode


def test_an_integer_claim_condition_is_read_as_a_string() -> None:
    loaded = parse_text("""
rbac:
  rules:
    - {name: a, path: /x, methods: [GET], require: {claims: {tier: 3}}}
""")
    assert loaded.config.rbac is not None
    assert loaded.config.rbac.rules[0].require is not None
    assert loaded.config.rbac.rules[0].require.claims == {"tier": "3"}


def test_an_mtls_rule_without_client_certificates_configured_is_a_warning() -> None:
    loaded = parse_text("""
rbac:
  rules:
    - {name: a, path: /x, methods: [POST], require: {mtls: true}}
""")
    assert [str(w) for w in loaded.warnings] == [
        "rbac.rules[0].require.mtls: warning: no request can satisfy mtls: "
        "server.tls.client_ca_file is not set (line 4)"]
