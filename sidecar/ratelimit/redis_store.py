"""The shared bucket store: one Lua script per request, concurrent requests pipelined.

Each check is one ``EVALSHA`` of ``bucket.lua`` over all of the request's buckets (all or
nothing, on Redis server time). Checks that arrive within one event-loop tick are written
as one pipeline and read back in order, so N concurrent requests cost one write, one
round trip and N small replies; the client-side CPU per check is what this saves
(``bench/ratelimit_roundtrips.py``). At most ``max_in_flight`` pipelines are outstanding;
checks arriving meanwhile wait for the next one, so batches grow with load.

Standalone and Sentinel clients are driven on a pooled connection directly (pre-encoded
RESP, no per-command dispatch); a cluster client through its own pipeline, which routes
each script to the node owning the request's hash slot.

A reply of ``NOSCRIPT`` (Redis restarted, failed over, or flushed its scripts) is retried
once with ``EVAL``, which also caches the script again. Every failure is raised as
:class:`StoreError`; callers never see a redis-py exception.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from sidecar.ratelimit.errors import StoreError
from sidecar.ratelimit.policy import Policy
from sidecar.redisconn import RedisClient

Check: TypeAlias = tuple[Sequence[str], Sequence[Policy]]
Result: TypeAlias = tuple[bool, list[float]]

SCRIPT = (files("sidecar.ratelimit") / "bucket.lua").read_bytes()
SCRIPT_SHA = hashlib.sha1(SCRIPT, usedforsecurity=False).hexdigest()
_EVALSHA = b"$7\r\nEVALSHA\r\n$40\r\n" + SCRIPT_SHA.encode() + b"\r\n"
_EVAL = b"$4\r\nEVAL\r\n$%d\r\n%s\r\n" % (len(SCRIPT), SCRIPT)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_check(keys: Sequence[str], policies: Sequence[Policy], full_script: bool = False) -> bytes:
    """RESP encoding of ``EVALSHA sha n key... spec...`` (``EVAL script ...`` on retry)."""
    n = len(keys)
    parts = [b"*%d\r\n" % (3 + 2 * n), _EVAL if full_script else _EVALSHA, _bulk(b"%d" % n)]
    parts.extend(_bulk(key.encode()) for key in keys)
    parts.extend(_bulk(p.script_arg) for p in policies)
    return b"".join(parts)


def parse_reply(reply: Any, size: int) -> Result:
    """Read ``"ok t1 t2 ..."`` from the script.

    Raises:
        StoreError: the reply is not what the script returns.
    """
    if isinstance(reply, str):
        reply = reply.encode()
    if not isinstance(reply, bytes):
        raise StoreError(f"unexpected script reply of type {type(reply).__name__}")
    parts = reply.split()
    if len(parts) != size + 1:
        raise StoreError("script reply has the wrong number of buckets")
    return parts[0] == b"1", [float(x) for x in parts[1:]]


def _store_error(message: str, cause: BaseException) -> StoreError:
    error = StoreError(message)
    error.__cause__ = cause
    return error


class _ConnectionTransport:
    """Standalone / Sentinel: write the batch on one pooled connection, read the replies."""

    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool

    async def run(self, checks: Sequence[Check], full_script: bool) -> list[Any]:
        payload = b"".join(pack_check(keys, pols, full_script) for keys, pols in checks)
        try:
            return await self._send(payload, len(checks))
        except RedisConnectionError:
            # A pooled connection that Redis closed (restart, failover, idle timeout) fails
            # on first use; one fresh connection decides. A script that ran before a crash
            # may run twice: the client is over-charged, never under-charged.
            return await self._send(payload, len(checks))

    async def _send(self, payload: bytes, count: int) -> list[Any]:
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(payload)
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the stream is still in step
                    replies.append(exc)
        except BaseException:
            # Timeout, cancellation or I/O error mid-stream: replies may be unread, so the
            # connection can never be reused.
            await conn.disconnect()
            raise
        finally:
            await self._pool.release(conn)
        return replies


class _ClusterTransport:
    """Cluster: redis-py routes each script to the node owning its keys' slot."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client

    @staticmethod
    def _args(keys: Sequence[str], policies: Sequence[Policy], full_script: bool) -> list[Any]:
        head: list[Any] = ["EVAL", SCRIPT] if full_script else ["EVALSHA", SCRIPT_SHA]
        return [*head, len(keys), *keys, *(p.script_arg for p in policies)]

    async def run(self, checks: Sequence[Check], full_script: bool) -> list[Any]:
        if len(checks) == 1:
            try:
                return [await self._client.execute_command(*self._args(*checks[0], full_script))]
            except ResponseError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for keys, policies in checks:
            pipe.execute_command(*self._args(keys, policies, full_script))
        return list(await pipe.execute(raise_on_error=False))


class RedisStore:
    """Bucket store on Redis; every failure is a :class:`StoreError`.

    ``timeout`` bounds each round trip (a batch, and separately its ``NOSCRIPT`` retry).
    """

    def __init__(self, client: RedisClient, *, timeout: float, batching: bool = True,
                 max_in_flight: int = 4, max_batch: int = 128) -> None:
        self._client = client
        self._transport: _ConnectionTransport | _ClusterTransport = (
            _ClusterTransport(client) if isinstance(client, RedisCluster)
            else _ConnectionTransport(client))
        self._timeout = timeout
        self._batching = batching
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._pending: list[tuple[Sequence[str], Sequence[Policy], asyncio.Future[Result]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        """Batches written so far (checks / round_trips is the batching factor)."""

    async def load_script(self) -> None:
        """Cache the script on the server (every primary of a cluster).

        Raises:
            StoreError: Redis did not answer in time or refused.
        """
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._client.script_load(SCRIPT.decode())
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(f"SCRIPT LOAD failed: {type(exc).__name__}") from exc

    async def take(self, keys: Sequence[str], policies: Sequence[Policy]) -> Result:
        """Take every bucket's cost, or none; return the verdict and tokens held before.

        Raises:
            StoreError: timeout, connection failure or an error reply.
        """
        if not self._batching or (self._in_flight < self._max_in_flight and not self._pending):
            # Idle (or batching off): send at once from this task, no hand-off. Checks that
            # arrive while this one is out queue up and leave together when a slot frees.
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

    async def _send(
        self, batch: list[tuple[Sequence[str], Sequence[Policy], asyncio.Future[Result]]]
    ) -> None:
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

    async def _execute(self, checks: Sequence[Check]) -> list[Result | StoreError]:
        self.round_trips += 1
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._transport.run(checks, full_script=False)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                async with asyncio.timeout(self._timeout):
                    again = await self._transport.run([checks[i] for i in missing], True)
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

    async def close(self) -> None:
        """Cancel outstanding batches; their waiting checks fail with :class:`StoreError`."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, _, future in self._pending:
            if not future.done():
                future.set_exception(StoreError("the store was closed"))
        self._pending.clear()
