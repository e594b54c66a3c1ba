"""The shared bucket store: one Lua script per request, concurrent requests pipelined.

Each check is one ``EVALSHA`` of ``bucket.lua`` over all of the request's buckets (all or
nothing, on Redis server time). Concurrent checks share writes and round trips; the
client-side CPU per check is what this saves (``bench/ratelimit_roundtrips.py``).

* Standalone and Sentinel: one connection of the store's own, driven directly
  (:mod:`sidecar.ratelimit.wire`: pre-encoded commands, replies parsed by hiredis, checks
  written together while earlier writes await their replies).
* Cluster: redis-py's cluster pipeline (:mod:`sidecar.ratelimit.cluster`), which routes
  each script to the node owning the request's hash slot.

A reply of ``NOSCRIPT`` (Redis restarted, failed over, or flushed its scripts) is retried
once with ``EVAL``, which also caches the script again. Every failure is raised as
:class:`StoreError`; callers never see a redis-py or socket exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from sidecar.ratelimit.cluster import ClusterStore
from sidecar.ratelimit.errors import StoreError
from sidecar.ratelimit.policy import Policy
from sidecar.ratelimit.script import SCRIPT, SCRIPT_SHA, Result, pack_check, parse_reply
from sidecar.ratelimit.wire import ConnectionLost, PipelinedConnection
from sidecar.redisconn import RedisClient, direct_target

__all__ = ["SCRIPT", "SCRIPT_SHA", "RedisStore", "Result", "pack_check", "parse_reply"]

_FAILURES = (OSError, TimeoutError, RedisError)


async def _reply(future: Awaitable[Any]) -> Any:
    try:
        return await future
    except _FAILURES as exc:
        raise StoreError(f"redis: {type(exc).__name__}") from exc


class RedisStore:
    """Bucket store on Redis; every failure is a :class:`StoreError`.

    Args:
        client: the shared client (``sidecar.redisconn.build_redis``). A standalone or
            Sentinel client lends its address, TLS and credentials to the store's own
            connection; a cluster client is used as it is.
        timeout: bounds each attempt: connecting, then each check's reply (and separately
            its ``NOSCRIPT`` or lost-connection retry).
        batching: write concurrent checks together (False: each check its own write).
        max_in_flight: writes awaiting replies before further checks queue.
    """

    def __init__(self, client: RedisClient, *, timeout: float, batching: bool = True,
                 max_in_flight: int = 4) -> None:
        self._client = client
        self._timeout = timeout
        self._cluster: ClusterStore | None = None
        self._wire: PipelinedConnection | None = None
        if isinstance(client, RedisCluster):
            self._cluster = ClusterStore(client, timeout=timeout, batching=batching,
                                         max_in_flight=max_in_flight)
        else:
            self._wire = PipelinedConnection(direct_target(client), timeout=timeout,
                                             max_in_flight=max_in_flight if batching else None)

    @property
    def round_trips(self) -> int:
        """Writes (pipelines) so far: checks / round_trips is the batching factor."""
        if self._wire is not None:
            return self._wire.writes
        assert self._cluster is not None
        return self._cluster.round_trips

    async def load_script(self) -> None:
        """Cache the script on the server (every primary of a cluster).

        Raises:
            StoreError: Redis did not answer in time or refused.
        """
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._client.script_load(SCRIPT.decode())
        except _FAILURES as exc:
            raise StoreError(f"SCRIPT LOAD failed: {type(exc).__name__}") from exc

    async def take(self, keys: Sequence[str], policies: Sequence[Policy],
                   command: bytes | None = None) -> Result:
        """Take every bucket's cost, or none; return the verdict and tokens held before.

        ``command`` is ``pack_check(keys, policies)``, when the caller has it already.

        Raises:
            StoreError: timeout, connection failure or an error reply.
        """
        wire = self._wire
        if wire is None:
            assert self._cluster is not None
            return await self._cluster.take(keys, policies)
        if command is None:
            command = pack_check(keys, policies)
        try:
            reply = await wire.submit(command)
        except ConnectionLost:
            # The connection ended under the check (Redis restarted or failed over, a
            # demoted master): one fresh connection decides. A script that ran before the
            # crash then runs twice: the client is over-charged, never under-charged.
            reply = await _reply(wire.submit(command))
        except _FAILURES as exc:
            raise StoreError(f"redis: {type(exc).__name__}") from exc
        if type(reply) is bytes:
            return parse_reply(reply, len(keys))
        if isinstance(reply, hiredis.ReplyError) and reply.args[0].startswith("NOSCRIPT"):
            reply = await _reply(wire.submit(pack_check(keys, policies, full_script=True)))
        if isinstance(reply, hiredis.ReplyError):
            error = StoreError(f"redis replied {str(reply).split(' ', 1)[0]}")
            error.__cause__ = reply
            raise error
        return parse_reply(reply, len(keys))

    async def close(self) -> None:
        """Close the store's connection; checks still waiting fail with StoreError."""
        if self._wire is not None:
            await self._wire.close()
        if self._cluster is not None:
            await self._cluster.close()
