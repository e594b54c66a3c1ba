"""Per-request cost of signature verification (step 6), in microseconds.

    python bench/signature_cost.py [--n 2000] [--body-bytes 2048]

Measures, over pre-signed requests (signing is not timed), with a 2 KiB JSON body:

- ``stage verify``: ``SignatureStage.verify_message`` end to end: parse Signature-Input /
  Signature, policy checks, coverage, signature base, Ed25519 verify, Content-Digest (sha-256)
  over the body, nonce claim in the memory store;
- ``ed25519 verify``: the public-key operation alone;
- ``base + parse``: parsing the fields and building the signature base, no crypto;
- ``digest only``: Content-Digest verification of the body alone.

The aiohttp request adaptation (``request_view``) and Redis round trips are not included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sidecar.client import sign_request
from sidecar.config.signatures import SignaturesConfig
from sidecar.metrics import Metrics
from sidecar.signatures import algorithms
from sidecar.signatures.base import RequestView, build_signature_base
from sidecar.signatures.digest import verify_content_digest
from sidecar.signatures.fields import parse_signatures
from sidecar.signatures.nonces import MemoryNonceStore
from sidecar.signatures.verifier import SignatureStage

URL = "https://api.example.com/v1/payments/p-1/refunds?reason=duplicate"


def body_of(size: int) -> bytes:
    filler = base64.b64encode(os.urandom(size)).decode()
    body = json.dumps({"amount": 1200, "currency": "EUR", "note": filler})
    return body.encode()[:size]


def per_op(samples: list[float]) -> str:
    return (f"median {statistics.median(samples):8.1f} us   "
            f"p90 {sorted(samples)[int(len(samples) * 0.9)]:8.1f} us")


def time_each(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--body-bytes", type=int, default=2048)
    args = parser.parse_args()

    private = ed25519.Ed25519PrivateKey.generate()
    body = body_of(args.body_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        pub = Path(tmp) / "k.pub.pem"
        pub.write_bytes(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        cfg = SignaturesConfig.model_validate({"keys": [
            {"keyid": "k", "client_id": "c", "alg": "ed25519", "public_key_file": str(pub)}]})
        now = time.time()
        stage = SignatureStage(cfg, MemoryNonceStore(), Metrics(), lambda t, f: None,
                               lambda: now)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + "t" * 600}
    views = []
    for _ in range(args.n):
        signed = {**headers, **sign_request("POST", URL, headers, body, key=private,
                                            keyid="k", alg="ed25519", created=int(now))}
        views.append(RequestView.from_url("POST", URL, signed.items()))

    # warm-up
    await stage.verify_message(RequestView.from_url("POST", URL, {
        **headers, **sign_request("POST", URL, headers, body, key=private, keyid="k",
                                  alg="ed25519", created=int(now))}.items()), body, "c")

    full = []
    for view in views:
        start = time.perf_counter_ns()
        await stage.verify_message(view, body, "c")
        full.append((time.perf_counter_ns() - start) / 1000)

    view = views[0]
    inputs = [v for n, v in view.headers if n == "signature-input"]
    sigs = [v for n, v in view.headers if n == "signature"]
    [(sig_input, signature)] = parse_signatures(inputs, sigs)
    base = build_signature_base(view, sig_input.components, sig_input.signature_params())
    public = private.public_key()
    digest_lines = [v for n, v in view.headers if n == "content-digest"]

    def parse_and_base(_: int) -> object:
        [(si, _sig)] = parse_signatures(inputs, sigs)
        return build_signature_base(view, si.components, si.signature_params())

    crypto = time_each(lambda _: algorithms.verify("ed25519", public, signature, base), args.n)
    parsing = time_each(parse_and_base, args.n)
    digest = time_each(lambda _: verify_content_digest(digest_lines, body), args.n)

    print(f"ed25519, body {len(body)} bytes, Content-Digest sha-256, n={args.n}, "
          f"python {sys.version.split()[0]}")
    print(f"  stage verify (all checks)  {per_op(full)}")
    print(f"  ed25519 verify alone       {per_op(crypto)}")
    print(f"  parse + signature base     {per_op(parsing)}")
    print(f"  digest only                {per_op(digest)}")


if __name__ == "__main__":
    asyncio.run(main())
