"""Offline policy evaluation for ``sidecar explain`` and ``sidecar policy-test``.

Runs the same path-safety check, route table and RBAC decision the proxy runs, on claims
given by the operator instead of a verified token. Nothing here is on the request path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from sidecar.authn.claims import build_identity
from sidecar.authn.errors import TokenInvalid
from sidecar.config.auth import ClaimsConfig
from sidecar.config.models import SidecarConfig
from sidecar.config.types import StrictModel
from sidecar.context import ClientCert, Identity, RouteMatch
from sidecar.problem import SidecarError
from sidecar.rbac import Decision, RBACAuthorizer
from sidecar.routes import RouteTable

EXPLAIN_CERT = ClientCert(subject="CN=policy-test", sans=(), sha256_thumbprint="")
"""Stands for "the connection presented a verified client certificate"."""


ClaimMapping = ClaimsConfig
"""Where identity values come from in the claims (SPEC ``auth.claims``)."""


def claim_mapping(config: SidecarConfig | None) -> ClaimsConfig:
    """The config's ``auth.claims`` (defaults when there is no ``auth`` section)."""
    if config is None or config.auth is None:
        return ClaimsConfig()
    return config.auth.claims


def identity_from_claims(claims: Mapping[str, Any], mapping: ClaimsConfig | None = None
                         ) -> Identity:
    """Build the identity the proxy would build from these (verified) claims, with the
    proxy's own claim mapping (:func:`sidecar.authn.claims.build_identity`).

    Raises:
        ValueError: no client id claim, or a scopes/roles claim of the wrong type (the
            proxy answers such a token with 401 ``token_invalid``).
    """
    exp = claims.get("exp")
    iss = claims.get("iss")
    try:
        return build_identity(
            claims, mapping or ClaimsConfig(), issuer=iss if isinstance(iss, str) else "",
            expires_at=float(exp) if isinstance(exp, int | float) and math.isfinite(exp)
            else 0.0)
    except TokenInvalid as exc:
        raise ValueError(exc.log_detail) from exc


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the proxy would decide for one request, up to and including RBAC."""

    allowed: bool
    reason: str
    """ok, or the problem code that would end the request."""
    detail: str
    """Finer cause (``claim_mismatch``, ...) or the error's log detail."""
    path_checked: bool
    """False when :mod:`sidecar.pathsafety` was not importable."""
    route: RouteMatch | None = None
    decision: Decision | None = None
    identity: Identity | None = None
    allow_header: str | None = None


def _path_checker() -> Callable[[str], None] | None:
    try:
        from sidecar.pathsafety import check_path
    except ImportError:
        return None
    return check_path


