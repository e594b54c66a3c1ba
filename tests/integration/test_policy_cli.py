"""``sidecar explain`` and ``sidecar policy-test`` as subprocesses: output and exit codes."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jwt
import pytest

from tests.fixtures.proxy import REPO, run_cli

DOC_EXAMPLE = re.search(r"```yaml\n(rbac:.*?)```", (REPO / "docs" / "rbac.md").read_text(),
                        re.DOTALL)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert DOC_EXAMPLE is not None, "docs/rbac.md lost its example rbac block"
    path = tmp_path_factory.mktemp("rbac") / "sidecar.yaml"
    path.write_text(DOC_EXAMPLE.group(1) + textwrap.dedent("""
        signatures:
          required: false
    """))
    return path


def explain(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = run_cli("explain", "-c", str(config), *args, stdin=stdin)
    return result.returncode, result.stdout, result.stderr


def test_explain_traces_an_allowed_request(config: Path) -> None:
    claims = {"client_id": "merchant-a", "scope": "payments:read", "merchant_id": "m-1"}
    code, out, err = explain(config, "--claims", json.dumps(claims),
                             "GET", "/v1/merchants/m-1/payments/p-1")
    assert code == 0, err
    for line in ["rule: read-payment (rbac.rules[1])",
                 "  params: merchant_id=m-1, payment_id=p-1",
                 "  static roles (rbac.clients): merchant",
                 "  effective permissions: payments:read, payments:write",
                 "  all_scopes: payments:read -> ok",
                 "  claim merchant_id == 'm-1' (token: 'm-1') -> ok",
                 "rate limits: per-client (rate_limits.default)",
                 "decision: allow", "reason: ok"]:
        assert line in out.splitlines(), out
    assert "NOT verified" not in out


def test_explain_shows_why_merchant_a_cannot_read_merchant_b(config: Path) -> None:
    claims = {"client_id": "merchant-a", "scope": "payments:read", "merchant_id": "m-1"}
    code, out, _ = explain(config, "--claims", json.dumps(claims),
                           "GET", "/v1/merchants/m-2/payments/p-1")
    assert code == 0
    assert "  claim merchant_id == 'm-2' (token: 'm-1') -> FAIL claim_mismatch" in out
    assert out.endswith("decision: deny\nreason: forbidden (claim_mismatch)\n")


def test_explain_decodes_a_token_without_verifying_it_and_says_so(config: Path) -> None:
    token = jwt.encode({"client_id": "ops", "roles": ["refunds-admin"]}, "k" * 32,
                       algorithm="HS256")
    code, out, _ = explain(config, "--token", "-", "POST", "/v1/payments/p-1/refunds",
                           stdin=token + "\n")
    assert code == 0
    assert out.startswith("note: token signature NOT verified by explain\n")
    for line in ["  token roles: refunds-admin", "  any_roles: refunds-admin -> ok",
                 "rate limits: per-client (rate_limits.default), refunds (rule)",
                 "signature: required (rule)", "decision: allow"]:
        assert line in out.splitlines(), out


@pytest.mark.parametrize(("args", "expected"), [
    (["--anonymous", "PUT", "/v1/health"],
     ["rule: none (PUT not in GET, HEAD)", "  Allow: GET, HEAD", "reason: method_not_allowed"]),
    (["--anonymous", "GET", "/v1/nothing"], ["reason: no_route"]),
    (["--anonymous", "GET", "/v1/merchants/m-1/../m-2/payments/p"],
     ["reason: bad_path"]),
    (["--anonymous", "GET", "/v1/merchants/m-1/payments/p"],
     ["identity: anonymous (no token)", "reason: token_missing (unauthenticated)"]),
    (["--anonymous", "GET", "/v1/health"],
     ["requires: nothing (public)", "signature: not required", "reason: ok"]),
], ids=["a wrong method shows Allow", "an unknown path has no route",
        "a dot segment is a bad path", "no token on a protected rule",
        "a public rule needs nothing"])
def test_explain_denials_before_rbac(config: Path, args: list[str],
                                     expected: list[str]) -> None:
    code, out, _ = explain(config, *args)
    assert code == 0
    for line in expected:
        assert line in out.splitlines(), out


@pytest.mark.parametrize(("args", "message"), [
    (["--claims", "{not json", "GET", "/v1/health"], "--claims is not valid JSON"),
    (["--claims", "[1]", "GET", "/v1/health"], "the claims must be a JSON object"),
    (["--token", "not.a.jwt", "GET", "/v1/health"], "--token is not a JWT"),
], ids=["bad JSON", "claims that are not an object", "a token that is not a JWT"])
def test_explain_exits_1_on_bad_input(config: Path, args: list[str], message: str) -> None:
    code, out, err = explain(config, *args)
    assert (code, out) == (1, "")
    assert message in err


def test_explain_exits_1_with_located_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rbac:\n  rules:\n    - {name: a, path: v1, methods: [GET]}\n")
    code, _, err = explain(bad, "--anonymous", "GET", "/v1")
    assert code == 1
    assert "rbac.rules[0].path: path must start with '/' (line 3)" in err


def test_explain_without_an_identity_option_is_a_usage_error(config: Path) -> None:
    assert explain(config, "GET", "/v1/health")[0] == 2


def test_the_shipped_cases_pass_against_the_documented_example(config: Path) -> None:
    result = run_cli("policy-test", "-c", str(config), str(REPO / "config/policy-cases.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("PASS  ") for line in lines[:-1])
    assert re.fullmatch(r"(\d+) cases: \1 passed, 0 failed", lines[-1])


SHIPPED_ENV = {
    # Well-formed placeholders: policy-test never checks a secret, only the config's shape.
    "MERCHANT_A_SECRET_HASH": "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$"
                              "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g=",
    "INTROSPECTION_SECRET": "x",
}


def test_the_shipped_cases_pass_against_the_shipped_config() -> None:
    result = run_cli("policy-test", "-c", "config/sidecar.yaml", "config/policy-cases.yaml",
                     env=SHIPPED_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_policy_test_reports_each_mismatch_and_exits_1(config: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(textwrap.dedent("""
        cases:
          - name: health is public
            request: GET /v1/health
            expect: allow
          - name: wrongly expects merchant-a to refund
            claims: {client_id: merchant-a, scope: "payments:write"}
            request: POST /v1/payments/p-1/refunds
            expect: allow
          - name: expects the wrong reason
            claims: {client_id: merchant-a, merchant_id: m-1}
            request: GET /v1/merchants/m-2/payments/p-1
            expect: deny
            reason: insufficient_scope
    """))
    result = run_cli("policy-test", "-c", str(config), str(cases))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "PASS  health is public: allow (ok)",
        "FAIL  wrongly expects merchant-a to refund: expected allow, got deny",
        "FAIL  expects the wrong reason: expected reason insufficient_scope, got forbidden "
        "(claim_mismatch)",
        "3 cases: 1 passed, 2 failed",
    ]


def test_policy_test_evaluates_mtls_with_a_client_certificate(tmp_path: Path) -> None:
    config = tmp_path / "mtls.yaml"
    config.write_text(textwrap.dedent("""
        rbac:
          rules:
            - {name: settle, path: /v1/settlements, methods: [POST], require: {mtls: true}}
    """))
    cases = tmp_path / "cases.yaml"
    cases.write_text(textwrap.dedent("""
        cases:
          - {name: with a certificate, claims: {client_id: a}, client_cert: true,
             request: POST /v1/settlements, expect: allow}
          - {name: without one, claims: {client_id: a}, request: POST /v1/settlements,
             expect: deny, reason: mtls_required}
    """))
    result = run_cli("policy-test", "-c", str(config), str(cases))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "2 cases: 2 passed, 0 failed"


@pytest.mark.parametrize(("text", "message"), [
    ("cases:\n  - name: x\n    request: GET v1\n    expect: allow\n",
     "cases[0].request: request must be 'METHOD /path', got 'GET v1' (line 3)"),
    ("cases:\n  - name: x\n    request: GET /v1\n    expect: maybe\n",
     "cases[0].expect: Input should be 'allow' or 'deny' (line 4)"),
    ("cases:\n  - name: x\n    request: GET /v1\n    expect: allow\n    claim: {}\n",
     "cases[0].claim: unknown key (line 5)"),
    ("cases: [\n", "<yaml>:"),
    ("cases: []\n", "cases: Tuple should have at least 1 item"),
], ids=["a request without a path", "an unknown expectation", "a misspelt key",
        "broken YAML", "no cases"])
def test_policy_test_exits_1_on_a_bad_cases_file(config: Path, tmp_path: Path, text: str,
                                                 message: str) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(text)
    result = run_cli("policy-test", "-c", str(config), str(cases))
    assert result.returncode == 1
    assert f"{cases}: invalid cases file" in result.stderr
    assert message in result.stderr
