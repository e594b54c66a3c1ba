"""The one Redis client the sidecar shares (rate limits, nonces, the audit stream).

:func:`build_redis` turns the ``redis`` section into a ``redis.asyncio`` client for a
standalone server, a Sentinel-managed master (failover followed: every new connection
asks the Sentinels where the master is, and a connection to a demoted master is dropped)
or a Redis Cluster. Every socket operation is bounded by ``redis.timeout``; redis-py
retries a failed command once, at once (a pooled connection that Redis closed is the
common case), and never sleeps: callers bound the whole call themselves and a circuit
breaker, not a backoff, protects a dead Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sidecar.config.server import RedisConfig, SentinelConfig, split_listen

RedisClient: TypeAlias = "Redis | RedisCluster"


def _socket_options(cfg: RedisConfig) -> dict[str, Any]:
    return {
        "socket_timeout": cfg.timeout,
        "socket_connect_timeout": cfg.timeout,
        "retry": Retry(NoBackoff(), 1),
    }


def build_redis(cfg: RedisConfig) -> RedisClient:
    """A client for ``cfg.mode``; it connects lazily, so building never blocks or fails
    on an unreachable Redis. Close it with :func:`close_redis` at shutdown.

    Raises:
        ValueError: the URL cannot be used for the mode (e.g. ``unix://`` with cluster).
    """
    options = _socket_options(cfg)
    if cfg.mode == "cluster":
        if cfg.url.startswith("unix:"):
            raise ValueError("redis.mode cluster needs a redis:// or rediss:// URL")
        return RedisCluster.from_url(cfg.url, **options)
    if cfg.mode == "sentinel":
        return _sentinel_master(cfg, cfg.sentinel or SentinelConfig(), options)
    return Redis.from_url(cfg.url, **options)


def _sentinel_master(cfg: RedisConfig, scfg: SentinelConfig,
                     options: dict[str, Any]) -> Redis:
    if cfg.url.startswith("unix:"):
        raise ValueError("redis.mode sentinel needs a redis:// or rediss:// URL")
    url = parse_url(cfg.url)  # host and port come from the Sentinels; keep db and auth
    master_options: dict[str, Any] = {
        k: v for k, v in url.items() if k in ("db", "username", "password")}
    if cfg.url.startswith("rediss:"):
        master_options["ssl"] = True
    sentinel_options: dict[str, Any] = {
        "socket_timeout": cfg.timeout, "socket_connect_timeout": cfg.timeout}
    if scfg.password is not None:
        sentinel_options["password"] = scfg.password
    nodes = [split_listen(node) for node in scfg.nodes]
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(scfg.master, **master_options)
    return client


async def ping(client: RedisClient, within: float) -> bool:
    """Readiness probe: True when Redis answers PING within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            return bool(await client.ping())
    except (RedisError, OSError, TimeoutError):
        return False


async def close_redis(client: RedisClient) -> None:
    """Close the client's connections, and a Sentinel client's connections to the Sentinels."""
    manager = getattr(client.connection_pool, "sentinel_manager", None) if isinstance(
        client, Redis) else None
    await client.aclose()
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
