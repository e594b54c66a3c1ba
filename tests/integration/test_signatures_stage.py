"""SignatureStage over real loopback HTTP: an aiohttp server whose handler calls the stage.

Requests are signed with ``sidecar.client.sign_request`` and sent by a real aiohttp client;
the stage's clock is frozen (injected) so ``created`` windows are exact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio
from multidict import CIMultiDict

from sidecar.context import RouteMatch
from sidecar.signatures.nonces import RedisNonceStore
from tests.fixtures.sigkeys import FrozenClock

BODY = json.dumps({"amount": 1200, "currency": "EUR"}).encode()
JSON = {"Content-Type": "application/json", "Authorization": "Bearer tok-a"}


async def test_a_signed_post_with_digest_is_accepted_and_counted(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    headers = rig.sign("POST", "/v1/payments/p-1/refunds?x=1", JSON, BODY)
    assert headers["Content-Digest"].startswith("sha-256=:")
    status, answer = await rig.send("POST", "/v1/payments/p-1/refunds?x=1", headers, BODY)
    assert (status, answer) == (200, {"keyid": "a-ed"})
    assert rig.count("ok") == 1


@pytest.mark.parametrize("keyid", ["a-ed", "a-p256"])
async def test_each_key_of_the_client_is_accepted(make_sig_rig: Any, keyid: str) -> None:
    rig = await make_sig_rig()
    headers = rig.sign("PUT", "/v1/x", JSON, BODY, keyid=keyid)
    assert await rig.send("PUT", "/v1/x", headers, BODY) == (200, {"keyid": keyid})


async def test_hmac_key_is_accepted_for_its_client(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    headers = rig.sign("POST", "/v1/x", JSON, BODY, keyid="b-hmac")
    assert await rig.send("POST", "/v1/x", headers, BODY, client_id="merchant-b") == (
        200, {"keyid": "b-hmac"})


async def test_a_get_without_body_needs_no_digest_nor_content_type(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    headers = rig.sign("GET", "/v1/payments/p-1", {"Authorization": "Bearer tok-a"})
    assert "Content-Digest" not in headers
    assert '"content-type"' not in headers["Signature-Input"]
    assert await rig.send("GET", "/v1/payments/p-1", headers) == (200, {"keyid": "a-ed"})


async def test_no_signature_is_signature_missing(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    status, answer = await rig.send("POST", "/v1/x", JSON, BODY)
    assert (status, answer["code"]) == (401, "signature_missing")
    assert rig.count("signature_missing") == 1


async def test_one_good_signature_among_bad_ones_is_enough(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    good = rig.sign("POST", "/v1/x", JSON, BODY, label="good")
    bad = rig.sign("POST", "/v1/x", JSON, BODY, keyid="b-ed", label="bad")
    headers = dict(good)
    headers["Signature-Input"] = bad["Signature-Input"] + ", " + good["Signature-Input"]
    headers["Signature"] = bad["Signature"] + ", " + good["Signature"]
    assert await rig.send("POST", "/v1/x", headers, BODY) == (200, {"keyid": "a-ed"})


async def test_signature_fields_split_over_two_lines_are_combined(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    good = rig.sign("POST", "/v1/x", JSON, BODY, label="good")
    other = rig.sign("POST", "/v1/x", JSON, BODY, keyid="a-p256", label="other")
    lines = [(k, v) for k, v in good.items()]
    lines += [("Signature-Input", other["Signature-Input"]), ("Signature", other["Signature"])]
    lines.append(("X-Test-Client", "merchant-a"))
    async with rig.client.request("POST", "/v1/x", headers=CIMultiDict(lines), data=BODY) as resp:
        assert resp.status == 200


async def test_nonce_is_claimed_after_verification_only(make_sig_rig: Any) -> None:
    """A forged request carrying a victim's nonce must not burn that nonce."""
    rig = await make_sig_rig()
    genuine = rig.sign("POST", "/v1/x", JSON, BODY, nonce="n-1")
    forged = dict(genuine)
    forged["Signature"] = "sig1=:" + "A" * 86 + "==:"
    assert (await rig.send("POST", "/v1/x", forged, BODY))[1]["code"] == "signature_invalid"
    assert await rig.send("POST", "/v1/x", genuine, BODY) == (200, {"keyid": "a-ed"})


