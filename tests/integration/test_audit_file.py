"""The audit log with real files: rotation, flush on close, spool and replay, no leaks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar import stages
from sidecar.audit import AuditLog, AuditStartError
from sidecar.audit.verify import verify_files
from sidecar.metrics import Metrics
from tests.unit.test_audit_support import (
    JWT,
    PAN,
    PAN_AMEX,
    SECRET,
    audit_config,
    make_ctx,
    read_events,
    rotated,
    sample,
    validator,
)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def requests_in(events: list[dict[str, object]]) -> list[str]:
    return [str(e["request_id"]) for e in events if e["type"] == "request"]


async def test_the_log_is_the_pipeline_stage_and_emitter(tmp_path: Path) -> None:
    log = AuditLog(audit_config(tmp_path), None, Metrics())
    stage: stages.AuditLog = log
    lifecycle: stages.Lifecycle = log
    emitter: stages.EventEmitter = log.emit
    await lifecycle.start()
    stage.record_request(make_ctx(1))
    emitter("config_reload", {"result": "ok"})
    await lifecycle.close()
    await log.close()  # idempotent
    assert [e["type"] for e in read_events(tmp_path / "audit.jsonl")] == [
        "request", "config_reload", "checkpoint"]


async def test_rotation_keeps_the_chain_verifiable_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    metrics = Metrics()
    log = AuditLog(audit_config(tmp_path, {"type": "file", "path": str(path),
                                           "max_bytes": "4KiB", "backups": 200,
                                           "fsync": "never"},
                                checkpoint_every=50), None, metrics)
    await log.start()
    for i in range(600):
        log.record_request(make_ctx(i))
        if i % 37 == 0:
            await asyncio.sleep(0)
    await log.close()
    files = rotated(path)
    assert len(files) > 20
    assert all(f.stat().st_size <= 4096 for f in files)
    report = verify_files(files, b"", strict=True)
    assert report.ok, report.broken
    events = read_events(*files)
    assert requests_in(events) == [f"req-{i}" for i in range(600)]
    v = validator()
    for event in events[::10] + [e for e in events if e["type"] != "request"]:
        v.validate(event)
    assert sample(metrics, "file", "written") == len(events)
    assert sample(metrics, "file", "dropped") == 0


async def test_oldest_backups_are_deleted_at_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(audit_config(tmp_path, {"type": "file", "path": str(path),
                                           "max_bytes": "4KiB", "backups": 2}), None, Metrics())
    await log.start()
    for i in range(200):
        log.record_request(make_ctx(i))
    await log.close()
    assert sorted(p.name for p in tmp_path.glob("audit.jsonl*")) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    report = verify_files(rotated(path), b"")
    assert report.ok, report.broken
    assert any("starts at seq" in w for w in report.warnings)


@pytest.mark.slow
@pytest.mark.parametrize("queue_size", [10_000, 16], ids=["default-queue", "tiny-queue"])
async def test_close_under_load_flushes_everything(tmp_path: Path, queue_size: int) -> None:
    path = tmp_path / "audit.jsonl"
    metrics = Metrics()
    log = AuditLog(audit_config(tmp_path, {"type": "file", "path": str(path), "fsync": "always"},
                                queue_size=queue_size, chain_key="k"), None, metrics)
    await log.start()

    async def client(worker: int) -> None:
        for i in range(1500):
            log.record_request(make_ctx(worker * 10_000 + i))
            if i % 100 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(client(w) for w in range(8)))
    await log.close()  # immediately: most events are still queued
    events = read_events(path)
    assert len(requests_in(events)) == 12_000
    assert verify_files([path], b"k", strict=True).ok
    assert sample(metrics, "file", "written") == len(events)
    assert sample(metrics, "file", "dropped") == 0
    assert metrics.registry.get_sample_value("sidecar_audit_queue_depth") == 0
    if queue_size == 16:
        assert sample(metrics, "file", "spooled") > 0  # overflow went to disk, not lost
    assert not list((tmp_path / "spool").glob("*.jsonl"))


async def test_pans_tokens_and_secrets_never_reach_any_sink(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    metrics = Metrics()
    log = AuditLog(audit_config(tmp_path, {"type": "stdout"},
                                {"type": "file", "path": str(path)},
                                redact={"query_params": ["card_number", "pan"],
                                        "headers": ["X-Api-Key"]}), None, metrics)
    await log.start()
    log.record_request(make_ctx(1, path=f"/v1/cards/{PAN}/charges"))
    log.record_request(make_ctx(2, query=f"card_number={PAN}&amount=10"))
    log.record_request(make_ctx(3, query=f"note={PAN_AMEX}&ref=4111-1111-1111-1111"))
    log.record_request(make_ctx(4, query="PAN=5555555555554444",
                                audit_flags={"authorization": f"Bearer {JWT}"}))
    log.emit("token_issued", {"client_id": "merchant-a", "jti": "j", "access_token": JWT,
                              "client_secret": SECRET, "kid": JWT})
    log.emit("signature_replay", {"keyid": "k", "signature": "sig1=:AAA:", "body": SECRET,
                                  "x-api-key": SECRET, "client_id": f"Bearer {JWT}"})
    log.emit("rate_limit_store_error", {"operation": "take",
                                        "error": f"redis://:{SECRET}@r/0 refused {PAN}"})
    await log.close()
    stdout = capfd.readouterr().out
    file_text = path.read_text()
    assert stdout == file_text
    assert len(stdout.splitlines()) == 8  # 4 requests, 3 security events, 1 checkpoint
    for secret in (PAN, PAN_AMEX, "4111-1111-1111-1111", "5555555555554444", JWT, SECRET,
                   "sig1=:AAA:"):
        assert secret not in stdout
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[0]["path"] == "/v1/cards/%5BREDACTED%5D/charges"
    assert events[1]["path"].endswith("?card_number=%5BREDACTED%5D&amount=10")
    assert events[2]["path"].endswith("?note=%5BREDACTED%5D&ref=%5BREDACTED%5D")
    v = validator()
    for event in events:
        v.validate(event)
    for sink in ("stdout", "file"):
        assert sample(metrics, sink, "written") == 8
        assert sample(metrics, sink, "dropped") == 0


async def test_a_failing_file_sink_spools_then_replays_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()  # the sink cannot open its file: every write fails
    metrics = Metrics()
    log = AuditLog(audit_config(tmp_path, {"type": "file", "path": str(path)}), None, metrics)
    await log.start()
    for i in range(300):
        log.record_request(make_ctx(i))
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    await until(lambda: sample(metrics, "file", "spooled") == 300)
    assert list((tmp_path / "spool").glob("file.*.jsonl"))
    path.rmdir()  # the disk problem is fixed
    for i in range(300, 400):
        log.record_request(make_ctx(i))
    await until(lambda: sample(metrics, "file", "written") == 400)
    await log.close()
    events = read_events(path)
    assert requests_in(events) == [f"req-{i}" for i in range(400)]
    assert verify_files([path], b"", strict=True).ok
    assert sample(metrics, "file", "dropped") == 0
    assert not list((tmp_path / "spool").glob("*.jsonl"))


async def test_a_backlog_left_at_shutdown_is_replayed_by_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()
    first_metrics = Metrics()
    cfg = audit_config(tmp_path, {"type": "file", "path": str(path)}, shutdown_timeout="1s")
    first = AuditLog(cfg, None, first_metrics)
    await first.start()
    for i in range(50):
        first.record_request(make_ctx(i))
    await first.close()
    assert sample(first_metrics, "file", "spooled") == 51  # with the shutdown checkpoint
    assert sample(first_metrics, "file", "dropped") == 0
    assert len(list((tmp_path / "spool").glob("file.*.jsonl"))) == 1

    path.rmdir()
    second_metrics = Metrics()
    second = AuditLog(cfg, None, second_metrics)
    await second.start()
    for i in range(50, 60):
        second.record_request(make_ctx(i))
    await second.close()
    events = read_events(path)
    assert requests_in(events) == [f"req-{i}" for i in range(60)]
    assert [e["chain"] for e in events[:51]] == [first.chain_id] * 51
    report = verify_files([path], b"", strict=True)
    assert report.ok, report.broken
    assert set(report.chains) == {first.chain_id, second.chain_id}
    assert sample(second_metrics, "file", "written") == 51 + 11
    assert not list((tmp_path / "spool").iterdir())


async def test_two_writers_share_one_rotating_file(tmp_path: Path) -> None:
    """As ``--workers 2`` does: two processes' chains interleave and rotate one file."""
    path = tmp_path / "audit.jsonl"
    cfg = audit_config(tmp_path, {"type": "file", "path": str(path), "max_bytes": "8KiB",
                                  "backups": 500})
    logs = [AuditLog(cfg, None, Metrics()) for _ in range(2)]
    for log in logs:
        await log.start()
    for i in range(400):
        logs[i % 2].record_request(make_ctx(i))
        if i % 25 == 0:
            await asyncio.sleep(0.001)
    for log in logs:
        await log.close()
    files = rotated(path)
    report = verify_files(files, b"", strict=True)
    assert report.ok, report.broken
    assert len(report.chains) == 2
    assert sorted(requests_in(read_events(*files))) == sorted(f"req-{i}" for i in range(400))


