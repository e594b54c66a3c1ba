"""The `audit` config section and its cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import ConfigError, parse_text
from sidecar.config.audit import AuditConfig, FileSink, RedisStreamSink, StdoutSink


def load(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) as ``sidecar check`` prints them."""
    try:
        loaded = parse_text(text, env={})
    except ConfigError as exc:
        return [str(i) for i in exc.issues], []
    return [], [str(w) for w in loaded.warnings]


def test_defaults() -> None:
    cfg = AuditConfig()
    assert [type(s) for s in cfg.sinks] == [StdoutSink]
    assert (cfg.queue_size, cfg.spool_dir, cfg.checkpoint_every, cfg.checkpoint_interval) == (
        10_000, "/var/lib/sidecar/spool", 1000, 60.0)
    assert cfg.redact.query_params == ("card_number", "pan", "cvv", "ssn")
    assert cfg.key_bytes == b""


def test_the_spec_example_parses(tmp_path: Path) -> None:
    cfg = AuditConfig.model_validate({
        "sinks": [
            {"type": "stdout"},
            {"type": "file", "path": str(tmp_path / "a.jsonl"), "max_bytes": "100MiB",
             "backups": 10},
            {"type": "redis_stream", "stream": "sidecar:audit", "maxlen": 1000000},
        ],
        "queue_size": 10000, "spool_dir": str(tmp_path), "chain_key": "hmac-key-7Q",
        "redact": {"query_params": ["card_number"], "headers": []},
        "checkpoint_interval": "30s",
    })
    file_sink = cfg.sinks[1]
    assert isinstance(file_sink, FileSink)
    assert (file_sink.max_bytes, file_sink.backups, file_sink.fsync) == (
        100 * 2**20, 10, "batch")
    assert isinstance(cfg.sinks[2], RedisStreamSink)
    assert [s.label for s in cfg.sinks] == ["stdout", "file", "redis_stream"]
    assert cfg.key_bytes == b"hmac-key-7Q"
    assert "hmac-key-7Q" not in repr(cfg)  # the key is a secret


@pytest.mark.parametrize(("audit_yaml", "message"), [
    ("sinks: [{type: syslog}]", "audit.sinks[0]: Input tag 'syslog'"),
    ("sinks: [{type: file}]", "audit.sinks[0].file.path: Field required"),
    ("sinks: [{type: file, path: a, fsync: sometimes}]", "audit.sinks[0].file.fsync"),
    ("sinks: [{type: stdout, colour: true}]", "unknown key"),
    ("sinks: [{type: file, path: a}, {type: file, path: b}]", "two sinks are named 'file'"),
    ("sinks: [{type: file, path: a}, {type: file, path: a, name: other}]",
     "two file sinks write the same path"),
    ("sinks: [{type: stdout, name: 'Bad Name'}]", "audit.sinks[0].stdout.name"),
    ("spool_dir: ''", "audit.spool_dir: must not be empty"),
    ("checkpoint_every: 0", "audit.checkpoint_every"),
    ("queue_size: 0", "audit.queue_size"),
    ("sinks: [{type: redis_stream}]", "audit.sinks[0]: a redis_stream sink needs the "
                                      "top-level redis section"),
], ids=["unknown-sink-type", "file-needs-path", "bad-fsync", "unknown-key", "duplicate-names",
        "duplicate-paths", "bad-name", "empty-spool", "zero-checkpoint", "zero-queue",
        "redis-stream-needs-redis"])
def test_invalid(audit_yaml: str, message: str, tmp_path: Path) -> None:
    text = f"audit:\n  spool_dir: {tmp_path}\n" + "".join(
        f"  {line}\n" for line in audit_yaml.splitlines())
    if audit_yaml.startswith("spool_dir"):
        text = f"audit:\n  {audit_yaml}\n"
    errors, _ = load(text)
    assert any(message in e for e in errors), errors


def test_redis_stream_with_redis_section_is_valid(tmp_path: Path) -> None:
    errors, warnings = load(f"redis: {{url: 'redis://127.0.0.1:6379/0'}}\naudit:\n"
                            f"  spool_dir: {tmp_path}\n  chain_key: k\n"
                            "  sinks: [{type: redis_stream, stream: 's'}]\n")
    assert (errors, warnings) == ([], [])


def test_unusable_spool_dir_and_empty_key_are_warnings(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    errors, warnings = load(f"audit:\n  spool_dir: {blocker}/spool\n")
    assert errors == []
    assert any("audit.spool_dir: warning:" in w and "refuse to start" in w for w in warnings)
    assert any("audit.chain_key: warning: empty" in w for w in warnings)
    _, warnings = load(f"audit:\n  spool_dir: {blocker}\n  chain_key: k\n")
    assert any("exists and is not a directory" in w for w in warnings)


def test_chain_key_from_the_environment(tmp_path: Path) -> None:
    loaded = parse_text(f"audit:\n  spool_dir: {tmp_path}\n  chain_key: ${{AUDIT_KEY:-}}\n",
                        env={"AUDIT_KEY": "from-env"})
    assert loaded.config.audit is not None
    assert loaded.config.audit.key_bytes == b"from-env"
