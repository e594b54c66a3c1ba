"""``sidecar explain``: print how the config decides one request, step by step."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from sidecar.cli import add_config_argument, load_config_or_report
from sidecar.policy import EXPLAIN_CERT, Evaluation, PolicyEngine
from sidecar.rbac import MISSING, Rule, claim_value

_FROM_STDIN = "-"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "explain", help="print the decision trace of one request",
        description="Match METHOD PATH against the rbac rules and evaluate them for the given "
                    "token or claims; print the trace and 'decision: allow|deny'. Exit 0 "
                    "whatever the decision; 1 on a bad config, token or claims.",
    )
    add_config_argument(parser)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", metavar="JWT",
                     help="a JWT whose claims are used ('-' reads it from stdin); its "
                          "signature is NOT verified")
    who.add_argument("--claims", metavar="JSON", help="the token claims as a JSON object")
    who.add_argument("--anonymous", action="store_true", help="a request without a token")
    parser.add_argument("--client-cert", action="store_true",
                        help="the connection presented a verified client certificate (mTLS)")
    parser.add_argument("method", metavar="METHOD")
    parser.add_argument("path", metavar="PATH", help="raw path, as sent (query allowed)")
    parser.set_defaults(func=run)


def _claims(args: argparse.Namespace) -> Mapping[str, Any] | None:
    """The claims to evaluate, or None for anonymous.

    Raises:
        ValueError: unreadable token or claims.
    """
    if args.anonymous:
        return None
    if args.claims is not None:
        try:
            claims = json.loads(args.claims)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--claims is not valid JSON: {exc.msg}") from exc
    else:
        import jwt

        raw = sys.stdin.readline() if args.token == _FROM_STDIN else args.token
        raw = raw.strip()
        try:
            # SECURITY: offline inspection only; the proxy verifies every token it accepts.
            claims = jwt.decode(raw, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ValueError(f"--token is not a JWT: {exc}") from exc
    if not isinstance(claims, dict):
        raise ValueError("the claims must be a JSON object")
    return claims


def _join(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "-"


def trace(engine: PolicyEngine, method: str, path: str, claims: Mapping[str, Any] | None,
          evaluation: Evaluation) -> list[str]:
    """The printed lines of an explanation."""
    lines = [f"request: {method} {path}"]
    if evaluation.path_checked:
        safe = evaluation.reason != "bad_path"
        lines.append("path safety: " + ("ok" if safe else f"rejected ({evaluation.detail})"))
    else:
        lines.append("path safety: not checked (sidecar.pathsafety unavailable)")
    route = evaluation.route
    if route is None:
        if evaluation.reason in ("no_route", "method_not_allowed"):
            lines.append(f"rule: none ({evaluation.detail})")
        if evaluation.allow_header:
            lines.append(f"  Allow: {evaluation.allow_header}")
        return [*lines, "decision: deny", f"reason: {evaluation.reason}"]
    rule: Rule = route.rule
    lines += [
        f"rule: {rule.name} (rbac.rules[{rule.index}])",
        f"  path: {rule.path}",
        f"  methods: {', '.join(rule.methods)}",
        "  params: " + (", ".join(f"{k}={v}" for k, v in route.params.items()) or "-"),
        f"  public: {'yes' if rule.public else 'no'}",
    ]
    lines += _identity_lines(engine, claims, evaluation)
    lines += _requirement_lines(rule, claims, evaluation)
    limits = engine.rate_limits_for(route)
    lines.append("rate limits: " + (", ".join(f"{n} ({why})" for n, why in limits) or "none"))
    lines.append(f"signature: {engine.signature_for(route)}")
    reason = evaluation.reason
    if evaluation.detail not in (reason, "ok", "public"):
        reason += f" ({evaluation.detail})"
    lines += [f"decision: {'allow' if evaluation.allowed else 'deny'}", f"reason: {reason}"]
    return lines


def _identity_lines(engine: PolicyEngine, claims: Mapping[str, Any] | None,
                    evaluation: Evaluation) -> list[str]:
    route, identity, decision = evaluation.route, evaluation.identity, evaluation.decision
    if route is not None and route.public:
        return ["identity: not evaluated (public rule: no token is validated)"]
    if claims is None:
        return ["identity: anonymous (no token)"]
    if identity is None or decision is None:
        return [f"identity: invalid token ({evaluation.detail})"]
    rbac = engine.config.rbac
    static = rbac.clients.get(identity.client_id, ()) if rbac is not None else ()
    return [
        "identity:",
        f"  client_id: {identity.client_id}",
        f"  subject: {identity.subject}",
        f"  issuer: {identity.issuer or '-'}",
        f"  token scopes: {_join(identity.scopes)}",
        f"  token roles: {_join(identity.roles)}",
        f"  static roles (rbac.clients): {_join(static)}",
        f"  effective roles: {_join(decision.roles)}",
        f"  effective permissions: {_join(decision.permissions)}",
    ]


def _requirement_lines(rule: Rule, claims: Mapping[str, Any] | None,
                       evaluation: Evaluation) -> list[str]:
    if rule.public:
        return ["requires: nothing (public)"]
    decision = evaluation.decision
    if decision is None or not decision.checks:
        return ["requires: a valid token (no further conditions)"]
    lines = ["requires:"]
    for check in decision.checks:
        verdict = "ok" if check.ok else f"FAIL {check.detail}"
        if check.kind == "claim":
            name, _, expected = check.required[0].partition("=")
            held = claim_value(claims or {}, name)
            shown = "<missing>" if held is MISSING or held is None else repr(held)
            lines.append(f"  claim {name} == {expected!r} (token: {shown}) -> {verdict}")
        elif check.kind == "mtls":
            lines.append(f"  mtls: client certificate -> {verdict}")
        else:
            missing = f", missing: {', '.join(check.missing)}" if check.missing else ""
            lines.append(f"  {check.kind}: {', '.join(check.required)} -> {verdict}{missing}")
    return lines


def run(args: argparse.Namespace) -> int:
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return 1
    try:
        claims = _claims(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    engine = PolicyEngine(loaded.config)
    cert = EXPLAIN_CERT if args.client_cert else None
    evaluation = engine.evaluate(args.method, args.path, claims, cert)
    if args.token is not None:
        print("note: token signature NOT verified by explain")
    print(f"config: {loaded.source}")
    for line in trace(engine, args.method, args.path, claims, evaluation):
        print(line)
    return 0
