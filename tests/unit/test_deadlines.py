"""Coarse deadlines: a passed deadline cancels its task once; a disarmed one never fires."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.deadlines import Deadlines


async def test_a_passed_deadline_cancels_the_task_and_says_so() -> None:
    deadlines = Deadlines(resolution=0.01)
    deadlines.start()
    loop = asyncio.get_running_loop()
    outcome: list[str] = []

    async def waiter() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.arm(task, loop.time() + 0.05)
        fired = False
        try:
            try:
                await asyncio.sleep(10)
            finally:
                fired = deadlines.disarm(task)
        except asyncio.CancelledError:
            assert fired
            task.uncancel()
            outcome.append("deadline")

    started = loop.time()
    await asyncio.wait_for(waiter(), 2)
    elapsed = loop.time() - started
    await deadlines.close()
    assert outcome == ["deadline"]
    assert 0.05 <= elapsed < 0.5


async def test_an_outside_cancellation_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(resolution=0.01)
    deadlines.start()
    loop = asyncio.get_running_loop()
    fired: list[bool] = []

    async def waiter() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.arm(task, loop.time() + 60)
        try:
            await asyncio.sleep(10)
        finally:
            fired.append(deadlines.disarm(task))

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await deadlines.close()
    assert fired == [False]


async def test_a_disarmed_deadline_never_fires() -> None:
    deadlines = Deadlines(resolution=0.01)
    task = asyncio.create_task(asyncio.sleep(0.2))
    loop = asyncio.get_running_loop()
    deadlines.arm(task, loop.time())
    assert deadlines.disarm(task) is False
    deadlines.sweep(loop.time() + 1)
    await task  # not cancelled
    assert not task.cancelled()
