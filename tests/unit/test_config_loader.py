"""The loader: units, environment substitution, unknown keys, every error with its line."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, parse_text
from sidecar.config.types import parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5), ("1d", 86400)])
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30", 30, "5 minutes", "-1s", "", True, None])
def test_a_duration_without_a_unit_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), [
    ("512KiB", 512 * 1024), ("1MiB", 1024**2), ("1GiB", 1024**3), (100, 100), ("10KB", 10_000)])
def test_sizes_parse_to_bytes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_environment_variables_are_substituted_with_defaults() -> None:
    loaded = parse_text(
        'upstream: {url: "http://${UP_HOST}:${UP_PORT:-9000}"}\n',
        env={"UP_HOST": "backend"})
    assert loaded.config.upstream.url == "http://backend:9000"


def test_every_error_is_reported_at_once_with_path_and_line() -> None:
    text = (
        "server:\n"
        "  listen: 0.0.0.0:8000\n"
        "  max_body_byts: 1MiB\n"          # line 3: typo
        "upstream:\n"
        "  url: ftp://x\n"                 # line 5: wrong scheme
        "  timeout: 30\n"                  # line 6: no unit
        "admin:\n"
        "  listen: ${ADMIN_ADDR}\n"        # line 8: unset variable
    )
    with pytest.raises(ConfigError) as caught:
        parse_text(text, env={})
    messages = [str(i) for i in caught.value.issues]
    assert "server.max_body_byts: unknown key (not part of the config schema) (line 3)" in messages
    assert any(m.startswith("upstream.url:") and m.endswith("(line 5)") for m in messages)
    assert any(m.startswith("upstream.timeout:") and m.endswith("(line 6)") for m in messages)
    assert "admin.listen: environment variable ADMIN_ADDR is not set (line 8)" in messages


def test_an_unknown_top_level_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ratelimits: unknown key"):
        parse_text("ratelimits: {}\n")


def test_invalid_yaml_reports_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text("server:\n  listen: [unclosed\n")
    assert caught.value.issues[0].line is not None


def test_a_loaded_config_is_immutable() -> None:
    config = parse_text("").config
    with pytest.raises(Exception, match="frozen"):
        config.server.workers = 4  # type: ignore[misc]
