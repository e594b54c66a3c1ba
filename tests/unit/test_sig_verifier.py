"""``SignatureStage`` over message views (no HTTP): the compiled coverage check, the
once-per-request digest and the per-result counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sidecar.client import sign_request
from sidecar.metrics import Metrics
from sidecar.signatures import digest as digest_module
from sidecar.signatures.base import RequestView
from sidecar.signatures.components import ComponentId, parse_component_id
from sidecar.signatures.errors import DigestMismatch, SignatureInvalid, SignatureMissing
from sidecar.signatures.nonces import MemoryNonceStore
from sidecar.signatures.verifier import SignatureStage
from tests.fixtures.sigkeys import EventLog, FrozenClock, SigKeys, signatures_config

URL = "https://api.example.com/v1/payments/p-1/refunds"
BODY = b'{"amount": 1200}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer t"}
DEFAULT = ["@method", "@target-uri", "content-digest", "content-type", "authorization"]


def make_stage(sigkeys: SigKeys, **overrides: Any) -> tuple[SignatureStage, Metrics]:
    metrics = Metrics()
    stage = SignatureStage(signatures_config(sigkeys, **overrides), MemoryNonceStore(),
                           metrics, EventLog(), FrozenClock())
    return stage, metrics


def signed_view(sigkeys: SigKeys, labels: tuple[str, ...] = ("sig1",),
                body: bytes = BODY) -> RequestView:
    """A request signed with ``b-hmac`` once per label (each with its own nonce)."""
    key, alg = sigkeys.signing_key("b-hmac")
    lines = list(HEADERS.items())
    for label in labels:
        signed = sign_request("POST", URL, HEADERS, body, key=key, keyid="b-hmac", alg=alg,
                              created=int(FrozenClock().now), label=label)
        if "Content-Digest" in signed and label == labels[0]:
            lines.append(("Content-Digest", signed["Content-Digest"]))
        lines += [("Signature-Input", signed["Signature-Input"]),
                  ("Signature", signed["Signature"])]
    return RequestView.from_url("POST", URL, lines)


def ids(entries: list[str]) -> list[ComponentId]:
    return [parse_component_id(entry) for entry in entries]


@pytest.mark.parametrize(("required", "covered", "headers", "body", "missing"), [
    (DEFAULT, DEFAULT, HEADERS, BODY, []),
    (DEFAULT, list(reversed(DEFAULT)), HEADERS, BODY, []),
    (DEFAULT, ["@method", "@target-uri", "content-digest", '"content-type";bs',
               '"authorization";sf'], HEADERS, BODY, []),
    (DEFAULT, ["@method", "@target-uri", "content-digest", '"content-type";bs;sf',
               "authorization"], HEADERS, BODY, []),
    (DEFAULT, ["@method", "@target-uri", "content-digest", '"content-type";key="a"',
               "authorization"], HEADERS, BODY, ["content-type"]),
    (DEFAULT, ["@method", "@target-uri", "content-type", "authorization"], HEADERS, BODY,
     ["content-digest"]),
    (DEFAULT, ["@method", "@target-uri", "content-type", "authorization"], HEADERS, b"", []),
    (DEFAULT, ["@method", "@target-uri", "content-digest"], {}, BODY, []),
    (DEFAULT, ["@method", "@target-uri", "content-digest"], {"Content-Type": "a/b"}, BODY,
     ["content-type"]),
    (DEFAULT, ['"@method";req', "@target-uri", "content-digest"], {}, BODY, ["@method"]),
    (["@method", "@authority", "@path"], ["@target-uri", "@method"], {}, b"",
     ["@authority", "@path"]),
    (["@method", "@target-uri", '"@query-param";name="id"'],
     ["@method", "@target-uri", '"@query-param";name="id"'], {}, b"", []),
    (["@method", "@target-uri", '"@query-param";name="id"'],
     ["@method", "@target-uri", '"@query-param";name="other"'], {}, b"",
     ['"@query-param";name="id"']),
    (["@method", "@target-uri", '"example-dict";key="a"'],
     ["@method", "@target-uri", "example-dict"], {"Example-Dict": "a=1"}, b"",
     ['"example-dict";key="a"']),
], ids=["exactly the required list", "in another order", "fields as ;bs and ;sf",
        "a field as ;bs;sf", "a member is not the whole field", "digest not covered",
        "no body, no digest needed", "absent fields are not required",
        "a present field is required", "a ;req component is another component",
        "target-uri does not stand for authority and path", "a query parameter by name",
        "another query parameter", "the whole field does not stand for one member"])
def test_coverage(sigkeys: SigKeys, required: list[str], covered: list[str],
                  headers: dict[str, str], body: bytes, missing: list[str]) -> None:
    stage, _ = make_stage(sigkeys, covered=required)
    view = RequestView.from_url("POST", URL + "?id=1", headers.items())
    assert stage.missing_coverage(view, body, ids(covered)) == ids(missing)


async def test_the_body_is_digested_once_per_request_whatever_the_signatures(
        sigkeys: SigKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two valid signatures over a Content-Digest the body does not match: both fail with
    digest_mismatch, and the body is hashed once, not once per signature."""
    stage, _ = make_stage(sigkeys)
    view = signed_view(sigkeys, ("s1", "s2"), body=BODY)
    good = signed_view(sigkeys)
    calls: list[int] = []
    sha256: Callable[[bytes], bytes] = digest_module.DIGEST_ALGORITHMS["sha-256"]

    def counting(data: bytes) -> bytes:
        calls.append(len(data))
        return sha256(data)

    monkeypatch.setitem(digest_module.DIGEST_ALGORITHMS, "sha-256", counting)
    with pytest.raises(DigestMismatch):
        await stage.verify_message(view, BODY + b" ", "merchant-b")
    assert calls == [len(BODY) + 1]
    calls.clear()
    assert await stage.verify_message(good, BODY, "merchant-b") == "b-hmac"
    assert calls == [len(BODY)]


async def test_no_digest_is_computed_for_a_signature_that_does_not_verify(
        sigkeys: SigKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    stage, _ = make_stage(sigkeys)
    view = signed_view(sigkeys)
    calls: list[bytes] = []
    monkeypatch.setitem(digest_module.DIGEST_ALGORITHMS, "sha-256",
                        lambda data: calls.append(data) or b"")
    forged = RequestView.from_url("POST", URL, [
        (n, "sig1=:" + "A" * 43 + "=:" if n == "signature" else v) for n, v in view.headers])
    with pytest.raises(SignatureInvalid, match="does not verify"):
        await stage.verify_message(forged, BODY, "merchant-b")
    assert calls == []


async def test_every_result_is_counted_under_its_own_label(sigkeys: SigKeys) -> None:
    stage, metrics = make_stage(sigkeys)

    def count(result: str) -> float:
        value = metrics.registry.get_sample_value(
            "sidecar_signature_verifications_total", {"result": result})
        return value or 0.0

    await stage.verify_message(signed_view(sigkeys), BODY, "merchant-b")
    with pytest.raises(SignatureMissing):
        await stage.verify_message(RequestView.from_url("POST", URL, []), BODY, "merchant-b")
    await stage.verify_message(signed_view(sigkeys), BODY, "merchant-b")
    with pytest.raises(SignatureInvalid):
        await stage.verify_message(signed_view(sigkeys), BODY, "merchant-a")
    assert (count("ok"), count("signature_missing"), count("signature_invalid")) == (2, 1, 1)