async def test_an_unusable_spool_dir_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    cfg = audit_config(tmp_path, spool_dir=str(tmp_path / "blocker" / "spool"))
    log = AuditLog(cfg, None, Metrics())
    with pytest.raises(AuditStartError, match="spool_dir"):
        await log.start()


async def test_periodic_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(audit_config(tmp_path, {"type": "file", "path": str(path)},
                                checkpoint_interval="100ms"), None, Metrics())
    await log.start()
    log.record_request(make_ctx(1))
    await asyncio.sleep(0.35)  # one interval checkpoint; idle intervals add none
    log.record_request(make_ctx(2))
    await log.close()
    kinds = [(e["type"], e.get("reason")) for e in read_events(path)]
    assert kinds == [("request", "ok"), ("checkpoint", "interval"), ("request", "ok"),
                     ("checkpoint", "shutdown")]


async def test_a_steady_trickle_is_written_in_batches_not_one_write_per_event(
        tmp_path: Path) -> None:
    # One sink write per event would cost a thread hand-off per request; the writer
    # lingers so that events arriving over a few milliseconds share one write.
    log = AuditLog(audit_config(tmp_path), None, Metrics())
    await log.start()
    sink = log.channels[0].sink
    writes: list[int] = []
    original = sink.write

    async def counting_write(lines: list[bytes]) -> None:
        writes.append(len(lines))
        await original(lines)

    sink.write = counting_write  # type: ignore[method-assign]
    for i in range(200):
        log.record_request(make_ctx(i))
        await asyncio.sleep(0.0005)  # a request every half millisecond
    await until(lambda: sum(writes) >= 200)
    await log.close()
    assert len(writes) <= 200 // 5, writes
    assert requests_in(read_events(tmp_path / "audit.jsonl")) == [f"req-{i}" for i in range(200)]


async def test_request_events_are_sealed_at_the_end_of_the_loop_turn_in_order(
        tmp_path: Path) -> None:
    log = AuditLog(audit_config(tmp_path), None, Metrics())
    await log.start()
    for i in range(3):
        log.record_request(make_ctx(i))
    assert log._chain.seq == 0  # deferred to the end of this turn
    await asyncio.sleep(0)
    assert log._chain.seq == 3
    log.record_request(make_ctx(3))
    log.emit("config_reload", {"result": "ok"})  # seals the waiting request event first
    await log.close()
    events = read_events(tmp_path / "audit.jsonl")
    assert [e.get("request_id", e["type"]) for e in events] == [
        "req-0", "req-1", "req-2", "req-3", "config_reload", "checkpoint"]
