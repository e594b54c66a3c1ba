"""The route matcher: precedence, methods, and the rule conflicts config refuses."""

from __future__ import annotations

import textwrap

import pytest

from sidecar.config import ConfigError, parse_text
from sidecar.config.rbac import RBACConfig
from sidecar.problem import BadPath, MethodNotAllowed, NoRoute
from sidecar.routes import RouteTable

RULES = """
rbac:
  rules:
    - {name: health, path: /v1/health, methods: [GET], public: true}
    - {name: health-slash, path: /v1/health/, methods: [GET], public: true}
    - {name: root, path: /, methods: [GET], public: true}
    - {name: read-payment, path: "/v1/merchants/{merchant_id}/payments/{payment_id}",
       methods: [GET]}
    - {name: cancel-payment, path: "/v1/merchants/{mid}/payments/{pid}", methods: [DELETE]}
    - {name: merchant-me, path: /v1/merchants/me/payments/latest, methods: [GET]}
    - {name: merchant-any, path: "/v1/merchants/{merchant_id}/settings", methods: [GET]}
    - {name: merchant-files, path: "/v1/merchants/{merchant_id}/**", methods: [GET]}
    - {name: refund, path: "/v1/payments/{payment_id}/refunds", methods: [POST, OPTIONS]}
    - {name: admin, path: /v1/admin, methods: [POST]}
    - {name: section, path: "/v1/{section}", methods: [POST]}
    - {name: static, path: "/static/**", methods: [GET], public: true}
    - {name: fallback, path: "/**", methods: [GET, POST], public: true}
"""


@pytest.fixture(scope="module")
def table() -> RouteTable:
    rbac = parse_text(RULES).config.rbac
    assert rbac is not None
    return RouteTable.from_config(rbac)


MATCHES = [
    ("a literal path matches its rule", "GET", "/v1/health", "health", {}),
    ("a trailing slash is a distinct path with its own rule", "GET", "/v1/health/",
     "health-slash", {}),
    ("the root path matches only the root rule", "GET", "/", "root", {}),
    ("params capture whole raw segments", "GET", "/v1/merchants/m-1/payments/p-1",
     "read-payment", {"merchant_id": "m-1", "payment_id": "p-1"}),
    ("percent-encoding is kept as-is in a param", "GET", "/v1/merchants/m%20x/payments/p",
     "read-payment", {"merchant_id": "m%20x", "payment_id": "p"}),
    ("params are named by the rule of the matched method", "DELETE",
     "/v1/merchants/m-1/payments/p-1", "cancel-payment", {"mid": "m-1", "pid": "p-1"}),
    ("a literal segment beats a param", "GET", "/v1/merchants/me/payments/latest",
     "merchant-me", {}),
    ("a dead-end literal branch falls back to the param branch", "GET",
     "/v1/merchants/me/payments/p-9", "read-payment",
     {"merchant_id": "me", "payment_id": "p-9"}),
    ("a param beats a /** wildcard", "GET", "/v1/merchants/m-1/settings", "merchant-any",
     {"merchant_id": "m-1"}),
    ("a /** wildcard takes what nothing more specific matches", "GET",
     "/v1/merchants/m-1/files/a/b.pdf", "merchant-files", {"merchant_id": "m-1"}),
    ("a /** wildcard matches its prefix itself", "GET", "/static", "static", {}),
    ("a /** wildcard matches its prefix with a trailing slash", "GET", "/static/", "static", {}),
    ("a /** wildcard matches deep paths", "GET", "/static/css/site.css", "static", {}),
    ("GET admits HEAD", "HEAD", "/v1/health", "health", {}),
    ("OPTIONS is accepted where listed", "OPTIONS", "/v1/payments/p-1/refunds", "refund",
     {"payment_id": "p-1"}),
    ("a top-level /** catches unknown paths", "GET", "/robots.txt", "fallback", {}),
    ("a param never matches an empty segment", "GET", "/v1/merchants//settings", "fallback",
     {}),
]


@pytest.mark.parametrize(("method", "path", "rule", "params"),
                         [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES])
def test_a_request_matches_the_most_specific_rule(
        table: RouteTable, method: str, path: str, rule: str, params: dict[str, str]) -> None:
    match = table.match(method, path)
    assert (match.name, dict(match.params)) == (rule, params)
    assert match.rule.name == rule
    assert match.public is match.rule.public


NOT_ALLOWED = [
    ("HEAD is not admitted without GET", "HEAD", "/v1/payments/p-1/refunds", "POST, OPTIONS"),
    ("OPTIONS is refused where not listed", "OPTIONS", "/v1/health", "GET, HEAD"),
    ("Allow lists every method of the path across rules", "PUT",
     "/v1/merchants/m/payments/p", "GET, HEAD, DELETE"),
    ("a public /** never takes over a protected route's other methods", "GET", "/v1/admin",
     "POST"),
    ("the most specific matching path decides even for a param route", "GET", "/v1/anything",
     "POST"),
    ("methods are case-sensitive", "get", "/v1/health", "GET, HEAD"),
]


@pytest.mark.parametrize(("method", "path", "allow"), [m[1:] for m in NOT_ALLOWED],
                         ids=[m[0] for m in NOT_ALLOWED])
def test_a_path_that_matches_without_the_method_is_405_with_allow(
        table: RouteTable, method: str, path: str, allow: str) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        table.match(method, path)
    assert caught.value.headers == {"Allow": allow}
    assert (caught.value.status, caught.value.code) == (405, "method_not_allowed")


@pytest.fixture(scope="module")
def narrow() -> RouteTable:
    rbac = parse_text("""
rbac:
  rules:
    - {name: health, path: /v1/health, methods: [GET]}
    - {name: files, path: "/files/**", methods: [GET]}
    - {name: item, path: "/items/{id}", methods: [GET]}
""").config.rbac
    assert rbac is not None
    return RouteTable.from_config(rbac)


