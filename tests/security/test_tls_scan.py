"""An external scanner's view of the listener: sslyze against the sidecar on loopback.

sslyze pins an older ``cryptography`` than the sidecar, so it normally lives in its own
virtualenv: the test runs it as a subprocess of ``$SSLYZE_PYTHON``, else of the venv that
``bench/tls_scan.sh`` creates (``.cache/sslyze-venv``), else of this interpreter if it can
import sslyze; otherwise it is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from bench.tls_scan import findings, run_sslyze
from tests.fixtures.proxy import REPO, Backend, base_config
from tests.fixtures.tls import StartTLSSidecar, TLSMaterial


def _sslyze_python() -> str | None:
    configured = os.environ.get("SSLYZE_PYTHON")
    if configured:
        return configured
    venv = REPO / ".cache" / "sslyze-venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    return sys.executable if importlib.util.find_spec("sslyze") is not None else None


SSLYZE_PYTHON = _sslyze_python()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SSLYZE_PYTHON is None,
                       reason="sslyze not available: set SSLYZE_PYTHON to an interpreter "
                              "with sslyze, or run bench/tls_scan.sh once"),
]

OLD = ["SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1"]


@pytest.mark.parametrize("min_version", ["1.3", "1.2"])
async def test_sslyze_finds_only_the_promised_protocols_and_forward_secret_aead_suites(
        min_version: str, backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar, tmp_path: Path) -> None:
    assert SSLYZE_PYTHON is not None
    sidecar = await start_tls_sidecar(base_config(backend.url, server={
        "tls": tls_material.tls_section(min_version=min_version)}))

    document, console = await asyncio.to_thread(
        run_sslyze, SSLYZE_PYTHON, sidecar.host, sidecar.port, tls_material.ca_file,
        tmp_path, None, 240.0)
    found = findings(document, console)

    expected = ["TLS 1.3"] if min_version == "1.3" else ["TLS 1.2", "TLS 1.3"]
    assert found.accepted_protocols == expected
    assert not set(OLD) & set(found.accepted_protocols)
    for name, kex in found.suites.get("TLS 1.2", []):
        assert name.startswith("TLS_ECDHE_"), name
        assert "_GCM_" in name or "_CHACHA20_POLY1305" in name, name
        assert kex.startswith("ECDH"), (name, kex)
    if min_version == "1.2":
        assert found.suites["TLS 1.2"], "no TLS 1.2 suite accepted at all"
    assert found.problems(min_version) == []
    assert found.checks["compression"] == "off"
    assert found.checks["client renegotiation"] == "refused"
    assert found.checks["heartbleed"] == "not vulnerable"
    assert found.checks["ccs injection"] == "not vulnerable"
    assert found.checks["TLS 1.3 early data"] == "False"
    assert found.checks["HSTS"].startswith("max-age=31536000")
    if min_version == "1.2":
        assert found.checks["TLS 1.2 resumption: tickets"].startswith("NOT_SUPPORTED")
