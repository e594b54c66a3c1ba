"""``sidecar demo`` answers the commands it prints, as printed (run by bash, with curl)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.proxy import REPO
from tests.support import free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the demo prints curl")


def test_the_printed_demo_commands_do_what_they_say(tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "demo", "--port", ports[0], "--admin-port", ports[1],
         "--backend-port", ports[2], "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("Ctrl-C") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        script = text.split("Copy-paste, in another shell:", 1)[1].split("Ctrl-C", 1)[0]
        result = subprocess.run(["bash", "-c", "set -e\n" + script], capture_output=True,
                                text=True, timeout=60, check=False,
                                env={**os.environ, "PATH": os.environ["PATH"]})
        assert result.returncode == 0, result.stderr
        out = result.stdout.splitlines()
        assert '"merchant_id": "m-1"' in out[0] and '"X-Auth-Client-Id": "merchant-a"' in out[0]
        assert '"code":"forbidden"' in out[1]
        assert out[2].split() == ["200"] * 5 + ["429"] * 2
        assert '"status": "refunded"' in out[3]
        assert '"code":"signature_replayed"' in out[4]
        assert '"code":"token_missing"' in out[5]
        assert '"code":"bad_path"' in out[6]
        counted = [line for line in out[7:] if line.startswith("sidecar_requests_total")]
        assert any(re.search(r'rule="list-payments",status="429"\} 2\.0', c) for c in counted)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
