"""Interoperability with an independent RFC 9421 implementation (``http_message_signatures``).

Requests it signs are accepted by our stage over real HTTP; responses our ``ResponseSigner``
signs, and requests our client helper signs, pass its verifier.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
)
from http_message_signatures import algorithms as hms

from sidecar.client import sign_request
from sidecar.config.signatures import ResponseSigningConfig
from sidecar.signatures.algorithms import load_signing_key
from sidecar.signatures.keys import load_response_key
from sidecar.signatures.signer import ResponseSigner
from tests.fixtures.sigkeys import SigKeys

BODY = json.dumps({"amount": 500}).encode()


@dataclass
class Request:
    """The message shape http_message_signatures reads: method, url, headers."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    status_code: int
    headers: Any
    request: Request


ALGORITHMS = {
    "a-ed": hms.ED25519,
    "a-p256": hms.ECDSA_P256_SHA256,
    "a-rsa": hms.RSA_PSS_SHA512,
    "b-hmac": hms.HMAC_SHA256,
}


@pytest.mark.parametrize("keyid", list(ALGORITHMS))
async def test_requests_signed_by_http_message_signatures_are_accepted(make_sig_rig: Any,
                                                                       keyid: str) -> None:
    rig = await make_sig_rig()
    key, _ = rig.signing_key(keyid)
    signer = HTTPMessageSigner(signature_algorithm=ALGORITHMS[keyid],
                               key_resolver=MappingKeyResolver(public_keys={},
                                                               private_keys={keyid: key}))
    request = Request("POST", rig.url("/v1/payments/p-9/refunds?reason=dup"), {
        "Content-Type": "application/json", "Authorization": "Bearer tok"})
    signer.sign(request, key_id=keyid, label="pyhms", nonce=f"nonce-{keyid}",
                created=datetime.datetime.fromtimestamp(rig.clock.now, tz=datetime.UTC),
                covered_component_ids=("@method", "@target-uri", "content-type",
                                       "authorization"),
                body=BODY)
    assert "content-digest" in request.headers["Signature-Input"]
    client_id = "merchant-b" if keyid.startswith("b-") else "merchant-a"
    status, answer = await rig.send("POST", "/v1/payments/p-9/refunds?reason=dup",
                                    request.headers, BODY, client_id=client_id)
    assert (status, answer) == (200, {"keyid": keyid})


async def test_their_signature_over_a_tampered_body_is_a_digest_mismatch(make_sig_rig: Any,
                                                                        ) -> None:
    rig = await make_sig_rig()
    key, _ = rig.signing_key("a-ed")
    signer = HTTPMessageSigner(signature_algorithm=hms.ED25519,
                               key_resolver=MappingKeyResolver(public_keys={},
                                                               private_keys={"a-ed": key}))
    request = Request("POST", rig.url("/v1/x"), {"Content-Type": "application/json",
                                                 "Authorization": "Bearer tok"})
    signer.sign(request, key_id="a-ed", nonce="n",
                created=datetime.datetime.fromtimestamp(rig.clock.now, tz=datetime.UTC),
                covered_component_ids=("@method", "@target-uri", "content-type",
                                       "authorization"), body=BODY)
    status, answer = await rig.send("POST", "/v1/x", request.headers, BODY + b" ")
    assert (status, answer["code"]) == (400, "digest_mismatch")


@pytest.mark.parametrize("alg", ["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"])
async def test_our_response_signatures_pass_their_verifier(alg: str, sigkeys: SigKeys,
                                                           aiohttp_client: Any) -> None:
    files = sigkeys.make(f"resp-{alg}", alg)
    signer = ResponseSigner(load_response_key(ResponseSigningConfig(
        keyid="sidecar-resp", alg=alg, private_key_file=str(files.private_pem))))  # type: ignore[arg-type]

    async def handler(request: web.Request) -> web.Response:
        body = json.dumps({"refund": "r-1", "status": "pending"}).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(signer.sign(request, 201, headers, body))
        return web.Response(status=201, body=body, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/payments/{id}/refunds", handler)
    client = await aiohttp_client(app)
    url = str(client.make_url("/v1/payments/p-1/refunds?reason=dup"))
    async with client.post("/v1/payments/p-1/refunds?reason=dup", data=BODY) as resp:
        body = await resp.read()
        response = Response(resp.status, resp.headers, Request("POST", url, {}))
    assert 'sidecar=("@status" "content-type" "content-digest" "@method";req ' \
           '"@target-uri";req)' in resp.headers["Signature-Input"]
    public = load_signing_key(str(files.private_pem), alg)[0]
    verifier = HTTPMessageVerifier(
        signature_algorithm={"ed25519": hms.ED25519, "ecdsa-p256-sha256": hms.ECDSA_P256_SHA256,
                             "rsa-pss-sha512": hms.RSA_PSS_SHA512}[alg],
        key_resolver=MappingKeyResolver(public_keys={"sidecar-resp": public.public_key()},  # type: ignore[union-attr]
                                        private_keys={}))
    [result] = verifier.verify(response, max_age=datetime.timedelta(minutes=5), body=body,
                               require_components=("@status", "content-digest"))
    assert result.label == "sidecar"
    assert result.parameters["keyid"] == "sidecar-resp"
    tampered = Response(resp.status, resp.headers, Request("GET", url, {}))
    with pytest.raises(InvalidSignature):
        verifier.verify(tampered, max_age=datetime.timedelta(minutes=5), body=body)


@pytest.mark.parametrize("keyid", ["a-ed", "a-p256", "a-rsa", "b-hmac"])
def test_our_request_signatures_pass_their_verifier(keyid: str, sigkeys: SigKeys) -> None:
    key, alg = sigkeys.signing_key(keyid)
    url = "https://api.example.com:8443/v1/x?y=%20z"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer t"}
    headers.update(sign_request("POST", url, headers, BODY, key=key, keyid=keyid, alg=alg))
    public = key if isinstance(key, bytes) else key.public_key()
    verifier = HTTPMessageVerifier(signature_algorithm=ALGORITHMS[keyid],
                                   key_resolver=MappingKeyResolver(public_keys={keyid: public},
                                                                   private_keys={}))
    [result] = verifier.verify(Request("POST", url, headers), body=BODY,
                               require_components=("@method", "@target-uri", "content-digest"))
    assert result.parameters["alg"] == alg
