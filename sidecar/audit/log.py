"""The audit log: builds, chains and fans out events to every sink without blocking.

``record_request`` and ``emit`` run on the event loop in the request path: they build the
event (pure), seal it into the hash chain (so chain order is enqueue order) and hand one
encoded line to each sink's :class:`~sidecar.audit.channel.Channel`. Nothing in them waits
for I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from sidecar.audit.chain import Chain
from sidecar.audit.channel import Channel
from sidecar.audit.events import EventBuilder
from sidecar.audit.sinks import FileSinkAdapter, RedisStreamAdapter, Sink, StdoutSink
from sidecar.audit.spool import Spool, SpoolDir
from sidecar.config.audit import AuditConfig, FileSink, RedisStreamSink
from sidecar.context import RequestContext
from sidecar.metrics import Metrics

log = logging.getLogger(__name__)


class AuditStartError(RuntimeError):
    """The audit log cannot start (spool directory unusable): the sidecar must not run."""


class AuditLog:
    """Implements :class:`sidecar.stages.AuditLog` and :class:`sidecar.stages.Lifecycle`.

    Args:
        cfg: the ``audit`` section.
        redis: the shared ``redis.asyncio`` client (standalone, Sentinel or Cluster);
            required when a ``redis_stream`` sink is configured.
        metrics: ``audit_queue_depth`` and ``audit_events{sink,result}`` are updated.
        clock: wall-clock seconds, for the events' ``time``.
        elapsed_clock: the clock ``ctx.started`` is read from (the pipeline uses
            ``time.perf_counter``), for ``latency_ms``.

    Raises:
        ValueError: a ``redis_stream`` sink without a Redis client.
    """

    def __init__(self, cfg: AuditConfig, redis: Redis | RedisCluster | None, metrics: Metrics,
                 clock: Callable[[], float] = time.time,
                 elapsed_clock: Callable[[], float] = time.perf_counter) -> None:
        self._cfg = cfg
        self._clock = clock
        self._elapsed_clock = elapsed_clock
        self._metrics = metrics
        self._builder = EventBuilder(cfg.redact.query_params, cfg.redact.headers)
        self._chain = Chain(cfg.key_bytes)
        self._spool_dir = SpoolDir(cfg.spool_dir, self._chain.chain_id)
        self._spool_exec = ThreadPoolExecutor(1, thread_name_prefix="audit-spool")
        self._sink_execs: list[ThreadPoolExecutor] = []
        self.channels = [
            Channel(self._make_sink(sink, redis), Spool(self._spool_dir.directory, sink.label,
                                                        self._chain.chain_id),
                    self._spool_exec, cfg.queue_size, metrics.audit_events, self._report_depth)
            for sink in cfg.sinks
        ]
        # The depth gauge is set when a writer takes a batch and before every scrape, not
        # per event: a gauge update per request would cost more than the queue append.
        metrics.add_flush_hook(self._report_depth)
        self._backlog: list[tuple[RequestContext, float, float]] = []
        self._seal_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since_checkpoint = 0
        self._accepting = True
        self._started = False
        self._closed = False
        self._timer: asyncio.Task[None] | None = None

    def _make_sink(self, cfg: Any, redis: Redis | RedisCluster | None) -> Sink:
        if isinstance(cfg, RedisStreamSink):
            if redis is None:
                raise ValueError("a redis_stream audit sink needs a Redis client")
            return RedisStreamAdapter(cfg.label, redis, cfg)
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"audit-{cfg.label}")
        self._sink_execs.append(executor)
        if isinstance(cfg, FileSink):
            return FileSinkAdapter(cfg.label, executor, cfg)
        return StdoutSink(cfg.label, executor)

    @property
    def chain_id(self) -> str:
        return self._chain.chain_id

    # --- Lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool directory, adopt a previous run's backlog, start the writers.

        Raises:
            AuditStartError: the spool directory cannot be created, written or locked.
        """
        if self._started:
            return
        loop = self._loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._spool_exec, self._spool_dir.open)
            orphans = await loop.run_in_executor(
                self._spool_exec, self._spool_dir.orphans, [c.sink.name for c in self.channels])
            for channel in self.channels:
                paths = orphans.get(channel.sink.name)
                if paths:
                    log.warning("audit sink %s: replaying %d spool file(s) of a previous run",
                                channel.sink.name, len(paths))
                    await loop.run_in_executor(self._spool_exec, channel.spool.adopt, paths)
            await loop.run_in_executor(self._spool_exec, self._spool_dir.release_orphans)
        except OSError as exc:
            raise AuditStartError(
                f"audit spool_dir {self._cfg.spool_dir}: {exc.strerror or exc}") from exc
        self._started = True
        for channel in self.channels:
            channel.start()
        self._timer = asyncio.create_task(self._checkpoint_timer(), name="audit-checkpoints")

    async def close(self) -> None:
        """Stop accepting, write the final checkpoint, drain every sink (or its spool) within
        ``shutdown_timeout`` and fsync. Call after the server stopped taking requests."""
        if self._closed:
            return
        if not self._started:
            await self.start()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._seal_backlog()
        if self._chain.seq:
            self._checkpoint("shutdown")
        self._accepting = False
        deadline = time.monotonic() + self._cfg.shutdown_timeout
        for channel in self.channels:
            try:
                await channel.close(deadline)
            except Exception:
                log.exception("audit sink %s: close failed", channel.sink.name)
        empty = not any(c.spool.has_backlog for c in self.channels)
        self._spool_dir.close(empty)
        for executor in self._sink_execs:
            executor.shutdown(wait=False)  # a stuck sink thread must not hold shutdown
        self._spool_exec.shutdown(wait=True)

    # --- AuditLog --------------------------------------------------------------------------

    def record_request(self, ctx: RequestContext) -> None:
        """Record the ``request`` event of a finished request. Never blocks or raises.

        The event's time and latency are taken now; building and sealing it waits for the
        end of this event-loop turn, where every request that finished in the turn is
        sealed in one tight loop (in order; :meth:`emit` and :meth:`close` seal what is
        waiting first). Under load that halves the per-event cost against doing it between
        two requests, whose code has pushed the audit code out of the CPU caches.
        """
        if not self._accepting:
            log.error("audit: request event after close: not recorded")
            self._drop()
            return
        self._backlog.append((ctx, self._clock(), self._elapsed_clock() - ctx.started))
        if not self._seal_scheduled:
            if self._loop is None:
                self._seal_backlog()
                return
            self._seal_scheduled = True
            self._loop.call_soon(self._seal_backlog)

    def _seal_backlog(self) -> None:
        self._seal_scheduled = False
        backlog, self._backlog = self._backlog, []
        build = self._builder.request
        for ctx, now, elapsed in backlog:
            try:
                event = build(ctx, now, elapsed)
            except Exception:
                log.exception("audit: cannot build the request event of %s", ctx.request_id)
                self._drop()
                continue
            self._append(event)

    def emit(self, event_type: str, fields: Mapping[str, Any]) -> None:
        """Record a security event (only its type's allowed fields). Never blocks or raises;
        an unknown type is logged and not recorded."""
        if self._backlog:
            self._seal_backlog()  # chain order is the order things were recorded
        try:
            event = self._builder.security(event_type, fields, self._clock())
        except Exception:
            log.exception("audit: cannot build a %s event", event_type)
            self._drop()
            return
        if event is None:
            log.error("audit: unknown security event type %r not recorded", event_type)
            return
        self._append(event)

    # --- internals -------------------------------------------------------------------------

    def _append(self, event: dict[str, Any], checkpoint: bool = False) -> None:
        if not self._accepting:
            log.error("audit: %s event after close: not recorded", event.get("type"))
            self._drop()
            return
        try:
            line = self._chain.seal(event)
        except (TypeError, ValueError):
            log.exception("audit: cannot encode a %s event", event.get("type"))
            self._drop()
            return
        for channel in self.channels:
            channel.offer(line)
        if not checkpoint:
            self._since_checkpoint += 1
            if self._since_checkpoint >= self._cfg.checkpoint_every:
                self._checkpoint("count")

    def _checkpoint(self, reason: str) -> None:
        if self._backlog:
            self._seal_backlog()
        fields = self._chain.checkpoint_fields(reason)
        event = self._builder.security("checkpoint", fields, self._clock(), internal=True)
        assert event is not None
        self._since_checkpoint = 0
        self._append(event, checkpoint=True)

    async def _checkpoint_timer(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.checkpoint_interval)
            if self._since_checkpoint:
                self._checkpoint("interval")

    def _drop(self) -> None:
        for channel in self.channels:
            channel.drop()

    def _report_depth(self) -> None:
        self._metrics.audit_queue_depth.set(max((len(c.pending) for c in self.channels),
                                                default=0))
