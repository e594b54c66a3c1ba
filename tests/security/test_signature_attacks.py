"""Attack surface: HTTP message signatures and Content-Digest (step 6).

Each test is a named attack against the stage behind a real aiohttp server on loopback: a
legitimate client signs a request with ``sidecar.client.sign_request``; the attacker, who
holds no private key of that client, replays or alters what travels on the wire. The
stage's clock is frozen (injected), so time windows are exact.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
import redis.asyncio
from multidict import CIMultiDict

from sidecar.client import sign_request
from sidecar.signatures.algorithms import sign
from sidecar.signatures.base import RequestView, build_signature_base, serialize_signature_params
from sidecar.signatures.components import parse_component_id
from sidecar.signatures.nonces import RedisNonceStore
from sidecar.signatures.signer import create_signature

BODY = json.dumps({"amount": 1200, "currency": "EUR"}).encode()
PATH = "/v1/payments/p-1/refunds?reason=duplicate"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer token-of-a"}


async def outcome(rig: Any, method: str, path: str, headers: Any, body: bytes | None = None,
                  client_id: str | None = "merchant-a") -> tuple[int, str]:
    all_headers = CIMultiDict(headers)
    if client_id is not None:
        all_headers["X-Test-Client"] = client_id
    async with rig.client.request(method, path, headers=all_headers, data=body) as resp:
        answer = await resp.json()
    return resp.status, answer.get("code", "ok")


async def raw_outcome(rig: Any, method: str, target: str, lines: list[tuple[str, str]],
                      body: bytes = b"", client_id: str = "merchant-a") -> tuple[int, str]:
    """Send exact bytes over a loopback socket: no client library normalises the target or
    merges header lines."""
    host, port = rig.client.host, rig.client.port
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"Content-Length: {len(body)}", f"X-Test-Client: {client_id}"]
    head += [f"{name}: {value}" for name, value in lines]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    payload = rest.split(b"\r\n\r\n", 1)[1]
    try:
        code = json.loads(payload).get("code", "ok")
    except ValueError:
        code = "refused by the HTTP parser"
    return int(status_line.split()[1]), code


@pytest.fixture
async def rig(make_sig_rig: Any) -> Any:
    return await make_sig_rig()


async def test_baseline_the_untampered_request_passes(rig: Any) -> None:
    assert await outcome(rig, "POST", PATH, rig.sign("POST", PATH, HEADERS, BODY), BODY) == (
        200, "ok")


# --- every covered component tampered in turn -------------------------------------------


async def test_tampered_method(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "PUT", PATH, signed, BODY) == (401, "signature_invalid")


@pytest.mark.parametrize("path", [
    "/v1/payments/p-2/refunds?reason=duplicate",
    "/v1/payments/p-1/refunds?reason=fraud",
    "/v1/payments/p-1/refunds",
    "/v1/payments/p-1/refunds?reason=duplicate&x=1",
    "/v1/payments/p-1/refunds?reason=%64uplicate",
    "/v1/payments/p%2D1/refunds?reason=duplicate",
    "/v1/payments/p-1/refunds/?reason=duplicate",
], ids=["path", "query value", "query removed", "query appended", "query percent-encoding",
        "path percent-encoding", "trailing slash"])
async def test_tampered_target_uri(rig: Any, path: str) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    lines = [(k, v) for k, v in signed.items()]
    assert await raw_outcome(rig, "POST", path, lines, BODY) == (401, "signature_invalid")
    assert await raw_outcome(rig, "POST", PATH, lines, BODY) == (200, "ok")  # control


async def test_tampered_authority_via_host_header(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "POST", PATH, {**signed, "Host": "payments.evil.example"},
                         BODY) == (401, "signature_invalid")


async def test_tampered_content_type(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "POST", PATH, {**signed, "Content-Type": "text/xml"}, BODY) == (
        401, "signature_invalid")


async def test_tampered_authorization(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "POST", PATH, {**signed, "Authorization": "Bearer stolen"},
                         BODY) == (401, "signature_invalid")


async def test_tampered_body_with_recomputed_digest(rig: Any) -> None:
    """The attacker swaps the body and sends its correct digest: the signed digest differs."""
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    evil = BODY.replace(b"1200", b"9900")
    digest = base64.b64encode(hashlib.sha256(evil).digest()).decode()
    assert await outcome(rig, "POST", PATH, {**signed, "Content-Digest": f"sha-256=:{digest}:"},
                         evil) == (401, "signature_invalid")


async def test_tampered_extra_covered_header(rig: Any) -> None:
    headers = {**HEADERS, "Idempotency-Key": "k-1"}
    signed = rig.sign("POST", PATH, headers, BODY, covered=[
        "@method", "@target-uri", "content-digest", "content-type", "authorization",
        "idempotency-key"])
    assert await outcome(rig, "POST", PATH, {**signed, "Idempotency-Key": "k-2"}, BODY) == (
        401, "signature_invalid")


@pytest.mark.parametrize(("name", "expected"), [
    ("Authorization", (401, "signature_invalid")),
    ("Idempotency-Key", (401, "signature_invalid")),
    ("Content-Type", (400, "refused by the HTTP parser")),
])
async def test_padding_a_covered_header_with_a_second_line(rig: Any, name: str,
                                                           expected: tuple[int, str]) -> None:
    """RFC 9421 §7.5.7: an injected second field line changes the combined value (aiohttp
    refuses a second Content-Type before any stage runs)."""
    headers = {**HEADERS, "Idempotency-Key": "k-1"}
    signed = rig.sign("POST", PATH, headers, BODY, covered=[
        "@method", "@target-uri", "content-digest", "content-type", "authorization",
        "idempotency-key"])
    lines = [*signed.items(), (name, "x")]
    assert await raw_outcome(rig, "POST", PATH, lines, BODY) == expected
    assert await raw_outcome(rig, "POST", PATH, [*signed.items()], BODY) == (200, "ok")


async def test_covered_header_removed(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    del signed["Content-Type"]
    signed["Content-Type"] = ""
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


# --- body and digest ----------------------------------------------------------------------


async def test_body_changed_with_the_stale_digest(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "POST", PATH, signed, BODY + b" ") == (400, "digest_mismatch")


async def test_body_without_any_digest(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, None)  # signed as if there were no body
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


async def test_digest_present_but_not_covered(rig: Any) -> None:
    """Signature leaves content-digest out: the attacker can swap body and digest."""
    signed = rig.sign("POST", PATH, HEADERS, BODY, covered=[
        "@method", "@target-uri", "content-type", "authorization"])
    evil = b'{"amount": 990000}'
    digest = base64.b64encode(hashlib.sha256(evil).digest()).decode()
    assert await outcome(rig, "POST", PATH, {**signed, "Content-Digest": f"sha-256=:{digest}:"},
                         evil) == (401, "signature_invalid")


def _signed_with_digest_field(rig: Any, digest_value: str) -> dict[str, str]:
    """A legitimately signed request whose covered Content-Digest is ``digest_value``."""
    headers = {**HEADERS, "Content-Digest": digest_value}
    key, alg = rig.signing_key("a-ed")
    view = RequestView.from_url("POST", rig.url(PATH), headers.items())
    components = [parse_component_id(c) for c in
                  ("@method", "@target-uri", "content-digest", "content-type", "authorization")]
    return {**headers, **create_signature(view, components, key=key, alg=alg, keyid="a-ed",
                                          created=int(rig.clock.now), nonce="n-digest")}


@pytest.mark.parametrize("digest_value", [
    "md5=:XrY7u+Ae7tCTyyK7j1rNww==:",
    "sha-256=:AAAA:",
    "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, "
    "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
    "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE",
], ids=["only an unsupported algorithm", "truncated digest", "algorithm twice",
        "not a byte sequence"])
async def test_signed_but_unusable_digest(rig: Any, digest_value: str) -> None:
    signed = _signed_with_digest_field(rig, digest_value)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (400, "digest_mismatch")


async def test_digest_on_an_empty_body_is_still_checked(rig: Any) -> None:
    signed = _signed_with_digest_field(rig, "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9D"
                                            "BPE=:")
    assert await outcome(rig, "POST", PATH, signed, None) == (400, "digest_mismatch")


# --- time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("shift", "expected"), [
    (-301, (401, "signature_expired")),
    (-300, (200, "ok")),
    (30, (200, "ok")),
    (31, (401, "signature_expired")),
    (3600, (401, "signature_expired")),
], ids=["older than max_age", "exactly max_age", "within clock_skew ahead",
        "beyond clock_skew ahead", "far future"])
async def test_created_window(rig: Any, shift: int, expected: tuple[int, str]) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, created=int(rig.clock.now) + shift)
    assert await outcome(rig, "POST", PATH, signed, BODY) == expected


async def test_expired_signature(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, expires_in=10)
    rig.clock.advance(41)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_expired")


async def test_expires_before_created(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, expires_in=-5)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


async def test_created_missing(rig: Any) -> None:
    key, alg = rig.signing_key("a-ed")
    view = RequestView.from_url("GET", rig.url("/v1/x"), [])
    components = [parse_component_id(c) for c in ("@method", "@target-uri")]
    params = serialize_signature_params(components, [("keyid", "a-ed"), ("nonce", "n")])
    signature = sign(alg, key, build_signature_base(view, components, params))
    headers = {"Signature-Input": f"sig1={params}",
               "Signature": f"sig1=:{base64.b64encode(signature).decode()}:"}
    assert await outcome(rig, "GET", "/v1/x", headers) == (401, "signature_invalid")


# --- nonces and replay ------------------------------------------------------------------------


async def test_missing_nonce(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, nonce=False)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


@pytest.mark.parametrize("nonce", ["x" * 257], ids=["oversized nonce"])
async def test_bad_nonce(rig: Any, nonce: str) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, nonce=nonce)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


async def test_replayed_nonce(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (200, "ok")
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_replayed")
    assert rig.events.events == [("signature_replay", {"keyid": "a-ed",
                                                       "client_id": "merchant-a"})]
    assert rig.count("signature_replayed") == 1


async def test_replay_under_another_label(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (200, "ok")
    relabelled = {**signed,
                  "Signature-Input": signed["Signature-Input"].replace("sig1=", "again=", 1),
                  "Signature": signed["Signature"].replace("sig1=", "again=", 1)}
    assert await outcome(rig, "POST", PATH, relabelled, BODY) == (401, "signature_replayed")


async def test_replay_still_refused_until_max_age_plus_skew(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, created=int(rig.clock.now) + 30)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (200, "ok")
    rig.clock.advance(329)  # created + max_age: still acceptable, so still remembered
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_replayed")


async def test_forged_signature_does_not_burn_the_nonce(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, nonce="victim-nonce")
    forged = {**signed, "Signature": "sig1=:" + base64.b64encode(b"\x01" * 64).decode() + ":"}
    assert await outcome(rig, "POST", PATH, forged, BODY) == (401, "signature_invalid")
    assert await outcome(rig, "POST", PATH, signed, BODY) == (200, "ok")


async def test_replay_across_two_stages_sharing_redis(make_sig_rig: Any, redis_url: str) -> None:
    """Two independent stages (two replicas) with one Redis: the second refuses the replay.

    Both servers are addressed as the same public host, as behind one load balancer.
    """
    clients = [redis.asyncio.from_url(redis_url) for _ in range(2)]
    try:
        first = await make_sig_rig(nonce_store=RedisNonceStore(clients[0]))
        second = await make_sig_rig(nonce_store=RedisNonceStore(clients[1]), clock=first.clock)
        key, alg = first.signing_key("a-ed")
        headers = {**HEADERS, "Host": "api.example.com"}
        headers.update(sign_request("POST", "http://api.example.com" + PATH, headers, BODY,
                                    key=key, keyid="a-ed", alg=alg,
                                    created=int(first.clock.now)))
        assert await outcome(first, "POST", PATH, headers, BODY) == (200, "ok")
        assert await outcome(second, "POST", PATH, headers, BODY) == (401, "signature_replayed")
        assert second.events.events == [("signature_replay", {"keyid": "a-ed",
                                                              "client_id": "merchant-a"})]
    finally:
        for client in clients:
            await client.aclose()


# --- keys and algorithms -----------------------------------------------------------------------


async def test_another_clients_key(rig: Any) -> None:
    """merchant-a's token with merchant-b's (valid) signature."""
    signed = rig.sign("POST", PATH, HEADERS, BODY, keyid="b-ed")
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")
    assert await outcome(rig, "POST", PATH, signed, BODY, client_id="merchant-b") == (200, "ok")


async def test_unknown_keyid(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    signed["Signature-Input"] = signed["Signature-Input"].replace('keyid="a-ed"',
                                                                  'keyid="nobody"')
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


@pytest.mark.parametrize("alg", ["hmac-sha256", "ecdsa-p256-sha256", "rsa-sha1", "none", ""])
async def test_alg_parameter_contradicting_the_key(rig: Any, alg: str) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    signed["Signature-Input"] = signed["Signature-Input"].replace('alg="ed25519"',
                                                                  f'alg="{alg}"')
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


async def test_hmac_with_the_public_key_as_secret(rig: Any) -> None:
    """Algorithm confusion: an HMAC over the base keyed with the client's public key bytes."""
    public_pem = rig.sigkeys.make("a-ed", "ed25519").public_pem.read_bytes()
    view = RequestView.from_url("GET", rig.url("/v1/x"), [])
    components = [parse_component_id(c) for c in ("@method", "@target-uri")]
    params = serialize_signature_params(components, [
        ("created", int(rig.clock.now)), ("keyid", "a-ed"), ("alg", "hmac-sha256"),
        ("nonce", "confused")])
    mac = hmac.new(public_pem, build_signature_base(view, components, params),
                   hashlib.sha256).digest()
    headers = {"Signature-Input": f"sig1={params}",
               "Signature": f"sig1=:{base64.b64encode(mac).decode()}:"}
    assert await outcome(rig, "GET", "/v1/x", headers) == (401, "signature_invalid")