async def test_replay_is_refused_and_emits_a_security_event(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    headers = rig.sign("POST", "/v1/x", JSON, BODY)
    assert (await rig.send("POST", "/v1/x", headers, BODY))[0] == 200
    status, answer = await rig.send("POST", "/v1/x", headers, BODY)
    assert (status, answer["code"]) == (401, "signature_replayed")
    assert rig.events.events == [("signature_replay", {"keyid": "a-ed",
                                                       "client_id": "merchant-a"})]


async def test_nonces_are_per_key(make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    a = rig.sign("POST", "/v1/x", JSON, BODY, nonce="same")
    b = rig.sign("POST", "/v1/x", JSON, BODY, keyid="a-p256", nonce="same")
    assert (await rig.send("POST", "/v1/x", a, BODY))[0] == 200
    assert (await rig.send("POST", "/v1/x", b, BODY))[0] == 200


async def test_require_nonce_false_accepts_a_signature_without_nonce(make_sig_rig: Any) -> None:
    rig = await make_sig_rig(require_nonce=False)
    headers = rig.sign("POST", "/v1/x", JSON, BODY, nonce=False)
    assert (await rig.send("POST", "/v1/x", headers, BODY))[0] == 200


async def test_redis_nonce_store_refuses_a_replay(make_sig_rig: Any, redis_url: str) -> None:
    client = redis.asyncio.from_url(redis_url)
    try:
        rig = await make_sig_rig(nonce_store=RedisNonceStore(client, "test:"))
        headers = rig.sign("POST", "/v1/x", JSON, BODY)
        assert (await rig.send("POST", "/v1/x", headers, BODY))[0] == 200
        assert (await rig.send("POST", "/v1/x", headers, BODY))[1]["code"] == "signature_replayed"
        keys = await client.keys("test:sig-nonce:*")
        assert len(keys) == 1 and 0 < await client.pttl(keys[0]) <= 330_000
    finally:
        await client.aclose()


async def test_redis_outage_fails_closed_with_503(make_sig_rig: Any, redis_server: Any,
                                                  redis_url: str) -> None:
    client = redis.asyncio.from_url(redis_url, socket_timeout=0.5)
    try:
        rig = await make_sig_rig(nonce_store=RedisNonceStore(client, "test:", timeout=1.0))
        redis_server.stop()
        headers = rig.sign("POST", "/v1/x", JSON, BODY)
        status, answer = await rig.send("POST", "/v1/x", headers, BODY)
        assert (status, answer["code"]) == (503, "signature_unavailable")
        assert rig.metrics.registry.get_sample_value(
            "sidecar_redis_errors_total", {"operation": "nonce_claim"}) == 1
    finally:
        await client.aclose()
        redis_server.start()


def _route(rule: Any, public: bool = False) -> RouteMatch:
    return RouteMatch(rule=rule, name="r", params={}, public=public)


class _Rule:
    def __init__(self, signature: Any) -> None:
        self.signature = signature


@pytest.mark.parametrize(
    ("required", "rule", "public", "expected"),
    [
        (False, _Rule("required"), False, True),
        (False, _Rule(True), False, True),
        (False, _Rule(None), False, False),
        (False, object(), False, False),
        (True, object(), False, True),
        (True, _Rule("optional"), False, True),
        (True, object(), True, False),
        (False, _Rule("required"), True, True),
    ],
    ids=["rule requires", "rule True", "rule silent", "rule without attribute",
         "global required", "rule cannot opt out", "public route exempt from global",
         "public rule that requires"],
)
async def test_required_for(make_sig_rig: Any, required: bool, rule: Any, public: bool,
                            expected: bool) -> None:
    rig = await make_sig_rig(required=required)
    assert rig.stage.required_for(_route(rule, public)) is expected


async def test_public_rule_requiring_a_signature_accepts_any_registered_key(
        make_sig_rig: Any) -> None:
    rig = await make_sig_rig()
    headers = rig.sign("POST", "/v1/x", JSON, BODY, keyid="b-ed")
    assert await rig.send("POST", "/v1/x", headers, BODY, client_id=None) == (
        200, {"keyid": "b-ed"})


async def test_clock_is_injected(make_sig_rig: Any) -> None:
    clock = FrozenClock(1_000_000_000.0)
    rig = await make_sig_rig(clock=clock)
    headers = rig.sign("POST", "/v1/x", JSON, BODY)
    clock.advance(299)
    assert (await rig.send("POST", "/v1/x", headers, BODY))[0] == 200
