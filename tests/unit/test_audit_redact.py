"""Data minimisation: card numbers, configured query parameters and credentials never reach
the audit log."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.audit import redact
from sidecar.audit.redact import (
    REDACTED,
    REDACTED_URL,
    compile_names,
    filter_fields,
    filter_flags,
    luhn_valid,
    mask_pans,
    redact_path,
    redact_query,
    redact_target,
    safe_string,
)
from tests.unit.test_audit_support import JWT, PAN, PAN_AMEX, SECRET

NAMES = compile_names(["card_number", "pan", "cvv", "ssn"])


@pytest.mark.parametrize(("digits", "valid"), [
    (PAN, True), (PAN_AMEX, True), ("4111111111111112", False), ("0", True),
    ("79927398713", True), ("79927398710", False),
], ids=lambda v: str(v))
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(("text", "expected"), [
    (f"pay {PAN} now", f"pay {REDACTED} now"),
    ("4111 1111 1111 1111", REDACTED),
    ("4111-1111-1111-1111", REDACTED),
    (f"{PAN_AMEX}", REDACTED),
    ("3782-822463-10005", REDACTED),
    ("4111111111111112", "4111111111111112"),           # not Luhn-valid
    ("411111111111", "411111111111"),                   # 12 digits: too short
    ("41111111111111111111", "41111111111111111111"),   # 20 digits: not a PAN run
    ("2026-11-22 12:00", "2026-11-22 12:00"),           # dates are not card formatting
    (f"order 1234 {PAN}", f"order 1234 {REDACTED}"),    # PAN after a short group
], ids=["inline", "spaces", "dashes", "amex", "amex-dashed", "not-luhn", "short", "too-long",
        "date", "after-short-group"])
def test_mask_pans(text: str, expected: str) -> None:
    assert mask_pans(text) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("card_number=123&amount=10", f"card_number={REDACTED_URL}&amount=10"),
    ("Card_Number=123", f"Card_Number={REDACTED_URL}"),
    ("card%5Fnumber=123", f"card%5Fnumber={REDACTED_URL}"),
    ("card-number=123", f"card-number={REDACTED_URL}"),
    ("cvv=123&cvv=456", f"cvv={REDACTED_URL}&cvv={REDACTED_URL}"),
    (f"note={PAN}", f"note={REDACTED_URL}"),
    ("note=4111+1111+1111+1111", f"note={REDACTED_URL}"),
    ("note=4111%201111%201111%201111", f"note={REDACTED_URL}"),
    ("note=%34%31%31%31111111111111", f"note={REDACTED_URL}"),
    (f"{PAN}", REDACTED_URL),
    ("amount=10&currency=EUR", "amount=10&currency=EUR"),
    ("a=%zz&b", "a=%zz&b"),
], ids=["configured", "case-insensitive", "encoded-name", "dash-for-underscore", "repeated",
        "unconfigured-pan", "plus-separated", "space-encoded", "percent-encoded-digits",
        "bare-pan", "untouched", "kept-byte-for-byte"])
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query, NAMES) == expected


@pytest.mark.parametrize(("path", "expected"), [
    (f"/v1/cards/{PAN}/charges", f"/v1/cards/{REDACTED_URL}/charges"),
    ("/v1/cards/%34111111111111111", f"/v1/cards/{REDACTED_URL}"),
    ("/v1/payments/p-1234567890123", "/v1/payments/p-1234567890123"),
    ("/v1/merchants/m-1/payments/p-1", "/v1/merchants/m-1/payments/p-1"),
], ids=["pan-segment", "percent-encoded", "non-luhn-id", "ordinary"])
def test_redact_path(path: str, expected: str) -> None:
    assert redact_path(path) == expected


def test_target_matches_the_spec_example() -> None:
    assert (redact_target("/v1/x", "card_number=4111111111111111", NAMES)
            == "/v1/x?card_number=%5BREDACTED%5D")


@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20),
       body=st.lists(st.integers(0, 9), min_size=12, max_size=18))
def test_any_luhn_valid_pan_is_masked(prefix: str, suffix: str, body: list[int]) -> None:
    digits = "".join(map(str, body))
    check = next(str(d) for d in range(10) if luhn_valid(digits + str(d)))
    pan = digits + check
    for text in (f"{prefix} {pan} {suffix}", f"/{pan}/"):
        assert pan not in mask_pans(text)
        assert pan not in redact_path(text.replace("?", "").replace("%", ""))
        assert pan not in redact_query(f"q={text}&x=1", NAMES)


@pytest.mark.parametrize("value", [
    f"Bearer {JWT}", JWT, f"token={JWT}", "-----BEGIN PRIVATE KEY-----\nMIIE...",
    "Basic bWVyY2hhbnQtYTpzZWNyZXQ=",
], ids=["bearer", "jwt", "jwt-inline", "pem", "basic"])
def test_credentials_never_survive_safe_string(value: str) -> None:
    assert safe_string(value) == REDACTED


def test_safe_string_strips_url_userinfo_and_caps_length() -> None:
    assert safe_string("redis://:hunter2@redis:6379/0") == "redis://[REDACTED]@redis:6379/0"
    assert len(safe_string("x" * 10_000)) == 259


def test_filter_fields_keeps_only_allowed_keys_of_the_right_type() -> None:
    fields = {
        "client_id": "merchant-a", "count": 4, "limit": "3", "client_secret": SECRET,
        "authorization": f"Bearer {JWT}", "token": JWT, "nested": {"a": 1}, "x-trace": "t",
        "scopes": ["a", "b", 3],
    }
    allowed = {"client_id": "str", "count": "int", "limit": "int", "token": "str",
               "x-trace": "str", "scopes": "strs"}
    out = filter_fields(fields, allowed, compile_names(["X-Trace"]))  # type: ignore[arg-type]
    assert out == {"client_id": "merchant-a", "count": 4, "scopes": ["a", "b"]}


def test_filter_flags_drops_credential_strings_keeps_booleans() -> None:
    flags = {"token_cached": True, "token_value": JWT, "api_key": "k", "degraded": True,
             "note": f"card {PAN}", "bad key": 1, "obj": {"x": 1}, "auth_header": "Bearer x"}
    assert filter_flags(flags, frozenset()) == {
        "token_cached": True, "degraded": True, "note": f"card {REDACTED}",
    }


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        pytest.param("/v1/x", "access_token=abc.def&x=1", "/v1/x?access_token=%5BREDACTED%5D&x=1",
                     id="an RFC 6750 access_token query parameter is always redacted"),
        pytest.param("/v1/x", "Client_Secret=s3", "/v1/x?Client_Secret=%5BREDACTED%5D",
                     id="credential parameter names are matched case- and separator-blind"),
        pytest.param("/v1/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig/x", "",
                     "/v1/%5BREDACTED%5D/x", id="a JWT in a path segment is redacted"),
        pytest.param("/v1/x", "q=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                     "/v1/x?q=%5BREDACTED%5D", id="a JWT under any parameter name is redacted"),
    ],
)
def test_credentials_in_urls_are_redacted(path: str, query: str, expected: str) -> None:
    from sidecar.audit.redact import compile_names, redact_target

    assert redact_target(path, query, compile_names([])) == expected


@given(st.text(alphabet="0123456789 +-%abcdef/", max_size=60))
def test_the_fast_prefilter_never_misses_a_card_number_candidate(text: str) -> None:
    # safe_string and mask_pans skip the exact (slow) pattern when the prefilter finds
    # nothing; that is only sound if the prefilter matches wherever the exact one does.
    if redact._CANDIDATE.search(text) is not None:
        assert redact._MAYBE_CANDIDATE.search(text) is not None
        assert redact._SUSPECT.search(text) is not None
