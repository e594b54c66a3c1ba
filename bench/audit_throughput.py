"""How many audit events per second one AuditLog with a file sink sustains.

    python bench/audit_throughput.py [--events 200000] [--fsync batch] [--key]

Records request events as a busy worker would (yielding to the loop every 100 events), then
closes the log (final checkpoint, flush, fsync) and verifies the file. Prints the enqueue
cost, the end-to-end rate (until everything is on disk) and what went through the spool.
Bounded: it stops after ``--events`` events and removes its temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from sidecar.audit import AuditLog
from sidecar.audit.verify import verify_files
from sidecar.config.audit import AuditConfig
from sidecar.context import Identity, RateLimitOutcome, RequestContext, RouteMatch
from sidecar.metrics import Metrics


def contexts(n: int) -> list[RequestContext]:
    identity = Identity(client_id="merchant-a", subject="merchant-a",
                        issuer="https://idp.example.com/", scopes=frozenset({"payments:read"}),
                        roles=frozenset(), claims={}, expires_at=time.time() + 600,
                        token_id="jti-1")  # noqa: S106
    return [
        RequestContext(
            request_id=f"req-{i:08d}", method="GET", path=f"/v1/merchants/m-1/payments/p-{i}",
            query="expand=refunds&card_number=4111111111111111" if i % 10 == 0 else "",
            client_ip="203.0.113.7", peer_ip="10.0.0.1", scheme="https", host="api",
            started=time.perf_counter(), identity=identity,
            route=RouteMatch(rule=None, name="read-payment", params={}, public=False),
            rate_limit=RateLimitOutcome(policy="per-client", limit=100, remaining=99,
                                        reset_seconds=1.0, allowed=True),
            upstream_seconds=0.001, status=200,
        )
        for i in range(n)
    ]


async def record(events: int, fsync: str, key: bool, directory: Path) -> dict[str, float]:
    """Record ``events`` request events and close the log; timings and sink counters."""
    cfg = AuditConfig.model_validate({
        "sinks": [{"type": "file", "path": str(directory / "audit.jsonl"), "fsync": fsync}],
        "spool_dir": str(directory / "spool"), "chain_key": "bench-key" if key else "",
    })
    metrics = Metrics()
    log = AuditLog(cfg, None, metrics)
    pool = contexts(1000)
    await log.start()
    cpu_start = time.process_time()
    start = time.perf_counter()
    enqueue = 0.0
    for i in range(0, events, 100):
        t = time.perf_counter()
        for ctx in pool[i % 1000:i % 1000 + 100]:
            log.record_request(ctx)
        enqueue += time.perf_counter() - t
        await asyncio.sleep(0)
    recorded = time.perf_counter() - start
    await log.close()
    out = {"enqueue": enqueue, "recorded": recorded, "total": time.perf_counter() - start,
           "cpu": time.process_time() - cpu_start}
    for result in ("written", "spooled", "dropped"):
        value = metrics.registry.get_sample_value(
            "sidecar_audit_events_total", {"sink": "file", "result": result})
        out[result] = value or 0.0
    return out


def report(events: int, fsync: str, key: bool, directory: Path, r: dict[str, float]) -> None:
    backups = sorted(directory.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    files = [*backups, directory / "audit.jsonl"]
    size = sum(f.stat().st_size for f in files)
    verified = verify_files(files, b"bench-key" if key else b"", strict=True)
    written = int(r["written"])
    print(f"events:            {events} (+{written - events} checkpoints), "
          f"fsync={fsync}, {'HMAC' if key else 'SHA-256'} chain")
    print(f"enqueue:           {r['enqueue'] / events * 1e6:.1f} us/event on the loop "
          f"({events / r['enqueue']:,.0f}/s)")
    print(f"CPU, all threads:  {r['cpu'] / events * 1e6:.1f} us/event (loop, writer and spool "
          "threads; with the process on one cpu this is what a request pays)")
    print(f"recording phase:   {events / r['recorded']:,.0f} events/s")
    print(f"end to end:        {events / r['total']:,.0f} events/s (until closed and fsynced, "
          f"{r['total']:.2f}s)")
    print(f"written/spooled/dropped: {written}/{int(r['spooled'])}/{int(r['dropped'])}")
    print(f"files:             {len(files)}, {size / 2**20:.1f} MiB, {size / written:.0f} "
          f"B/event, verify --strict "
          f"{'OK' if verified.ok else 'FAILED: ' + str(verified.broken)}")
    print(f"load average:      {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--fsync", choices=["always", "batch", "never"], default="batch")
    parser.add_argument("--key", action="store_true", help="HMAC chain (audit.chain_key set)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    try:
        results = asyncio.run(record(args.events, args.fsync, args.key, directory))
        report(args.events, args.fsync, args.key, directory, results)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
