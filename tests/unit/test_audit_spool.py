"""The spool's on-disk order and the adoption of a dead process's backlog."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sidecar.audit.spool import Spool, SpoolDir

DEAD = "00000000000000aa-1"
LIVE = "00000000000000bb-2"
OURS = "00000000000000cc-3"


def test_segments_replay_in_write_order_across_active_and_overflow(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "file", OURS)
    spool.overflow_append(b"3\n")          # the loop overflows while ...
    spool.append_active([b"1\n", b"2\n"])  # ... the writer spills older events
    detached = spool.detach_overflow()
    assert detached is not None
    spool.seal_active()
    spool.seal_overflow(detached)
    replayed = []
    while spool.segments:
        lines, end = spool.read_batch(10)
        replayed += lines
        spool.replay_pos = end
        if not lines:
            spool.finish_segment()
    assert replayed == [b"1\n", b"2\n", b"3\n"]
    assert not list(tmp_path.iterdir())


def test_read_batch_resumes_and_skips_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "file", OURS)
    spool.append_active([b"a\n", b"b\n", b"c\n"])
    spool.seal_active()
    with open(spool.segments[0], "ab") as f:
        f.write(b'{"torn')
    lines, end = spool.read_batch(2)
    assert lines == [b"a\n", b"b\n"]
    spool.replay_pos = end
    assert spool.read_batch(10)[0] == [b"c\n"]


def test_close_cuts_the_replayed_part(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "file", OURS)
    spool.append_active([b"a\n", b"b\n"])
    spool.seal_active()
    spool.replay_pos = spool.read_batch(1)[1]
    spool.close()
    assert spool.segments[0].read_bytes() == b"b\n"


def test_adoption_takes_dead_chains_in_order_and_leaves_live_ones(tmp_path: Path) -> None:
    for name in (f"file.{DEAD}.000000007.jsonl", f"file.{DEAD}.overflow-000000005.jsonl",
                 f"file.{DEAD}.active-000000009.jsonl", f"file.{DEAD}.000000003.jsonl",
                 f"gone.{DEAD}.000000001.jsonl", f"file.{LIVE}.000000001.jsonl"):
        (tmp_path / name).write_text(name + "\n")
    live_lock = os.open(tmp_path / f"{LIVE}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(live_lock, fcntl.LOCK_EX)
    try:
        spool_dir = SpoolDir(tmp_path, OURS)
        spool_dir.open()
        orphans = spool_dir.orphans(["file"])
        assert [p.name.split(".")[2] for p in orphans["file"]] == [
            "000000003", "000000007", "active-000000009", "overflow-000000005"]
        spool = Spool(tmp_path, "file", OURS)
        spool.adopt(orphans["file"])
        spool_dir.release_orphans()
        assert [p.read_text().split(".")[2] for p in spool.segments] == [
            "000000003", "000000007", "active-000000009", "overflow-000000005"]
        assert all(OURS in p.name for p in spool.segments)
        assert (tmp_path / f"file.{LIVE}.000000001.jsonl").exists()
        assert (tmp_path / f"gone.{DEAD}.000000001.jsonl").exists()  # sink not configured
        assert not (tmp_path / f"{DEAD}.lock").exists()
        spool_dir.close(empty=False)
        assert (tmp_path / f"{OURS}.lock").exists()
    finally:
        os.close(live_lock)
