"""Per-request cost of signature verification (step 6), per phase, in microseconds.

    python bench/signature_cost.py [--n 3000] [--body-bytes 2048] [--profile 25]

Every request is signed beforehand (signing is not timed) with ed25519 over the default
``covered`` list, a fresh nonce and ``Content-Digest: sha-256``, a 2 KiB JSON body and a
~600-byte bearer token, and is an aiohttp request (``make_mocked_request``, over TLS).

Half the requests go through the phases in the stage's order, each phase timed (costs as
they are within a request, not in a tight loop over one phase):

- ``view``: ``request_view`` (the aiohttp request as a ``RequestView``);
- ``parse``: ``parse_signatures`` (Signature-Input and Signature, with http-sf);
- ``policy``: ``check_times`` and the coverage check (no crypto);
- ``base``: ``build_signature_base`` with the ``@signature-params`` line;
- ``ed25519 verify``: the public-key operation alone (``cryptography``; not ours to cut);
- ``digest``: ``verify_content_digest`` (parse Content-Digest, sha-256 of the body, compare).

The other half go through ``SignatureStage.verify`` whole (the above, plus the key and
nonce checks, the nonce claim in the memory store and the metric); the two alternate
message by message. ``ours`` is the median of ``verify(request)`` minus the ``ed25519
verify`` timed next to it: what the sidecar adds to the raw public-key check.
``--profile N`` prints the N most expensive functions of ``verify(request)`` under
cProfile, in a separate untimed pass (cProfile inflates small functions; use it for shares
only). Redis round trips are not included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import gc
import json
import os
import pstats
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from multidict import CIMultiDict

from sidecar.client import sign_request
from sidecar.config.signatures import SignaturesConfig
from sidecar.context import RequestContext
from sidecar.metrics import Metrics
from sidecar.signatures import algorithms
from sidecar.signatures.base import build_signature_base
from sidecar.signatures.digest import verify_content_digest
from sidecar.signatures.fields import parse_signatures
from sidecar.signatures.nonces import MemoryNonceStore
from sidecar.signatures.verifier import SignatureStage, check_times
from sidecar.signatures.views import request_view

HOST = "api.example.com"
TARGET = "/v1/payments/p-1/refunds?reason=duplicate"
URL = f"https://{HOST}{TARGET}"
PHASES = ("view", "parse", "policy", "base", "ed25519 verify", "digest")


def body_of(size: int) -> bytes:
    filler = base64.b64encode(os.urandom(size)).decode()
    body = json.dumps({"amount": 1200, "currency": "EUR", "note": filler})
    return body.encode()[:size]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def line(name: str, samples: list[float]) -> str:
    p90 = sorted(samples)[int(len(samples) * 0.9)]
    return f"  {name:<22} median {median(samples):7.1f} us   p90 {p90:7.1f} us"


def make_stage(private: ed25519.Ed25519PrivateKey, now: float) -> SignatureStage:
    with tempfile.TemporaryDirectory() as tmp:
        pub = Path(tmp) / "k.pub.pem"
        pub.write_bytes(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        cfg = SignaturesConfig.model_validate({"keys": [
            {"keyid": "k", "client_id": "c", "alg": "ed25519", "public_key_file": str(pub)}]})
        return SignatureStage(cfg, MemoryNonceStore(), Metrics(), lambda t, f: None,
                              lambda: now)


def make_context() -> RequestContext:
    return RequestContext(request_id="r", method="POST", path=TARGET.split("?")[0],
                          query="reason=duplicate", client_ip="192.0.2.1",
                          peer_ip="192.0.2.1", scheme="https", host=HOST, started=0.0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--body-bytes", type=int, default=2048)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N most expensive functions of verify(request)")
    args = parser.parse_args()
    n: int = args.n

    private = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    stage = make_stage(private, now)
    body = body_of(args.body_bytes)
    headers = {"Host": HOST, "Content-Type": "application/json",
               "Authorization": "Bearer " + "t" * 600}
    tls = ssl.create_default_context()

    def signed_headers() -> dict[str, str]:
        return {**headers, **sign_request("POST", URL, headers, body, key=private, keyid="k",
                                          alg="ed25519", created=int(now))}

    def make_request() -> web.Request:
        return make_mocked_request("POST", TARGET, headers=CIMultiDict(signed_headers()),
                                   sslcontext=tls)

    # Each message is used once (nonces are single use), and goes through the phases in the
    # stage's order, each phase timed: costs as they are within a request (caches cold from
    # the previous phase), not as in a tight loop over one phase.
    def phases(request: web.Request, steps: dict[str, list[float]]) -> None:
        clock = time.perf_counter_ns
        t0 = clock()
        view = request_view(request)
        t1 = clock()
        inputs = [v for k, v in view.headers if k == "signature-input"]
        sigs = [v for k, v in view.headers if k == "signature"]
        [(sig_input, signature)] = parse_signatures(inputs, sigs)
        t2 = clock()
        check_times(sig_input, now, 300, 30)
        stage.missing_coverage(view, body, sig_input.components)
        t3 = clock()
        base = build_signature_base(view, sig_input.components, sig_input.signature_params())
        t4 = clock()
        assert algorithms.verify("ed25519", public, signature, base)
        t5 = clock()
        verify_content_digest([v for k, v in view.headers if k == "content-digest"], body)
        t6 = clock()
        for name, begin, end in (("view", t0, t1), ("parse", t1, t2), ("policy", t2, t3),
                                 ("base", t3, t4), ("ed25519 verify", t4, t5),
                                 ("digest", t5, t6)):
            steps[name].append((end - begin) / 1000)

    public = private.public_key()
    for request in [make_request() for _ in range(200)]:  # warm-up
        await stage.verify(request, make_context(), body)
        phases(make_request(), {name: [] for name in PHASES})

    rounds = 10
    chunk = n // rounds
    results: dict[str, list[float]] = {name: [] for name in [*PHASES, "verify(request)"]}
    ours: list[float] = []
    gc.collect()
    # The two measurements alternate message by message, so a noisy neighbour (this is a
    # shared VM) slows both alike; "ours" pairs each stage call with the ed25519 verify
    # measured next to it.
    for _ in range(rounds):
        batch = [(make_request(), make_request(), make_context()) for _ in range(chunk)]
        for phased, whole, context in batch:
            phases(phased, results)
            start = time.perf_counter_ns()
            await stage.verify(whole, context, body)
            elapsed = (time.perf_counter_ns() - start) / 1000
            results["verify(request)"].append(elapsed)
            ours.append(elapsed - results["ed25519 verify"][-1])

    print(f"ed25519, body {len(body)} bytes, Content-Digest sha-256, n={n}, "
          f"python {sys.version.split()[0]}")
    for name, samples in results.items():
        print(line(name, samples))
    crypto = median(results["ed25519 verify"])
    print(f"  {'ours':<22} median {median(ours):7.1f} us   (verify(request) - ed25519 verify, "
          f"paired; {median(ours) / crypto:.2f} x ed25519)")
    if args.profile:  # a separate, untimed pass over fresh requests
        profiled = [make_request() for _ in range(n)]
        contexts = [make_context() for _ in range(n)]
        profile = cProfile.Profile()
        profile.enable()
        for request, context in zip(profiled, contexts, strict=True):
            await stage.verify(request, context, body)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    asyncio.run(main())
