"""Shared helpers of the audit tests (no tests here): request contexts, configs, the schema.

Kept in a test module because the audit work owns only ``tests/*/test_audit_*.py``; it can
move to ``tests/fixtures/audit.py`` unchanged.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from sidecar.audit.chain import Chain
from sidecar.audit.events import EventBuilder
from sidecar.config.audit import AuditConfig
from sidecar.context import ClientCert, Identity, RateLimitOutcome, RequestContext, RouteMatch
from sidecar.metrics import Metrics

PAN = "4111111111111111"  # Luhn-valid test Visa
PAN_AMEX = "378282246310005"
JWT = ("eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJtZXJjaGFudC1hIiwic2NvcGUiOiJwYXkifQ."
       "c2lnbmF0dXJlLWJ5dGVzLWZvci10aGUtdGVzdA")
SECRET = "s3cr3t-client-secret-value-9f8e7d"


def schema() -> dict[str, Any]:
    text = resources.files("sidecar").joinpath("schemas/audit-event.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validator() -> jsonschema.Draft202012Validator:
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def make_ctx(i: int = 0, *, path: str = "/v1/payments/p-1", query: str = "",
             authenticated: bool = True, status: int = 200, stage: str = "",
             reason: str = "ok", started: float | None = None, **extra: Any) -> RequestContext:
    identity = Identity(
        client_id="merchant-a", subject="merchant-a", issuer="https://idp.example.com/",
        scopes=frozenset({"payments:read"}), roles=frozenset(), claims={"secret": SECRET},
        expires_at=time.time() + 600, token_id=f"jti-{i}",
    ) if authenticated else None
    ctx = RequestContext(
        request_id=f"req-{i}", method="GET", path=path, query=query, client_ip="203.0.113.7",
        peer_ip="10.0.0.1", scheme="https", host="api.example.com",
        started=time.perf_counter() - 0.002 if started is None else started,
        route=RouteMatch(rule=None, name="read-payment", params={}, public=False),
        identity=identity,
        rate_limit=RateLimitOutcome(policy="per-client", limit=100, remaining=99,
                                    reset_seconds=1.0, allowed=True),
        signature_keyid="merchant-a-2026" if authenticated else None,
        upstream_seconds=0.0012, status=status, stage=stage, reason=reason,
    )
    for key, value in extra.items():
        setattr(ctx, key, value)
    return ctx


def mtls_cert() -> ClientCert:
    return ClientCert(subject="CN=merchant-a", sans=("merchant-a",),
                      sha256_thumbprint="bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2")


def audit_config(tmp_path: Path, *sinks: dict[str, Any], **kw: Any) -> AuditConfig:
    data: dict[str, Any] = {
        "sinks": list(sinks) or [{"type": "file", "path": str(tmp_path / "audit.jsonl")}],
        "spool_dir": str(tmp_path / "spool"),
        **kw,
    }
    return AuditConfig.model_validate(data)


def sample(metrics: Metrics, sink: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "sidecar_audit_events_total", {"sink": sink, "result": result})
    return value or 0.0


def read_events(*paths: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f)
    return out


def rotated(path: Path) -> list[Path]:
    """``path.N`` ... ``path.1``, ``path``: the order ``sidecar audit verify`` takes."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, path] if path.exists() else backups


def seal(chain: Chain, event: dict[str, Any]) -> dict[str, Any]:
    chain.seal(event)
    return event


def sealed_events(n: int, key: bytes = b"", checkpoint_every: int = 0) -> list[dict[str, Any]]:
    """``n`` request events sealed into one chain, with checkpoints as the log writes them."""
    builder = EventBuilder(("card_number",), ())
    chain = Chain(key)
    out = []
    for i in range(n):
        out.append(seal(chain, builder.request(make_ctx(i), time.time(), 0.002)))
        if checkpoint_every and (i + 1) % checkpoint_every == 0:
            cp = builder.security("checkpoint", chain.checkpoint_fields("count"), time.time(),
                                  internal=True)
            assert cp is not None
            out.append(seal(chain, cp))
    return out


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