async def test_key_outside_the_algorithm_allow_list(make_sig_rig: Any) -> None:
    """Keys outside ``algorithms`` cannot be configured; removing an algorithm and its keys
    from config makes those signatures fail as unknown keys."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"not in signatures\.algorithms"):
        await make_sig_rig(algorithms=["ed25519", "rsa-pss-sha512", "hmac-sha256"])


# --- coverage downgrades -----------------------------------------------------------------------


@pytest.mark.parametrize("covered", [
    [],
    ["@method", "@authority", "@path", "content-digest", "content-type", "authorization"],
    ["@target-uri", "content-digest", "content-type", "authorization"],
    ["@method", "@target-uri", "content-digest", "content-type"],
], ids=["covers nothing", "authority and path instead of target-uri", "no method",
        "no authorization"])
async def test_signature_covering_less_than_required(rig: Any, covered: list[str]) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, covered=covered)
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


# --- malformed and duplicate structured fields ----------------------------------------------


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda h: {**h, "Signature-Input": "sig1=(\"@method\""}, "signature_invalid"),
    (lambda h: {**h, "Signature-Input": "not a dictionary"}, "signature_invalid"),
    (lambda h: {**h, "Signature": "sig1=\"not bytes\""}, "signature_invalid"),
    (lambda h: {**h, "Signature": "sig1=:not base64!:"}, "signature_invalid"),
    (lambda h: {k: v for k, v in h.items() if k != "Signature"}, "signature_invalid"),
    (lambda h: {k: v for k, v in h.items() if k != "Signature-Input"}, "signature_invalid"),
    (lambda h: {k: v for k, v in h.items() if not k.startswith("Signature")},
     "signature_missing"),
    (lambda h: {**h, "Signature": h["Signature"].replace("sig1=", "other=")},
     "signature_invalid"),
    (lambda h: {**h, "Signature-Input": h["Signature-Input"] + ";created=1799999990"},
     "signature_invalid"),
    (lambda h: {**h, "Signature-Input": h["Signature-Input"] + ";colour=\"red\""},
     "signature_invalid"),
    (lambda h: {**h, "Signature-Input": h["Signature-Input"].replace('"@method"',
                                                                     '"@method" "@method"')},
     "signature_invalid"),
    (lambda h: {**h, "Signature-Input": h["Signature-Input"].replace('"@method"', '"@Method"')},
     "signature_invalid"),
], ids=["unterminated inner list", "not a dictionary", "signature not bytes",
        "signature not base64", "no Signature", "no Signature-Input", "neither field",
        "labels do not pair", "second created parameter", "unknown parameter",
        "repeated component", "uppercase component"])
async def test_malformed_fields(rig: Any, mutate: Any, expected: str) -> None:
    signed = mutate(rig.sign("POST", PATH, HEADERS, BODY))
    status, code = await outcome(rig, "POST", PATH, signed, BODY)
    assert code == expected and status == 401


async def test_duplicate_label_across_two_field_lines(rig: Any) -> None:
    """A second Signature-Input line re-using the label (to swap the covered list) must not
    'win' as RFC 8941's last-duplicate rule would have it."""
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    weaker = f'sig1=("@method");created={int(rig.clock.now)};keyid="a-ed";nonce="x"'
    lines = [*signed.items(), ("Signature-Input", weaker)]
    assert await raw_outcome(rig, "POST", PATH, lines, BODY) == (401, "signature_invalid")
    lines = [*signed.items(), ("Signature", signed["Signature"])]
    assert await raw_outcome(rig, "POST", PATH, lines, BODY) == (401, "signature_invalid")