class PolicyEngine:
    """The route table and authorizer of one config, for offline evaluation."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        rbac = config.rbac
        self.table = RouteTable.from_config(rbac) if rbac is not None else None
        self.authorizer = RBACAuthorizer.from_config(rbac) if rbac is not None else None
        self.mapping = claim_mapping(config)

    def evaluate(self, method: str, target: str, claims: Mapping[str, Any] | None,
                 client_cert: ClientCert | None = None) -> Evaluation:
        """Evaluate a request as the proxy would, up to and including RBAC.

        ``claims`` None is an anonymous request (no token); ``target`` may carry a query,
        which matching ignores. As in the proxy, a public route never looks at the token.
        Never raises.
        """
        path = target.split("?", 1)[0]
        check_path = _path_checker()
        checked = check_path is not None
        try:
            if check_path is not None:
                check_path(path)
            if self.table is None or self.authorizer is None:
                return Evaluation(False, "no_route", "no rbac section: every request is denied",
                                  checked)
            route = self.table.match(method, path)
        except SidecarError as exc:
            return Evaluation(False, exc.code, exc.log_detail or exc.code, checked,
                              allow_header=exc.headers.get("Allow"))
        identity = None
        if claims is not None and not route.public:
            try:
                identity = identity_from_claims(claims, self.mapping)
            except ValueError as exc:
                return Evaluation(False, "token_invalid", str(exc), checked, route=route)
        decision = self.authorizer.decide(identity, route, client_cert, exhaustive=True)
        return Evaluation(decision.allowed, decision.reason, decision.detail, checked,
                          route=route, decision=decision, identity=identity)

    def rate_limits_for(self, route: RouteMatch) -> list[tuple[str, str]]:
        """(policy, why) pairs that would apply, read by attribute from ``rate_limits``."""
        limits = getattr(self.config, "rate_limits", None)
        if route.public:
            unauth = getattr(limits, "unauthenticated", None)
            return [("unauthenticated", "per IP, public route")] if unauth is not None else []
        out = [(name, "rate_limits.default") for name in getattr(limits, "default", ()) or ()]
        out += [(name, "rule") for name in getattr(route.rule, "rate_limits", ())]
        return out

    def signature_for(self, route: RouteMatch) -> str:
        """Whether a signature is required and why (as ``SignatureVerifier.required_for``)."""
        if getattr(route.rule, "signature", None) == "required":
            return "required (rule)"
        if bool(getattr(getattr(self.config, "signatures", None), "required", False)) \
                and not route.public:
            return "required (signatures.required)"
        return "not required"


# --- policy-test cases ----------------------------------------------------------------

class PolicyCase(StrictModel):
    """One case of a ``policy-test`` file."""

    name: str = Field(min_length=1)
    claims: dict[str, Any] | None = None
    """Token claims; omitted or null for an anonymous request (no token)."""
    request: str
    """``METHOD /path`` (a query is allowed and ignored by matching)."""
    expect: Literal["allow", "deny"]
    reason: str | None = None
    """Expected reason code (``forbidden``) or finer detail (``claim_mismatch``)."""
    client_cert: bool = False
    """The connection presented a verified client certificate (for ``mtls`` rules)."""

    @field_validator("request")
    @classmethod
    def _request(cls, value: str) -> str:
        split_request(value)
        return value


class PolicyCases(StrictModel):
    cases: tuple[PolicyCase, ...] = Field(min_length=1)


def split_request(value: str) -> tuple[str, str]:
    """``"GET /v1/x"`` -> ``("GET", "/v1/x")``.

    Raises:
        ValueError: not a method and a path separated by one space.
    """
    method, _, target = value.strip().partition(" ")
    if not method.isupper() or not method.isalpha() or not target.startswith("/"):
        raise ValueError(f"request must be 'METHOD /path', got {value!r}")
    return method, target.strip()


class CaseFileError(Exception):
    """The cases file is unreadable or invalid; ``str()`` lists every problem."""


def load_cases(path: str | Path) -> tuple[PolicyCase, ...]:
    """Read and validate a cases file.

    Raises:
        CaseFileError: every problem as ``cases[2].request: message (line N)``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise CaseFileError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CaseFileError(f"<yaml>: {getattr(exc, 'problem', None) or 'invalid YAML'}{where}"
                            ) from exc
    try:
        return PolicyCases.model_validate(data).cases
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if isinstance(p, int) or "[" not in p)
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
            line = _line_of(node, loc)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{where.lstrip('.') or '<root>'}: {message}"
                            + (f" (line {line})" if line else ""))
        raise CaseFileError("\n".join(problems)) from exc


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    evaluation: Evaluation
    passed: bool
    mismatch: str


def run_case(engine: PolicyEngine, case: PolicyCase) -> CaseResult:
    """Evaluate one case and compare it with what it expects."""
    method, target = split_request(case.request)
    cert = EXPLAIN_CERT if case.client_cert else None
    return _compare(case, engine.evaluate(method, target, case.claims, cert))


def _compare(case: PolicyCase, evaluation: Evaluation) -> CaseResult:
    got = "allow" if evaluation.allowed else "deny"
    problems = []
    if got != case.expect:
        problems.append(f"expected {case.expect}, got {got}")
    if case.reason is not None and case.reason not in (evaluation.reason, evaluation.detail):
        problems.append(f"expected reason {case.reason}, got {evaluation.reason}"
                        + (f" ({evaluation.detail})" if evaluation.detail != evaluation.reason
                           else ""))
    return CaseResult(case, evaluation, not problems, "; ".join(problems))
