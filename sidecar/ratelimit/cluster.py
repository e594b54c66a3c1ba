"""The bucket store's Redis Cluster path: redis-py's cluster pipeline, batched.

Each request's keys share one hash tag, so each script runs on the one node owning that
slot; redis-py routes it there and follows ``MOVED``/``ASK``. Checks that arrive while
``max_in_flight`` pipelines are outstanding queue and leave together as one pipeline (one
round trip per node) when a slot frees; a check arriving while the store is idle is sent
at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError

from sidecar.ratelimit.errors import StoreError
from sidecar.ratelimit.policy import Policy
from sidecar.ratelimit.script import SCRIPT, SCRIPT_SHA, Result, parse_reply

Check = tuple[Sequence[str], Sequence[Policy]]
_Pending = tuple[Sequence[str], Sequence[Policy], "asyncio.Future[Result]"]


def _store_error(message: str, cause: BaseException) -> StoreError:
    error = StoreError(message)
    error.__cause__ = cause
    return error


class ClusterStore:
    """Bucket checks on a Redis Cluster; every failure is a :class:`StoreError`.

    ``timeout`` bounds each pipeline (and separately its ``NOSCRIPT`` retry).
    """

    def __init__(self, client: RedisCluster, *, timeout: float, batching: bool = True,
                 max_in_flight: int = 4, max_batch: int = 128) -> None:
        self._client = client
        self._timeout = timeout
        self._batching = batching
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        """Pipelines sent so far (checks / round_trips is the batching factor)."""

    async def take(self, keys: Sequence[str], policies: Sequence[Policy]) -> Result:
        """Take every bucket's cost, or none; return the verdict and tokens held before.

        Raises:
            StoreError: timeout, connection failure or an error reply.
        """
        if not self._batching or (self._in_flight < self._max_in_flight and not self._pending):
            self._in_flight += 1
            try:
                result = (await self._execute([(keys, policies)]))[0]
            finally:
                self._in_flight -= 1
                self._schedule_flush()
            if isinstance(result, StoreError):
                raise result
            return result
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, policies, future))
        self._schedule_flush()
        return await future

    async def close(self) -> None:
        """Cancel outstanding pipelines; their waiting checks fail with :class:`StoreError`."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, _, future in self._pending:
            if not future.done():
                future.set_exception(StoreError("the store was closed"))
        self._pending.clear()

    def _schedule_flush(self) -> None:
        if self._pending and not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = loop.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        results: Sequence[Result | StoreError] | None = None
        try:
            results = await self._execute([(keys, pols) for keys, pols, _ in batch])
        finally:
            self._in_flight -= 1
            self._schedule_flush()
            if results is None:  # cancelled by close(), or a bug: never leave a request hanging
                results = [StoreError("the store was closed") for _ in batch]
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the waiting request went away
                if isinstance(result, StoreError):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    @staticmethod
    def _args(keys: Sequence[str], policies: Sequence[Policy], full_script: bool) -> list[Any]:
        head: list[Any] = ["EVAL", SCRIPT] if full_script else ["EVALSHA", SCRIPT_SHA]
        return [*head, len(keys), *keys, *(p.script_arg for p in policies)]

    async def _run(self, checks: Sequence[Check], full_script: bool) -> list[Any]:
        if len(checks) == 1:
            try:
                return [await self._client.execute_command(*self._args(*checks[0], full_script))]
            except ResponseError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for keys, policies in checks:
            pipe.execute_command(*self._args(keys, policies, full_script))
        return list(await pipe.execute(raise_on_error=False))

    async def _execute(self, checks: Sequence[Check]) -> list[Result | StoreError]:
        self.round_trips += 1
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._run(checks, full_script=False)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                async with asyncio.timeout(self._timeout):
                    again = await self._run([checks[i] for i in missing], True)
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except (RedisError, OSError, TimeoutError) as exc:
            return [_store_error(f"redis: {type(exc).__name__}", exc) for _ in checks]
        results: list[Result | StoreError] = []
        for (keys, _), reply in zip(checks, replies, strict=True):
            if isinstance(reply, BaseException):
                results.append(_store_error(f"redis replied {type(reply).__name__}", reply))
                continue
            try:
                results.append(parse_reply(reply, len(keys)))
            except StoreError as exc:
                results.append(exc)
        return results
