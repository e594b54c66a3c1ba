"""``sidecar audit verify`` as an operator runs it: a subprocess over real files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.audit import AuditLog
from sidecar.metrics import Metrics
from tests.unit.test_audit_support import audit_config, make_ctx, rotated

KEY_ENV = "TEST_AUDIT_CHAIN_KEY"
KEY = "hmac-key-for-tests"


def sidecar(*args: str | Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *map(str, args)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def verify(*files: Path, key: bool = True) -> subprocess.CompletedProcess[str]:
    if key:
        return sidecar("audit", "verify", *files, "--key-env", KEY_ENV, env={KEY_ENV: KEY})
    return sidecar("audit", "verify", *files)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Audit files written by a real AuditLog: 300 events, HMAC chain, rotated files."""
    tmp = tmp_path_factory.mktemp("audit")
    path = tmp / "audit.jsonl"

    async def write() -> None:
        log = AuditLog(audit_config(tmp, {"type": "file", "path": str(path),
                                          "max_bytes": "32KiB", "backups": 50},
                                    chain_key=KEY, checkpoint_every=40), None, Metrics())
        await log.start()
        for i in range(300):
            log.record_request(make_ctx(i))
        log.emit("config_reload", {"result": "ok", "source": "config/sidecar.yaml"})
        await log.close()

    asyncio.run(write())
    files = rotated(path)
    assert len(files) >= 3
    return files


def tampered(src: Path, dst: Path, edit: str) -> Path:
    lines = src.read_text().splitlines(keepends=True)
    if edit == "edit":
        event = json.loads(lines[10])
        event["status"] = 500
        lines[10] = json.dumps(event, separators=(",", ":")) + "\n"
    elif edit == "delete":
        del lines[10]
    elif edit == "insert":
        lines.insert(10, lines[3])
    elif edit == "swap":
        lines[10], lines[11] = lines[11], lines[10]
    elif edit == "truncate":
        last_checkpoint = max(i for i, ln in enumerate(lines) if '"type":"checkpoint"' in ln)
        del lines[last_checkpoint - 5:last_checkpoint]
    dst.write_text("".join(lines))
    return dst


def test_a_good_set_of_files_verifies(written: list[Path]) -> None:
    result = verify(*written)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: {len(written)} file(s), ")
    assert "1 chain(s)" in result.stdout
    assert "ends with a shutdown checkpoint" in result.stdout


@pytest.mark.parametrize(("edit", "kind", "line"), [
    ("edit", "edited", 11), ("delete", "deleted", 11), ("insert", "inserted", 11),
    ("swap", "reordered", 11), ("truncate", "truncated", None),
])
def test_tampering_is_reported_at_the_first_broken_link(
        written: list[Path], tmp_path: Path, edit: str, kind: str, line: int | None) -> None:
    middle = tampered(written[1], tmp_path / written[1].name, edit)
    result = verify(written[0], middle, *written[2:])
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith(f"FAIL: {middle} line "), result.stdout
    assert f": {kind}: " in result.stdout
    if line is not None:
        assert result.stdout.startswith(f"FAIL: {middle} line {line}: chain ")


def test_a_missing_backup_in_the_middle_is_a_deletion(written: list[Path]) -> None:
    result = verify(written[0], *written[2:])
    assert result.returncode == 1
    assert f"FAIL: {written[2]} line 1: " in result.stdout
    assert ": deleted: " in result.stdout


def test_files_in_the_wrong_order_fail(written: list[Path]) -> None:
    result = verify(*reversed(written))
    assert result.returncode == 1


def test_without_the_key_the_hmac_chain_does_not_verify(written: list[Path]) -> None:
    result = verify(*written, key=False)
    assert result.returncode == 1
    assert "wrong key" in result.stdout


def test_an_unset_key_variable_is_a_user_error(written: list[Path]) -> None:
    result = sidecar("audit", "verify", written[-1], "--key-env", "TEST_AUDIT_UNSET_VAR")
    assert result.returncode == 1
    assert "TEST_AUDIT_UNSET_VAR is not set" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert sidecar("audit", "verify").returncode == 2
    assert sidecar("audit").returncode == 2
    missing = sidecar("audit", "verify", tmp_path / "nope.jsonl")
    assert missing.returncode == 1
    assert "No such file" in missing.stderr
