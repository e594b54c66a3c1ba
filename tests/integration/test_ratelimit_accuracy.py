"""Two sidecar-like processes saturate one shared bucket; Redis must not oversell it.

Each process runs :func:`drive` (this module run as a script): a RateLimitStage on the
shared Redis, a few concurrent tasks checking the same client's bucket for DURATION
seconds. A token bucket of capacity C and rate R can allow at most C + R·T requests in a
window of T seconds; with both processes saturating it, it should allow nearly that many.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.config.server import RedisConfig
from sidecar.context import Identity, RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.ratelimit import RateLimited, RateLimitStage
from sidecar.redisconn import build_redis, close_redis
from sidecar.stages import discard_event

REPO = Path(__file__).resolve().parents[2]
CAPACITY, RATE = 50, 100.0


def _ctx() -> RequestContext:
    c = RequestContext(request_id="r", method="GET", path="/p", query="", client_ip="192.0.2.1",
                       peer_ip="192.0.2.1", scheme="http", host="h", started=0.0)
    c.route = RouteMatch(rule=None, name="pay", params={}, public=False)
    c.identity = Identity(client_id="accuracy", subject="s", issuer="i", scopes=frozenset(),
                          roles=frozenset(), claims={}, expires_at=0.0)
    return c


async def drive(redis: dict[str, Any], start_at: float, duration: float, capacity: int,
                rate: float, tasks: int = 4) -> dict[str, Any]:
    """Check one bucket from ``tasks`` concurrent loops; report counts and the time window."""
    cfg = RateLimitsConfig.model_validate({
        "store": "redis",
        "policies": [{"name": "acc", "key": "client_id", "capacity": capacity,
                      "refill": f"{rate:g}/s"}],
        "default": ["acc"]})
    rcfg = RedisConfig.model_validate({"timeout": "500ms", **redis})
    client = build_redis(rcfg)
    stage = RateLimitStage(cfg, client, Metrics(), discard_event, redis_config=rcfg)
    await stage.start()
    counts = {"allowed": 0, "refused": 0, "errors": 0}
    sent = [float("inf"), 0.0]  # first and last time a request was sent
    done = [float("inf"), 0.0]  # first and last time an answer arrived
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end = time.time() + duration

    async def loop() -> None:
        ctx = _ctx()
        while time.time() < end:
            began = time.time()
            try:
                await stage.check_authenticated(ctx, ())
                counts["allowed"] += 1
            except RateLimited:
                counts["refused"] += 1
            except Exception:
                counts["errors"] += 1
            answered = time.time()
            sent[0], sent[1] = min(sent[0], began), max(sent[1], began)
            done[0], done[1] = min(done[0], answered), max(done[1], answered)
            await asyncio.sleep(0.001)

    await asyncio.gather(*(loop() for _ in range(tasks)))
    await stage.close()
    await close_redis(client)
    return {**counts, "first_sent": sent[0], "last_sent": sent[1],
            "first_done": done[0], "last_done": done[1]}


def check_accuracy(results: list[dict[str, Any]], capacity: int, rate: float) -> None:
    """Allowed ≤ C + R·T + 2 with T from the first request sent to the last answer (every
    script ran inside it), and ≥ 97 % of C + R·T' + 2 with T' from the first answer to the
    last request sent (every script ran around it), so a process the OS paused at either
    end cannot make an accurate limiter look inaccurate."""
    assert all(r["errors"] == 0 for r in results), results
    assert all(r["refused"] > 0 for r in results), "every driver must saturate the bucket"
    allowed = sum(r["allowed"] for r in results)
    outer = max(r["last_done"] for r in results) - min(r["first_sent"] for r in results)
    inner = max(r["last_sent"] for r in results) - min(r["first_done"] for r in results)
    ceiling = capacity + rate * outer + 2
    assert allowed <= ceiling, (allowed, outer)
    floor = 0.97 * (capacity + rate * inner + 2)
    assert allowed >= floor, (allowed, inner)
    print(f"accuracy: {allowed} allowed, at most {ceiling:.1f} in {outer:.3f} s,"
          f" at least {floor:.1f} in {inner:.3f} s")


@pytest.mark.slow
def test_two_processes_share_one_bucket_accurately(redis_url: str) -> None:
    start_at = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_ratelimit_accuracy", redis_url,
             str(start_at), "5"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    check_accuracy(results, CAPACITY, RATE)


if __name__ == "__main__":
    url, start, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    report = asyncio.run(drive({"url": url}, start, seconds, CAPACITY, RATE))
    print(json.dumps(report))
