"""The event model: SPEC field names, data minimisation, the JSON Schema."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest

from sidecar.audit.chain import Chain
from sidecar.audit.events import SECURITY_FIELDS, EventBuilder, rfc3339
from tests.unit.test_audit_support import JWT, SECRET, make_ctx, mtls_cert, seal, validator

SPEC_REQUEST_FIELDS = [
    "v", "type", "time", "event_id", "request_id", "client_id", "subject", "source_ip",
    "method", "rule", "path", "status", "decision", "reason", "latency_ms", "upstream_ms",
    "rate_limit", "signature", "token", "chain", "seq", "prev", "hash",
]


def builder() -> EventBuilder:
    return EventBuilder(("card_number", "pan", "cvv", "ssn"), ("X-Api-Key",))


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500000Z"
    assert rfc3339(1795334400.123456) == "2026-11-22T08:00:00.123456Z"
    assert rfc3339(1.9999996) == "1970-01-01T00:00:02.000000Z"


def test_request_event_has_the_spec_fields_in_order() -> None:
    now = time.time()
    ctx = make_ctx(7, query="card_number=4111111111111111&amount=10")
    event = seal(Chain(b""), builder().request(ctx, now, 0.0123))
    assert list(event) == SPEC_REQUEST_FIELDS
    assert event["path"] == "/v1/payments/p-1?card_number=%5BREDACTED%5D&amount=10"
    assert event["latency_ms"] == pytest.approx(12.3, abs=0.01)
    assert event["upstream_ms"] == 1.2
    assert event["rate_limit"] == {"policy": "per-client", "remaining": 99}
    assert event["signature"] == {"keyid": "merchant-a-2026"}
    assert event["token"] == {"iss": "https://idp.example.com/", "jti": "jti-7"}
    assert (event["client_id"], event["decision"], event["reason"]) == ("merchant-a", "allow",
                                                                        "ok")
    assert re.fullmatch(r"[0-9a-f]{32}", event["event_id"])
    assert not validator().is_valid({**event, "surprise": 1})


def test_denied_unauthenticated_request() -> None:
    ctx = make_ctx(authenticated=False, status=401, stage="authn", reason="token_missing",
                   rate_limit=None, upstream_seconds=None, route=None)
    event = builder().request(ctx, time.time(), 0.001)
    assert event["decision"] == "deny"
    assert event["stage"] == "authn"
    assert (event["client_id"], event["subject"], event["token"], event["rule"]) == (
        None, None, None, None)


def test_mtls_thumbprint_and_safe_flags() -> None:
    ctx = make_ctx(client_cert=mtls_cert(),
                   audit_flags={"token_cached": True, "bearer": JWT, "nonce_seen": False})
    event = builder().request(ctx, time.time(), 0.001)
    assert event["mtls"] == {"x5t#S256": mtls_cert().sha256_thumbprint}
    assert event["flags"] == {"token_cached": True, "nonce_seen": False}


def test_identity_claims_never_appear() -> None:
    event = builder().request(make_ctx(), time.time(), 0.001)
    assert SECRET not in str(event)


SECURITY_SAMPLES: dict[str, dict[str, Any]] = {
    "token_issued": {"client_id": "merchant-a", "jti": "j1", "scopes": ["payments:read"],
                     "expires_in": 600, "kid": "sidecar-2026-11", "audience": "payments-api",
                     "access_token": JWT, "client_secret": SECRET, "token": JWT},
    "token_excessive_issuance": {"client_id": "merchant-a", "count": 4, "limit": 3,
                                 "window_s": 600.0, "secret_hash": SECRET},
    "signature_replay": {"keyid": "merchant-a-2026", "client_id": "merchant-a",
                         "created": 1795334400, "request_id": "r1", "source_ip": "203.0.113.7",
                         "rule": "refund", "signature": "sig1=:AAAA:", "body": "{}"},
    "jwks_refresh_failed": {"issuer": "corp-idp", "error": "timeout", "failures": 3,
                            "stale_s": 12.5, "using_stale": True,
                            "url": "https://user:pw@idp.example.com/jwks?api_key=k"},
    "rate_limit_store_error": {"operation": "take", "error": f"redis://:{SECRET}@r:6379 down",
                               "policy": "per-client", "on_store_error": "fail_closed",
                               "degraded": False},
    "config_reload": {"result": "rejected", "source": "config/sidecar.yaml",
                      "digest": "ab" * 32, "error_count": 2,
                      "error_paths": ["auth.issuers[0].issuer", "rbac.rules[1].path"],
                      "config": {"chain_key": SECRET}},
}


@pytest.mark.parametrize("event_type", sorted(SECURITY_SAMPLES))
def test_security_events_keep_only_allowed_fields_and_validate(event_type: str) -> None:
    fields = SECURITY_SAMPLES[event_type]
    event = builder().security(event_type, fields, time.time())
    assert event is not None
    sealed = seal(Chain(b"k"), event)
    validator().validate(sealed)
    text = str(sealed)
    assert JWT not in text
    assert SECRET not in text
    assert set(sealed) - {"v", "type", "time", "event_id", "chain", "seq", "prev", "hash"} <= \
        set(SECURITY_FIELDS[event_type])


def test_jwks_url_loses_userinfo_and_query() -> None:
    event = builder().security("jwks_refresh_failed", SECURITY_SAMPLES["jwks_refresh_failed"],
                               0.0)
    assert event is not None
    assert event["url"] == "https://idp.example.com/jwks"


def test_unknown_and_internal_types_are_refused_from_callers() -> None:
    assert builder().security("made_up", {}, 0.0) is None
    assert builder().security("checkpoint", {"head_seq": 1}, 0.0) is None


def test_every_event_type_validates_against_the_schema() -> None:
    v = validator()
    b = builder()
    chain = Chain(b"k")
    events = [
        b.request(make_ctx(1), time.time(), 0.001),
        b.request(make_ctx(2, authenticated=False, status=403, stage="rbac", reason="forbidden",
                           rate_limit=None, client_cert=mtls_cert(),
                           audit_flags={"x": [1, "a"]}), time.time(), 0.001),
    ]
    for event_type, fields in SECURITY_SAMPLES.items():
        event = b.security(event_type, fields, time.time())
        assert event is not None
        events.append(event)
    for event in events:
        chain.seal(event)
    checkpoint = b.security("checkpoint", chain.checkpoint_fields("shutdown"), time.time(),
                            internal=True)
    assert checkpoint is not None
    chain.seal(checkpoint)
    events.append(checkpoint)
    assert {e["type"] for e in events} == {"request", *SECURITY_FIELDS}
    for event in events:
        v.validate(event)


def test_identity_fields_are_memoised_per_identity_object_never_across_objects() -> None:
    b = builder()
    first, second = make_ctx(1), make_ctx(2)  # equal client, different tokens
    assert b.request(first, time.time(), 0.001)["token"]["jti"] == "jti-1"
    assert b.request(second, time.time(), 0.001)["token"]["jti"] == "jti-2"
    again = b.request(first, time.time(), 0.001)
    assert again["token"] == {"iss": "https://idp.example.com/", "jti": "jti-1"}
    # A PAN-like subject is masked once and stays masked on the memoised path.
    ctx = make_ctx(3)
    ctx.identity = dataclasses.replace(ctx.identity, subject="4111111111111111")
    for _ in range(2):
        assert "4111111111111111" not in str(b.request(ctx, time.time(), 0.001)["subject"])


def test_identity_memo_is_bounded() -> None:
    b = builder()
    for i in range(5000):
        b.request(make_ctx(i), time.time(), 0.001)
    assert len(b._identities) <= 4096
