"""Sink adapters: stdout, rotating file, Redis Stream. Thin, no policy.

Each ``write`` takes a batch of JSON lines (bytes ending in ``\\n``) and either writes all of
them or raises :class:`SinkError` having written none (a file is truncated back; a Redis
batch is one ``MULTI``/``EXEC``). Blocking calls run on the sink's own single thread, never
on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from sidecar.config.audit import FileSink, RedisStreamSink

log = logging.getLogger(__name__)
BATCH_FSYNC_INTERVAL = 1.0


class SinkError(Exception):
    """A sink could not take a whole batch; its first ``written`` lines were written, the
    rest were not."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class PartialWrite(OSError):
    """A file write failed after ``done`` lines of the batch were appended."""

    def __init__(self, done: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.done = done


class Sink(Protocol):
    name: str

    async def write(self, lines: Sequence[bytes]) -> None:
        """Write every line or raise :class:`SinkError`."""
        ...

    async def idle(self) -> None:
        """Called about once a second when no events flow (deferred fsync)."""
        ...

    async def close(self) -> None:
        """Flush and fsync what was written; release the sink's resources."""
        ...


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Threaded:
    """Runs blocking calls of one sink, in order, on that sink's thread."""

    def __init__(self, name: str, executor: ThreadPoolExecutor) -> None:
        self.name = name
        self._executor = executor

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class StdoutSink(_Threaded):
    """JSON lines on file descriptor 1 (a container's log stream)."""

    def __init__(self, name: str, executor: ThreadPoolExecutor, fd: int = 1) -> None:
        super().__init__(name, executor)
        self._fd = fd

    async def write(self, lines: Sequence[bytes]) -> None:
        try:
            await self._run(_write_all, self._fd, b"".join(lines))
        except OSError as exc:
            raise SinkError(f"stdout: {exc.strerror}") from exc

    async def idle(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RotatingFile:
    """Append-only file rotated by size to ``path.1`` .. ``path.N`` (blocking; one thread).

    Safe for several processes appending to one path: writes use ``O_APPEND``, rotation
    takes an ``flock`` on ``.NAME.lock`` beside the file, and a writer whose file was rotated
    by another process reopens the path instead of rotating again.
    """

    def __init__(self, cfg: FileSink, clock: Any = time.monotonic) -> None:
        self.path = Path(cfg.path)
        self.max_bytes = cfg.max_bytes
        self.backups = cfg.backups
        self.fsync_policy = cfg.fsync
        self._clock = clock
        self._fd: int | None = None
        self._ino = -1
        self._dirty = False
        self._last_fsync = 0.0

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._fd, self._ino = fd, os.fstat(fd).st_ino
        return fd

    def _current_fd(self) -> int:
        if self._fd is None:
            return self._open()
        try:
            rotated = os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            rotated = True
        if rotated:
            self._close_fd(fsync=True)
            return self._open()
        return self._fd

    def _close_fd(self, fsync: bool) -> None:
        if self._fd is not None:
            if fsync and self._dirty:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd, self._dirty = None, False

    def write(self, lines: Sequence[bytes]) -> None:
        """Append ``lines``, rotating whenever the next line would pass ``max_bytes``.

        Raises:
            PartialWrite: with the number of lines appended before the failure; nothing of
                the failed chunk is left in the file (truncated back).
        """
        done = 0
        try:
            fd = self._current_fd()
            size = os.fstat(fd).st_size
            chunk: list[bytes] = []
            chunk_size = 0
            for line in lines:
                if size + chunk_size + len(line) > self.max_bytes and size + chunk_size > 0:
                    if chunk:
                        self._append(fd, size, b"".join(chunk))
                        done += len(chunk)
                    fd = self._rotate()
                    size = os.fstat(fd).st_size
                    chunk, chunk_size = [], 0
                chunk.append(line)
                chunk_size += len(line)
            if chunk:
                self._append(fd, size, b"".join(chunk))
        except OSError as exc:
            raise PartialWrite(done, exc) from exc
        if self.fsync_policy == "always" or (
            self.fsync_policy == "batch"
            and self._clock() - self._last_fsync >= BATCH_FSYNC_INTERVAL
        ):
            try:
                self.sync()
            except OSError as exc:
                # The lines are written (in the page cache); re-spooling them would duplicate.
                log.error("audit file %s: fsync failed: %s", self.path, exc.strerror)

    def _append(self, fd: int, size: int, data: bytes) -> None:
        try:
            _write_all(fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                # Another process may have appended meanwhile; only cut what is ours.
                if os.fstat(fd).st_size <= size + len(data):
                    os.ftruncate(fd, size)
            raise
        self._dirty = True

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_fsync = self._clock()

    def _rotate(self) -> int:
        durable = self.fsync_policy != "never"
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        lock_fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                rotated_by_other = os.stat(self.path).st_ino != self._ino
            except FileNotFoundError:
                rotated_by_other = True
            self._close_fd(fsync=durable)
            if not rotated_by_other:
                for i in range(self.backups - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{i}")
                    if older.exists():
                        os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            fd = self._open()
            if durable:
                _fsync_dir(self.path.parent)
            return fd
        finally:
            os.close(lock_fd)

    def idle(self) -> None:
        if self._dirty and self.fsync_policy == "batch":
            self.sync()

    def close(self) -> None:
        self._close_fd(fsync=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSinkAdapter(_Threaded):
    """The ``file`` sink: a :class:`RotatingFile` driven from its own thread."""

    def __init__(self, name: str, executor: ThreadPoolExecutor, cfg: FileSink) -> None:
        super().__init__(name, executor)
        self.file = RotatingFile(cfg)

    async def write(self, lines: Sequence[bytes]) -> None:
        try:
            await self._run(self.file.write, lines)
        except PartialWrite as exc:
            raise SinkError(f"file {self.file.path}: {exc.strerror}", exc.done) from exc

    async def idle(self) -> None:
        with contextlib.suppress(OSError):
            await self._run(self.file.idle)

    async def close(self) -> None:
        try:
            await self._run(self.file.close)
        except OSError as exc:
            log.error("audit sink %s: close failed: %s", self.name, exc.strerror)


def _line_key(line: bytes | str) -> tuple[str, int] | None:
    try:
        event = json.loads(line)
        return str(event["chain"]), int(event["seq"])
    except (ValueError, KeyError, TypeError):
        return None


class RedisStreamAdapter:
    """The ``redis_stream`` sink: one pipelined ``MULTI``/``EXEC`` of ``XADD``s per batch.

    After a failure the outcome of the last batch is unknown (the server may have applied
    ``EXEC`` before the connection broke), so the next write first drops lines whose
    (chain, seq) already sits at the end of the stream: replay adds no duplicates. (A retry
    inside redis-py after a lost reply can still add one: delivery is at least once, and
    consumers dedupe by (chain, seq).)
    """

    def __init__(self, name: str, client: Redis | RedisCluster, cfg: RedisStreamSink,
                 timeout: float = 5.0) -> None:
        self.name = name
        self._client = client
        # One key, one slot; but a cluster pipeline cannot be a MULTI/EXEC, so there a
        # failed batch may be half applied, which the read-back below also covers.
        self._transaction = not isinstance(client, RedisCluster)
        self._stream = cfg.stream
        self._maxlen = cfg.maxlen
        self._timeout = timeout
        self._suspect = True
        """Check the stream's tail before the next write: at start (a previous run may have
        died mid-replay) and after any failure."""

    async def _already_written(self, count: int) -> set[tuple[str, int]]:
        entries = await self._client.xrevrange(self._stream, count=count)
        seen = set()
        for _id, fields in entries or ():
            if not fields:
                continue
            raw = fields.get(b"event", fields.get("event"))
            key = _line_key(raw) if raw is not None else None
            if key is not None:
                seen.add(key)
        return seen

    async def write(self, lines: Sequence[bytes]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                if self._suspect:
                    seen = await self._already_written(max(4 * len(lines), 1000))
                    lines = [ln for ln in lines if _line_key(ln) not in seen]
                    self._suspect = False
                if not lines:
                    return
                pipe = self._client.pipeline(transaction=self._transaction)
                for line in lines:
                    pipe.xadd(self._stream, {"event": line.rstrip(b"\n")},
                              maxlen=self._maxlen, approximate=True)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._suspect = True
            raise SinkError(f"redis stream {self._stream}: {type(exc).__name__}") from exc

    async def idle(self) -> None:
        return None

    async def close(self) -> None:
        return None
