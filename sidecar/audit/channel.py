"""One sink's queue, writer task and spool: every event reaches the sink, in order, once.

Order of one sink's events, oldest first: sealed spool segments -> the active segment ->
the batch being written -> ``pending`` (memory) -> the overflow segment. The writer keeps it:

* healthy, no backlog: batches from ``pending`` go straight to the sink, each after a short
  linger (:data:`LINGER`, cut short when :data:`BATCH_MAX` events wait) so that under load
  a batch carries tens of events: a sink write costs a thread hand-off and a wake-up of the
  event loop, which per single event would cost more than building the event;
* a write fails: that batch and everything after it goes to the spool (written and fsynced
  on the spool thread) while the writer probes the sink with backoff by replaying the oldest
  segment; once the spool is replayed, events flow directly again;
* ``pending`` full (the writer is more than ``queue_size`` behind): :meth:`offer` appends to
  the overflow segment on the event loop (a buffered append, no fsync), and keeps doing so
  until the writer has caught up and sealed it - never blocking, never dropping unless the
  spool itself cannot be written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter

from sidecar.audit.sinks import Sink, SinkError
from sidecar.audit.spool import Spool

log = logging.getLogger(__name__)

BATCH_MAX = 1000
LINGER = 0.02
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
SINK_CLOSE_TIMEOUT = 5.0


class Channel:
    """Delivery of the audit stream to one sink."""

    def __init__(self, sink: Sink, spool: Spool, spool_executor: ThreadPoolExecutor,
                 queue_size: int, counter: Counter, on_depth: Callable[[], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.spool = spool
        self.pending: deque[bytes] = deque()
        self._spool_exec = spool_executor
        self._queue_size = queue_size
        self._written = counter.labels(sink=sink.name, result="written")
        self._spooled = counter.labels(sink=sink.name, result="spooled")
        self._dropped = counter.labels(sink=sink.name, result="dropped")
        self._on_depth = on_depth
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self.healthy = True
        self._backoff = BACKOFF_MIN
        self._retry_at = 0.0
        self._closing = False
        self._deadline = float("inf")
        self._inflight: list[bytes] = []
        self._overflow_warned = False
        self.task: asyncio.Task[None] | None = None

    # --- event loop, request path ---------------------------------------------------------

    def offer(self, line: bytes) -> None:
        """Queue one event line; never blocks, never raises."""
        if self.spool.overflow_open or len(self.pending) >= self._queue_size:
            try:
                self.spool.overflow_append(line)
            except OSError as exc:
                self._dropped.inc()
                log.error("audit sink %s: queue full and spool unwritable (%s): event dropped",
                          self.sink.name, exc.strerror)
            else:
                self._spooled.inc()
                if not self._overflow_warned:
                    self._overflow_warned = True
                    log.warning("audit sink %s: queue full (%d); spooling to disk",
                                self.sink.name, self._queue_size)
        else:
            self.pending.append(line)
            if len(self.pending) >= BATCH_MAX:
                self._full.set()
        self._wake.set()

    def drop(self, n: int = 1) -> None:
        self._dropped.inc(n)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"audit-writer-{self.sink.name}")

    async def close(self, deadline: float) -> None:
        """Drain to the sink until ``deadline`` (monotonic), spool the rest, close the sink."""
        self._closing = True
        self._deadline = deadline
        self._wake.set()
        self._full.set()
        if self.task is not None:
            await self.task
        leftovers = self._inflight + list(self.pending)
        self._inflight = []
        self.pending.clear()
        if leftovers:
            await self._spill(leftovers)
        await self._seal_overflow()
        await self._in_spool(self.spool.close)
        # A sink thread stuck in a write (a stdout pipe nobody reads) must not hold shutdown.
        closing = asyncio.ensure_future(self.sink.close())
        if not (await asyncio.wait({closing}, timeout=SINK_CLOSE_TIMEOUT))[0]:
            log.error("audit sink %s: close timed out", self.sink.name)
        self._on_depth()

    # --- writer task -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                progressed = await self._step()
            except Exception:
                log.exception("audit sink %s: writer error", self.sink.name)
                if self._closing:
                    return
                await asyncio.sleep(BACKOFF_MAX)
                continue
            if progressed:
                continue
            if self._closing:
                return
            self._wake.clear()
            timeout = 1.0 if self.healthy else max(0.0, self._retry_at - self._monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                if self.healthy:
                    await self.sink.idle()

    async def _step(self) -> bool:
        """Do one unit of work; False when there is nothing to do right now."""
        if self._closing and self.healthy and self._monotonic() >= self._deadline:
            log.error("audit sink %s: shutdown timeout; the rest stays in the spool",
                      self.sink.name)
            self.healthy = False
        if not self.healthy:
            if self.pending:
                await self._spill(self._take())
                return True
            if self.spool.overflow_open:
                await self._seal_overflow()
                return True
            if self._closing or self._monotonic() < self._retry_at:
                return False
            await self._replay_one()
            return True
        if self.spool.has_backlog:
            await self._replay_one()
            return True
        if self.pending:
            if len(self.pending) < BATCH_MAX and not self._closing:
                await self._linger()
            await self._write_direct(self._take())
            return True
        if self.spool.overflow_open:
            await self._seal_overflow()
            return True
        return False

    async def _linger(self) -> None:
        """Let a batch fill for up to :data:`LINGER` seconds (less when it fills up)."""
        self._full.clear()
        try:
            async with asyncio.timeout(LINGER):
                await self._full.wait()
        except TimeoutError:
            pass

    def _take(self) -> list[bytes]:
        n = min(len(self.pending), BATCH_MAX)
        batch = [self.pending.popleft() for _ in range(n)]
        self._on_depth()
        return batch

    async def _write_sink(self, lines: list[bytes]) -> None:
        """Write to the sink; past the shutdown deadline give up (SinkError)."""
        fut = asyncio.ensure_future(self.sink.write(lines))
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.5)
            if done:
                fut.result()
                return
            if self._closing and self._monotonic() >= self._deadline:
                fut.cancel()
                raise SinkError("shutdown timeout")

    async def _write_direct(self, batch: list[bytes]) -> None:
        self._inflight = batch
        try:
            await self._write_sink(batch)
        except SinkError as exc:
            self._written.inc(exc.written)
            self._failed(exc)
            self._inflight = []
            await self._spill(batch[exc.written:])
            return
        self._inflight = []
        self._written.inc(len(batch))

    async def _replay_one(self) -> None:
        spool = self.spool
        if not spool.segments:
            await self._in_spool(spool.seal_active)
            if not spool.segments:
                return
        lines, end = await self._in_spool(spool.read_batch, BATCH_MAX)
        if not lines:
            await self._in_spool(spool.finish_segment)
            if not spool.has_backlog:
                log.info("audit sink %s: spool replayed", self.sink.name)
            return
        try:
            await self._write_sink(lines)
        except SinkError as exc:
            spool.replay_pos += sum(len(ln) for ln in lines[:exc.written])
            self._written.inc(exc.written)
            self._failed(exc)
            return
        spool.replay_pos = end
        self._written.inc(len(lines))
        if not self.healthy:
            log.warning("audit sink %s: recovered; replaying the spool", self.sink.name)
        self.healthy = True
        self._backoff = BACKOFF_MIN

    def _failed(self, exc: SinkError) -> None:
        if self.healthy:
            log.warning("audit sink %s: %s; spooling", self.sink.name, exc)
        self.healthy = False
        self._retry_at = self._monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    async def _spill(self, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            await self._in_spool(self.spool.append_active, lines)
        except OSError as exc:
            if self._closing:
                self._dropped.inc(len(lines))
                log.error("audit sink %s: spool unwritable at shutdown (%s): %d events "
                          "dropped", self.sink.name, exc.strerror, len(lines))
                return
            log.error("audit sink %s: spool unwritable (%s); retrying", self.sink.name,
                      exc.strerror)
            self.pending.extendleft(reversed(lines))
            await asyncio.sleep(BACKOFF_MAX)
            return
        self._spooled.inc(len(lines))

    async def _seal_overflow(self) -> None:
        handle = self.spool.detach_overflow()
        if handle is None:
            return
        self._overflow_warned = False
        await self._in_spool(self.spool.seal_active)
        await self._in_spool(self.spool.seal_overflow, handle)

    async def _in_spool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._spool_exec, fn, *args)
