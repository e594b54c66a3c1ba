"""Batched request metrics must equal what prometheus-client's own observe() records."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from sidecar.metrics import _BOUNDS, LATENCY_BUCKETS, Metrics, _add_to_histogram


@pytest.mark.parametrize("values", [[0.0004, 0.001, 0.0011, 3.0, 99.0], [0.05] * 7, []])
def test_pre_bucketed_samples_equal_observe(values: list[float]) -> None:
    from bisect import bisect_left

    reference = Histogram("ref", "r", registry=CollectorRegistry(), buckets=LATENCY_BUCKETS)
    batched = Histogram("bat", "b", registry=CollectorRegistry(), buckets=LATENCY_BUCKETS)
    for v in values:
        reference.observe(v)
    buckets = [0] * len(_BOUNDS)
    for v in values:
        buckets[bisect_left(_BOUNDS, v)] += 1
    _add_to_histogram(batched, buckets, sum(values))
    ref = {s.name.replace("ref", ""): (s.labels.get("le"), s.value)
           for s in next(iter(reference.collect())).samples if "created" not in s.name}
    bat = {s.name.replace("bat", ""): (s.labels.get("le"), s.value)
           for s in next(iter(batched.collect())).samples if "created" not in s.name}
    ref_samples = sorted((k, *v) for k, v in ref.items())
    assert ref_samples == sorted((k, *v) for k, v in bat.items())
    ref_all = [(s.labels.get("le"), s.value) for s in next(iter(reference.collect())).samples
               if s.name.endswith("_bucket")]
    bat_all = [(s.labels.get("le"), s.value) for s in next(iter(batched.collect())).samples
               if s.name.endswith("_bucket")]
    assert ref_all == bat_all


def test_recorded_requests_are_visible_to_every_collection() -> None:
    metrics = Metrics()
    metrics.count_request("r", "GET", 200, "", "ok", 0.002, 0.001)
    metrics.count_request("r", "GET", 403, "rbac", "forbidden", 0.001, None)
    metrics.count_request("r", "BREW", 200, "", "ok", 0.002, None)
    reg = metrics.registry
    assert reg.get_sample_value("sidecar_requests_total", {
        "rule": "r", "method": "GET", "status": "200", "decision": "allow"}) == 1
    assert reg.get_sample_value("sidecar_requests_total", {
        "rule": "r", "method": "OTHER", "status": "200", "decision": "allow"}) == 1
    assert reg.get_sample_value("sidecar_denials_total", {
        "stage": "rbac", "reason": "forbidden"}) == 1
    assert reg.get_sample_value("sidecar_request_duration_seconds_count", {"rule": "r"}) == 3
    assert reg.get_sample_value("sidecar_upstream_duration_seconds_count", {"rule": "r"}) == 1
    assert b'sidecar_requests_total{decision="deny"' in metrics.render()
