"""Static checks are part of the suite: ruff (with bandit and async rules) and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.fixtures.proxy import REPO


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "sidecar", "tests", "bench"],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("mypy") is None and sys.modules.get("mypy") is None,
                    reason="mypy not installed")
def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-color-output"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
