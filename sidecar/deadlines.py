"""Deadlines for many concurrent awaits, enforced by one periodic sweep.

``asyncio.timeout`` arms and cancels a loop timer per use, about 7 µs per request here
(bench/cpu_per_request.py: the whole pass-through request is ~450 µs). A proxy waits on
every request for the backend's response head with a deadline of seconds, where firing a
few tens of milliseconds late changes nothing, so one task sweeps the armed deadlines every
``resolution`` seconds instead: arming is a dict write, disarming a dict pop.

A deadline that passes cancels its task, exactly as ``asyncio.timeout`` would; the awaiting
code learns from :meth:`Deadlines.disarm` that the cancellation was the deadline's and
calls ``task.uncancel()`` before raising its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class Deadlines:
    """Armed deadlines of running tasks (loop time), checked every ``resolution`` seconds."""

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._armed: dict[asyncio.Task[Any], float] = {}
        self._fired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def arm(self, task: asyncio.Task[Any], deadline: float) -> None:
        """Cancel ``task`` once the loop time passes ``deadline`` (within one sweep)."""
        self._armed[task] = deadline

    def disarm(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``'s deadline; True when it already fired (and cancelled the task)."""
        self._armed.pop(task, None)
        if self._fired and task in self._fired:
            self._fired.discard(task)
            return True
        return False

    def sweep(self, now: float) -> None:
        """Cancel every task whose deadline is at or before ``now``."""
        expired = [task for task, deadline in self._armed.items() if deadline <= now]
        for task in expired:
            del self._armed[task]
            self._fired.add(task)
            task.cancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.resolution)
            self.sweep(loop.time())
