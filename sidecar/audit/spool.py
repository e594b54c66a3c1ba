"""The spool: an ordered on-disk backlog per sink, replayed when the sink recovers.

Files in ``spool_dir`` (JSON lines exactly as the sink receives them):

* ``SINK.CHAIN.NNNNNNNNN.jsonl``: sealed segments, replayed oldest (lowest N) first;
* ``SINK.CHAIN.active-N.jsonl``: appended by the sink's writer thread while the sink is down;
* ``SINK.CHAIN.overflow-N.jsonl``: appended on the event loop when the in-memory queue is
  full (buffered, never fsynced on the loop); newer than any ``active`` file.
* ``CHAIN.lock``: ``flock``-ed by the live process owning CHAIN. A start adopts the segments
  of every chain whose lock it can take (a process that exited or crashed) and replays them
  before its own events, so a backlog survives restarts.

Only the sink's writer touches ``active`` and sealed segments (on its thread); only the event
loop appends to ``overflow``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

ACTIVE_MAX_BYTES = 64 * 1024 * 1024
"""An active segment this large is sealed so replay can free disk space progressively."""
_SEGMENT_RE = re.compile(r"^(?P<sink>[a-z0-9][a-z0-9_-]*)\.(?P<chain>[0-9a-f]+-\d+)\."
                         r"(?P<part>\d{9}|active-\d{9}|overflow-\d{9})\.jsonl$")


def _part_order(part: str) -> tuple[int, int]:
    kind, _, number = part.rpartition("-")
    return ({"": 0, "active": 1, "overflow": 2}[kind], int(number))


def _open_append(path: Path, buffering: int) -> BinaryIO:
    # Audit data: readable by the sidecar's user only.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "ab", buffering=buffering)


class Spool:
    """The backlog of one sink for one writer chain."""

    def __init__(self, directory: Path, sink: str, chain_id: str) -> None:
        self.directory = directory
        self.sink = sink
        self.chain_id = chain_id
        self.segments: deque[Path] = deque()
        """Sealed segments, oldest first (mutated by the writer only)."""
        self.replay_pos = 0
        """Byte offset already replayed in ``segments[0]``."""
        self._counter = 0
        self._active: BinaryIO | None = None
        self._active_path = Path()
        self._active_size = 0
        self._overflow: BinaryIO | None = None
        self._overflow_path = Path()

    def _path(self, part: str) -> Path:
        return self.directory / f"{self.sink}.{self.chain_id}.{part}.jsonl"

    def _next_path(self, kind: str = "") -> Path:
        self._counter += 1
        return self._path(f"{kind}{self._counter:09d}")

    @property
    def has_backlog(self) -> bool:
        return bool(self.segments) or self._active is not None

    @property
    def overflow_open(self) -> bool:
        return self._overflow is not None

    # --- event loop: overflow appends (buffered; a write(2) per 64 KiB) -------------------

    def overflow_append(self, line: bytes) -> None:
        """Raises OSError when the spool cannot be written."""
        if self._overflow is None:
            self._overflow_path = self._next_path("overflow-")
            self._overflow = _open_append(self._overflow_path, 64 * 1024)
        self._overflow.write(line)

    def detach_overflow(self) -> tuple[BinaryIO, Path] | None:
        """Stop appending to the overflow file; seal it with :meth:`seal_overflow`."""
        handle, self._overflow = self._overflow, None
        return None if handle is None else (handle, self._overflow_path)

    # --- writer thread --------------------------------------------------------------------

    def seal_overflow(self, detached: tuple[BinaryIO, Path]) -> None:
        """Flush, fsync and seal a detached overflow file (after :meth:`seal_active`)."""
        handle, overflow_path = detached
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        path = self._next_path()
        os.replace(overflow_path, path)
        self.segments.append(path)

    def append_active(self, lines: Sequence[bytes]) -> None:
        """Append and fsync ``lines`` (the sink is down). Raises OSError."""
        if self._active is None:
            self._active_path = self._next_path("active-")
            self._active = _open_append(self._active_path, -1)
            self._active_size = self._active.tell()
        data = b"".join(lines)
        try:
            self._active.write(data)
            self._active.flush()
            os.fsync(self._active.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # leave no torn line for the retry to follow
                os.ftruncate(self._active.fileno(), self._active_size)
            raise
        self._active_size += len(data)
        if self._active_size >= ACTIVE_MAX_BYTES:
            self.seal_active()

    def seal_active(self) -> None:
        if self._active is None:
            return
        self._active.close()
        self._active = None
        path = self._next_path()
        os.replace(self._active_path, path)
        self.segments.append(path)

    def read_batch(self, max_lines: int) -> tuple[list[bytes], int]:
        """Up to ``max_lines`` complete lines of ``segments[0]`` from ``replay_pos``, and the
        offset after them; ``([], pos)`` at the end of the segment."""
        lines: list[bytes] = []
        with open(self.segments[0], "rb") as f:
            f.seek(self.replay_pos)
            pos = self.replay_pos
            for line in f:
                if not line.endswith(b"\n"):
                    log.warning("audit spool %s: dropping a torn last line (%d bytes)",
                                self.segments[0].name, len(line))
                    break
                lines.append(line)
                pos += len(line)
                if len(lines) >= max_lines:
                    break
        return lines, pos

    def finish_segment(self) -> None:
        """``segments[0]`` is fully replayed: delete it."""
        path = self.segments.popleft()
        self.replay_pos = 0
        path.unlink(missing_ok=True)

    def adopt(self, paths: Iterable[Path]) -> None:
        """Take over sealed or open segments of a dead chain, in their order, as ours."""
        for path in paths:
            target = self._next_path()
            try:
                os.replace(path, target)
            except FileNotFoundError:
                continue  # another process adopted it first
            self.segments.append(target)

    def close(self) -> None:
        """Seal the active segment and cut what was already replayed from the oldest one;
        what is left stays for the next start."""
        if self._active is not None:
            self._active.flush()
            os.fsync(self._active.fileno())
            self.seal_active()
        if self.segments and self.replay_pos > 0:
            head = self.segments[0]
            tmp = head.with_name(head.name + ".tmp")
            with open(head, "rb") as src, open(tmp, "wb") as dst:
                src.seek(self.replay_pos)
                while chunk := src.read(1024 * 1024):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, head)
            self.replay_pos = 0


class SpoolDir:
    """The spool directory: our chain's lock and adoption of dead chains' segments."""

    def __init__(self, directory: str | os.PathLike[str], chain_id: str) -> None:
        self.directory = Path(directory)
        self.chain_id = chain_id
        self._lock_fd: int | None = None
        self._adopted: list[tuple[int, Path]] = []

    def open(self) -> None:
        """Create the directory (0700) and lock our chain. Raises OSError."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / f"{self.chain_id}.lock",
                     os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd

    def orphans(self, sinks: Iterable[str]) -> dict[str, list[Path]]:
        """Segments of chains no live process holds, per sink name, oldest first.

        Each orphan chain's lock is taken while its files are listed and released after
        :meth:`release_orphans`; files of sinks no longer configured are left (logged).
        """
        found: dict[str, dict[str, list[tuple[tuple[int, int], Path]]]] = {}
        for path in self.directory.iterdir():
            match = _SEGMENT_RE.match(path.name)
            if match is None or match["chain"] == self.chain_id:
                continue
            found.setdefault(match["chain"], {}).setdefault(match["sink"], []).append(
                (_part_order(match["part"]), path))
        wanted = set(sinks)
        out: dict[str, list[Path]] = {}
        for chain, per_sink in sorted(found.items()):
            lock_path = self.directory / f"{chain}.lock"
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live process owns it
            self._adopted.append((fd, lock_path))
            for sink, parts in per_sink.items():
                if sink not in wanted:
                    log.warning("audit spool: %d file(s) of sink %r (no longer configured) "
                                "left in %s", len(parts), sink, self.directory)
                    continue
                out.setdefault(sink, []).extend(p for _, p in sorted(parts))
        return out

    def release_orphans(self) -> None:
        for fd, lock_path in self._adopted:
            lock_path.unlink(missing_ok=True)
            os.close(fd)
        self._adopted = []

    def close(self, empty: bool) -> None:
        """Release our lock; remove it when nothing of ours is left to replay."""
        if self._lock_fd is not None:
            if empty:
                with contextlib.suppress(OSError):
                    (self.directory / f"{self.chain_id}.lock").unlink()
            os.close(self._lock_fd)
            self._lock_fd = None
