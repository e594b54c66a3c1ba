"""Our own Prometheus registry and every metric family the sidecar exports.

Multi-worker: when ``PROMETHEUS_MULTIPROC_DIR`` is set (the supervisor sets it for its
workers before they start), prometheus-client writes samples to shared files and
:meth:`Metrics.render` aggregates every worker's files, so ``/metrics`` on any worker is
correct for the whole process group.

Labels are bounded: rule names from config, reason codes, methods folded to a fixed set,
status codes; never a raw path, client-supplied string or token.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sidecar import __version__

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


_BOUNDS = (*LATENCY_BUCKETS, math.inf)


class _PendingRequests:
    __slots__ = ("count", "duration_sum", "durations", "upstream", "upstream_sum")

    def __init__(self) -> None:
        self.count = 0
        self.durations = [0] * len(_BOUNDS)
        self.duration_sum = 0.0
        self.upstream = [0] * len(_BOUNDS)
        self.upstream_sum = 0.0


def _add_to_histogram(child: Any, buckets: list[int], total: float) -> None:
    """Add pre-bucketed observations to a histogram child.

    prometheus-client has no batch ``observe``; its per-bucket values (non-cumulative, as
    ``observe`` itself increments) are ``_buckets`` and ``_sum``. tests/unit/test_metrics.py
    pins this against ``observe`` so a library change cannot go unnoticed.
    """
    child._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)


class _FlushOnCollect(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self._metrics.flush()
        return ()


def method_label(method: str) -> str:
    """Fold methods to a closed set so a client cannot mint label values."""
    return method if method in KNOWN_METHODS else "OTHER"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric family, registered on a registry this object owns."""

    def __init__(self) -> None:
        mp_dir = multiprocess_dir()
        if mp_dir is not None:
            # An emptyDir/tmpfs starts empty; prometheus-client needs the directory to exist.
            os.makedirs(mp_dir, exist_ok=True)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._pending: dict[tuple[str, str, int, str, str], _PendingRequests] = {}
        self._owner_thread = threading.get_ident()
        self._flush_hooks: list[Callable[[], None]] = []
        # First collector of the registry: any collection flushes pending samples first.
        r.register(_FlushOnCollect(self))
        self.requests = Counter(
            "sidecar_requests", "Requests on the public port by outcome.",
            ["rule", "method", "status", "decision"], registry=r)
        self.request_duration = Histogram(
            "sidecar_request_duration_seconds", "Time from request start to response end.",
            ["rule"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_duration = Histogram(
            "sidecar_upstream_duration_seconds",
            "Time from forwarding to upstream response headers.",
            ["rule"], buckets=LATENCY_BUCKETS, registry=r)
        self.denials = Counter(
            "sidecar_denials", "Requests denied, by pipeline stage and reason code.",
            ["stage", "reason"], registry=r)
        self.ratelimit_decisions = Counter(
            "sidecar_ratelimit_decisions", "Rate-limit decisions by policy.",
            ["policy", "decision"], registry=r)
        self.redis_errors = Counter(
            "sidecar_redis_errors", "Redis operations that failed.", ["operation"], registry=r)
        self.ratelimit_breaker_open = Gauge(
            "sidecar_ratelimit_breaker_open",
            "1 while the rate-limit store circuit breaker is open.",
            registry=r, multiprocess_mode="max")
        self.jwks_refresh = Counter(
            "sidecar_jwks_refresh", "JWKS fetches by issuer and result.",
            ["issuer", "result"], registry=r)
        self.signature_verifications = Counter(
            "sidecar_signature_verifications", "HTTP message signature checks by result.",
            ["result"], registry=r)
        self.audit_queue_depth = Gauge(
            "sidecar_audit_queue_depth", "Audit events waiting to be written.",
            registry=r, multiprocess_mode="livesum")
        self.audit_events = Counter(
            "sidecar_audit_events", "Audit events by sink and result (written|spooled|dropped).",
            ["sink", "result"], registry=r)
        self.tokens_issued = Counter(
            "sidecar_tokens_issued", "Tokens issued by the embedded token endpoint.",
            ["client_id"], registry=r)
        self.token_excessive_issuance = Counter(
            "sidecar_token_excessive_issuance", "Token requests beyond excessive_issuance per ttl.",
            ["client_id"], registry=r)
        self.config_reloads = Counter(
            "sidecar_config_reloads", "SIGHUP config reloads by result.", ["result"], registry=r)
        self.build_info = Gauge(
            "sidecar_build_info", "Build information; always 1.", ["version"],
            registry=r, multiprocess_mode="max")
        self.build_info.labels(version=__version__).set(1)


    def count_request(self, rule: str, method: str, status: int, stage: str, reason: str,
                      seconds: float, upstream_seconds: float | None) -> None:
        """Record one request on the public port (allowed when ``stage`` is empty).

        Per-request cost matters here, so samples are accumulated in plain Python and
        handed to prometheus-client by :meth:`flush` (before every collection, and every
        second by :meth:`run_flusher` so other workers' scrapes see them).
        """
        key = (rule, method, status, stage, reason)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _PendingRequests()
        pending.count += 1
        pending.durations[bisect_left(_BOUNDS, seconds)] += 1
        pending.duration_sum += seconds
        if upstream_seconds is not None:
            pending.upstream[bisect_left(_BOUNDS, upstream_seconds)] += 1
            pending.upstream_sum += upstream_seconds

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (on the event-loop thread) at every :meth:`flush`: a stage that keeps
        a figure in plain Python hands it to its metric there, not per request."""
        self._flush_hooks.append(hook)

    def flush(self) -> None:
        """Move accumulated request samples into the metric families (event-loop thread)."""
        if threading.get_ident() != self._owner_thread:
            return
        for hook in self._flush_hooks:
            hook()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for (rule, method, status, stage, reason), p in pending.items():
            decision = "deny" if stage else "allow"
            self.requests.labels(rule, method_label(method), str(status), decision).inc(p.count)
            _add_to_histogram(self.request_duration.labels(rule), p.durations, p.duration_sum)
            if any(p.upstream):
                _add_to_histogram(self.upstream_duration.labels(rule), p.upstream,
                                  p.upstream_sum)
            if stage:
                self.denials.labels(stage, reason).inc(p.count)

    async def run_flusher(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds, for scrapes served by another worker."""
        while True:
            await asyncio.sleep(interval)
            self.flush()

    def render(self) -> bytes:
        """Prometheus text exposition of this process, or of every worker in multiprocess mode."""
        mp_dir = multiprocess_dir()
        if mp_dir is None:
            return generate_latest(self.registry)
        self.flush()
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate, path=mp_dir)  # type: ignore[no-untyped-call]
        return generate_latest(aggregate)