NO_ROUTE = [
    ("an unknown path has no route", "/v1/unknown"),
    ("matching is case-sensitive", "/V1/health"),
    ("a trailing slash needs its own rule", "/v1/health/"),
    ("a longer path does not match a literal rule", "/v1/health/x"),
    ("a prefix wildcard does not match a sibling that shares the prefix text", "/filesystem"),
    ("a param route does not match a deeper path", "/items/1/2"),
    ("a non-origin-form target has no route", "*"),
    ("an absolute-form target has no route", "http://evil/v1/health"),
]


@pytest.mark.parametrize("path", [m[1] for m in NO_ROUTE], ids=[m[0] for m in NO_ROUTE])
def test_a_path_no_template_matches_is_404(narrow: RouteTable, path: str) -> None:
    with pytest.raises(NoRoute) as caught:
        narrow.match("GET", path)
    assert (caught.value.status, caught.value.code) == (404, "no_route")


@pytest.mark.parametrize("path", ["/v1/%61dmin", "/v1/adm%69n", "/v1/%61%64%6D%69%6E"],
                         ids=["an encoded first letter", "an encoded inner letter",
                              "a fully encoded segment"])
def test_an_encoded_spelling_of_a_literal_segment_is_a_bad_path(table: RouteTable,
                                                                path: str) -> None:
    # Defence in depth behind sidecar.pathsafety: the backend would decode it to /v1/admin.
    with pytest.raises(BadPath):
        table.match("POST", path)


def test_lookup_cost_does_not_depend_on_the_number_of_rules() -> None:
    rbac = RBACConfig.model_validate({"rules": [
        {"name": f"r{i}", "path": f"/v1/t{i}/{{id}}/items/{{item}}", "methods": ["GET"]}
        for i in range(5000)]})
    match = RouteTable.from_config(rbac).match("GET", "/v1/t4999/a/items/b")
    assert (match.name, dict(match.params)) == ("r4999", {"id": "a", "item": "b"})


def _config_error(rules: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_text("rbac:\n  rules:\n" + textwrap.indent(textwrap.dedent(rules), "    "))
    return str(caught.value)


CONFLICTS = [
    ("two rules on one method and pattern conflict",
     """\
     - {name: a, path: /v1/x, methods: [GET]}
     - {name: b, path: /v1/x, methods: [POST, GET]}
     """,
     "rbac.rules[1].path: rule 'b' conflicts with rule 'a' (rbac.rules[0].path): both match "
     "GET, HEAD /v1/x", 4),
    ("param names do not make patterns different",
     """\
     - {name: a, path: "/m/{merchant}/p", methods: [GET]}
     - {name: b, path: /m/x/p, methods: [GET]}
     - {name: c, path: "/m/{id}/p", methods: [GET]}
     """,
     "rbac.rules[2].path: rule 'c' conflicts with rule 'a'", 5),
    ("an explicit HEAD conflicts with a GET on the same pattern",
     """\
     - {name: a, path: "/v1/**", methods: [GET]}
     - {name: b, path: "/v1/**", methods: [HEAD]}
     """,
     "GET implies HEAD", 4),
    ("rule names are unique",
     """\
     - {name: a, path: /v1/x, methods: [GET]}
     - {name: a, path: /v1/y, methods: [GET]}
     """,
     "rbac.rules[1].name: duplicate rule name 'a' (first at rbac.rules[0].name)", 4),
]


@pytest.mark.parametrize(("rules", "expected", "line"), [c[1:] for c in CONFLICTS],
                         ids=[c[0] for c in CONFLICTS])
def test_conflicting_rules_are_refused_with_their_location(rules: str, expected: str,
                                                           line: int) -> None:
    error = _config_error(rules)
    assert expected in error
    assert error.endswith(f"(line {line})")


def test_the_same_pattern_may_carry_different_methods_in_different_rules() -> None:
    rbac = parse_text("""
rbac:
  rules:
    - {name: a, path: "/p/{id}", methods: [GET]}
    - {name: b, path: "/p/{pid}", methods: [DELETE, PUT]}
""").config.rbac
    assert rbac is not None
    assert RouteTable.from_config(rbac).match("PUT", "/p/1").params == {"pid": "1"}


BAD_TEMPLATES = [
    ("a template must start with a slash", "v1/x", "path must start with '/'"),
    ("empty segments are refused", "/v1//x", "empty segment"),
    ("'**' must be the final segment", "/v1/**/x", "only allowed as the final segment"),
    ("a glob inside a segment is refused", "/v1/*.json", "'*' is only allowed as a final"),
    ("a param must be a whole segment", "/v1/{id}.json", "must be a whole segment"),
    ("a param must be named like an identifier", "/v1/{1d}", "must be a whole segment"),
    ("a param name is used once", "/v1/{id}/x/{id}", "appears twice"),
    ("dot segments are refused", "/v1/../x", "dot segments"),
    ("literal segments are written unencoded", "/v1/a%20b", "write literal segments unencoded"),
    ("characters a segment cannot hold are refused", "/v1/a b", "characters a path segment"),
]


@pytest.mark.parametrize(("path", "expected"), [b[1:] for b in BAD_TEMPLATES],
                         ids=[b[0] for b in BAD_TEMPLATES])
def test_malformed_path_templates_are_refused(path: str, expected: str) -> None:
    error = _config_error(f'- {{name: a, path: "{path}", methods: [GET]}}\n')
    assert error.startswith("rbac.rules[0].path: ")
    assert expected in error
    assert error.endswith("(line 3)")