async def test_a_duplicate_parameter_restating_the_signed_value_changes_nothing(
        rig: Any) -> None:
    """RFC 8941 keeps a duplicate parameter's last value in the first position; the base is
    rebuilt from what was parsed, so only the signed value can verify."""
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    restated = signed["Signature-Input"].replace(";created=", ";created=1;created=", 1)
    assert await outcome(rig, "POST", PATH, {**signed, "Signature-Input": restated}, BODY) == (
        200, "ok")


async def test_too_many_signatures(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY)
    member_in = signed["Signature-Input"].split("=", 1)[1]
    member_sig = signed["Signature"].split("=", 1)[1]
    signed["Signature-Input"] = ", ".join(f"s{i}={member_in}" for i in range(9))
    signed["Signature"] = ", ".join(f"s{i}={member_sig}" for i in range(9))
    assert await outcome(rig, "POST", PATH, signed, BODY) == (401, "signature_invalid")


async def test_error_bodies_leak_no_key_material(rig: Any) -> None:
    signed = rig.sign("POST", PATH, HEADERS, BODY, keyid="b-hmac")
    async with rig.client.post(PATH, headers={**signed, "X-Test-Client": "merchant-a"},
                               data=BODY) as resp:
        text = await resp.text()
    assert rig.sigkeys.hmac_secret_b64 not in text
