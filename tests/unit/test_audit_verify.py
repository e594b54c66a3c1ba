"""Verification finds the first broken link and says what happened to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit.chain import event_hash
from sidecar.audit.verify import Report, verify_files
from tests.unit.test_audit_support import dumps, sealed_events


def write(path: Path, events: list[dict[str, Any]] | list[str]) -> Path:
    lines = [e if isinstance(e, str) else dumps(e) for e in events]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def check(tmp_path: Path, events: list[Any], key: bytes = b"", strict: bool = False) -> Report:
    return verify_files([write(tmp_path / "audit.jsonl", events)], key, strict=strict)


def test_intact_chain_with_checkpoints(tmp_path: Path) -> None:
    report = check(tmp_path, sealed_events(25, checkpoint_every=10))
    assert report.ok, report.broken
    (summary,) = report.chains.values()
    assert (summary.first_seq, summary.last_seq, summary.checkpoints) == (1, 27, 2)
    assert report.warnings == [f"chain {summary.chain}: 5 event(s) after its last checkpoint "
                               "(seq 22)"]


def test_edit(tmp_path: Path) -> None:
    events = sealed_events(10)
    events[4]["status"] = 403
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.seq, report.broken.kind) == (5, 5, "edited")


def test_edit_rehashed_without_key_breaks_the_next_link(tmp_path: Path) -> None:
    events = sealed_events(10)
    events[4]["status"] = 403
    events[4]["hash"] = event_hash(events[4], b"")
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.kind) == (6, "edited")
    assert "seq 5 (line 5" in report.broken.detail


def test_deletion(tmp_path: Path) -> None:
    events = sealed_events(10)
    del events[3]
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.seq, report.broken.kind) == (4, 5, "deleted")
    assert report.broken.detail == "seq 4 missing"


def test_insertion_of_a_copy(tmp_path: Path) -> None:
    events = sealed_events(10)
    events.insert(6, events[2])
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.seq, report.broken.kind) == (7, 3, "inserted")


def test_insertion_of_a_later_copy_early(tmp_path: Path) -> None:
    events = sealed_events(10)
    events.insert(3, events[7])
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.seq, report.broken.kind) == (4, 8, "inserted")


def test_swap(tmp_path: Path) -> None:
    events = sealed_events(10)
    events[3], events[4] = events[4], events[3]
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.seq, report.broken.kind) == (4, 5, "reordered")


def test_truncation_before_the_last_checkpoint(tmp_path: Path) -> None:
    events = sealed_events(20, checkpoint_every=10)   # checkpoint at seq 11 and 22
    del events[15:21]                                 # cut events before the last checkpoint
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (22, "truncated")


def test_keyed_chain_needs_the_key(tmp_path: Path) -> None:
    events = sealed_events(5, key=b"k", checkpoint_every=5)
    assert check(tmp_path, events, key=b"k").ok
    wrong = check(tmp_path, events, key=b"other")
    assert wrong.broken is not None
    assert wrong.broken.kind == "edited"
    assert "wrong key" in wrong.broken.detail
    assert check(tmp_path, events, key=b"").broken is not None


def test_forged_checkpoint_mac(tmp_path: Path) -> None:
    events = sealed_events(5, key=b"k", checkpoint_every=5)
    events[-1]["mac"] = "0" * 64
    events[-1]["hash"] = event_hash(events[-1], b"k")  # an insider with the key but no mac
    report = check(tmp_path, events, key=b"k")
    assert report.broken is not None
    assert (report.broken.kind, report.broken.detail) == (
        "edited", "checkpoint mac does not match (wrong key, or forged)")


def test_interleaved_chains_and_files(tmp_path: Path) -> None:
    a, b = sealed_events(6), sealed_events(6)
    mixed = [e for pair in zip(a, b, strict=True) for e in pair]
    first = write(tmp_path / "audit.jsonl.1", mixed[:5])
    second = write(tmp_path / "audit.jsonl", mixed[5:])
    report = verify_files([first, second], b"")
    assert report.ok, report.broken
    assert len(report.chains) == 2
    reversed_order = verify_files([second, first], b"")
    assert reversed_order.broken is not None
    assert reversed_order.broken.file == str(first)


def test_a_missing_middle_file_is_a_deletion(tmp_path: Path) -> None:
    events = sealed_events(9)
    files = [write(tmp_path / f"f{i}", events[i * 3:(i + 1) * 3]) for i in range(3)]
    report = verify_files([files[0], files[2]], b"")
    assert report.broken is not None
    assert (report.broken.file, report.broken.line, report.broken.kind) == (
        str(files[2]), 1, "deleted")


def test_oldest_backup_deleted_is_a_warning_but_strict_fails(tmp_path: Path) -> None:
    events = sealed_events(9)
    report = check(tmp_path, events[3:])
    assert report.ok
    assert any("starts at seq 4" in w for w in report.warnings)
    strict = check(tmp_path, events[3:], strict=True)
    assert strict.broken is not None
    assert strict.broken.kind == "truncated"


def test_malformed_line(tmp_path: Path) -> None:
    events: list[Any] = [dumps(e) for e in sealed_events(3)]
    events.insert(1, "not json")
    report = check(tmp_path, events)
    assert report.broken is not None
    assert (report.broken.line, report.broken.kind) == (2, "malformed")


@pytest.mark.parametrize("field", ["chain", "seq", "prev", "hash"])
def test_missing_chain_field_is_malformed(tmp_path: Path, field: str) -> None:
    events = sealed_events(2)
    del events[1][field]
    report = check(tmp_path, [json.loads(dumps(e)) for e in events])
    assert report.broken is not None
    assert report.broken.kind == "malformed"
