"""/metrics of a running sidecar: bounded label cardinality under 1,000 distinct paths, no
raw path or client value in any label, and `promtool check metrics` accepts the output."""

from __future__ import annotations

import re
import shutil
import subprocess

import aiohttp
import pytest
from yarl import URL

from tests.fixtures.proxy import Backend, StartSidecar, base_config

RBAC = {"rules": [
    {"name": "public-v1", "path": "/v1/**", "methods": ["GET"], "public": True},
    {"name": "item", "path": "/v2/items/{id}", "methods": ["GET"], "public": True},
]}


async def _live_metrics(backend: Backend, start_sidecar: StartSidecar) -> str:
    sidecar = await start_sidecar(base_config(backend.url, rbac=RBAC))
    async with aiohttp.ClientSession() as s:
        for i in range(1000):
            path = (f"/v1/p{i}", f"/v2/items/{i}", f"/unrouted/{i}", f"/v1/{i}/%2e%2e/x",
                    f"/v2/items/{i}")[i % 5]
            method = "GET" if i % 7 else f"M{i}"  # unknown methods must fold to OTHER
            async with s.request(method, URL(sidecar.url + path, encoded=True)) as r:
                await r.read()
    return sidecar.metrics.render().decode()


async def test_a_thousand_distinct_paths_leave_the_series_count_bounded(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    text = await _live_metrics(backend, start_sidecar)
    requests = [line for line in text.splitlines() if line.startswith("sidecar_requests_total{")]
    assert 0 < len(requests) <= 12, requests
    rules = set(re.findall(r'rule="([^"]*)"', text))
    assert rules <= {"public-v1", "item", "none"}
    methods = set(re.findall(r'method="([^"]*)"', text))
    assert methods <= {"GET", "OTHER"}
    assert "/unrouted/" not in text and "/v1/p" not in text and "M14" not in text


async def test_promtool_accepts_the_live_exposition(
    backend: Backend, start_sidecar: StartSidecar
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package prometheus; .ci/run installs it)")
    text = await _live_metrics(backend, start_sidecar)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
