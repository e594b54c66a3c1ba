"""Shared test rig. Fixture modules live in tests/fixtures/ and are loaded as plugins, so a
stage's tests can add fixtures without editing this file."""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)
