"""``--workers N``: N worker processes sharing the port (SO_REUSEPORT) under a supervisor.

The supervisor restarts a worker that dies unexpectedly, forwards SIGTERM/SIGINT/SIGHUP,
and gives workers a shared ``PROMETHEUS_MULTIPROC_DIR`` so /metrics on any worker reports
the whole group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("sidecar.supervisor")

RESTART_BACKOFF_MAX = 5.0


class Supervisor:
    def __init__(self, config_path: str, workers: int, shutdown_grace: float) -> None:
        self.config_path = config_path
        self.count = workers
        self.grace = shutdown_grace
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self._restarts: dict[int, float] = {}
        # Set by the signal handler: a SIGTERM ends a poll interval or a restart backoff
        # at once instead of after it.
        self._wake = threading.Event()

    def _worker_argv(self) -> Sequence[str]:
        return [sys.executable, "-m", "sidecar", "run", "-c", self.config_path, "--worker"]

    def _spawn(self, slot: int, env: dict[str, str]) -> None:
        # S603: argv is our own interpreter and module, not user input.
        proc = subprocess.Popen(self._worker_argv(), env=env)  # noqa: S603
        self.procs[slot] = proc
        log.info("worker %d started (pid %d)", slot, proc.pid)

    def _signal(self, signum: int, _: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            self._wake.set()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def run(self) -> int:
        mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        owned_dir = None
        if mp_dir:
            shutil.rmtree(mp_dir, ignore_errors=True)
            os.makedirs(mp_dir, exist_ok=True)
        else:
            owned_dir = mp_dir = tempfile.mkdtemp(prefix="sidecar-metrics-")
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": mp_dir, "SIDECAR_SUPERVISED": "1"}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._signal)
        for slot in range(self.count):
            self._spawn(slot, env)
        exit_code = 0
        try:
            exit_code = self._watch(env)
        finally:
            if owned_dir:
                shutil.rmtree(owned_dir, ignore_errors=True)
        return exit_code

    def _watch(self, env: dict[str, str]) -> int:
        from prometheus_client import multiprocess

        deadline: float | None = None
        while self.procs:
            self._wake.wait(0.1)  # child exits are polled; signals wake us early
            self._wake.clear()
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.grace + 5
            for slot, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.procs[slot]
                with contextlib.suppress(Exception):
                    multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                if self.stopping:
                    log.info("worker %d exited (%d)", slot, code)
                    continue
                log.error("worker %d (pid %d) died with %d; restarting", slot, proc.pid, code)
                last = self._restarts.get(slot, 0.0)
                backoff = min(RESTART_BACKOFF_MAX, 0.5 if time.monotonic() - last > 10 else 2.0)
                self._restarts[slot] = time.monotonic()
                self._wake.wait(backoff)
                if not self.stopping:
                    self._spawn(slot, env)
            if deadline is not None and time.monotonic() > deadline:
                for proc in self.procs.values():
                    proc.kill()
                return 1
        return 0
