"""The one Redis client the sidecar shares (rate limits, nonces, the audit stream).

:func:`build_redis` turns the ``redis`` section into a ``redis.asyncio`` client for a
standalone server, a Sentinel-managed master (failover followed: every new connection
asks the Sentinels where the master is, and a connection to a demoted master is dropped)
or a Redis Cluster. Every socket operation is bounded by ``redis.timeout``; redis-py
retries a failed command once, at once (a pooled connection that Redis closed is the
common case), and never sleeps: callers bound the whole call themselves and a circuit
breaker, not a backoff, protects a dead Redis.

:func:`direct_target` describes, for a standalone or Sentinel client, how to open a
connection of one's own to the same server (address, TLS context, credentials, database):
the rate limiter drives such a connection directly (``sidecar.ratelimit.wire``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider, UsernamePasswordCredentialProvider
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


@dataclass(frozen=True, slots=True)
class DirectTarget:
    """Where and how to open a connection of one's own to a client's server.

    The same address, TLS context, credentials and database as the client's own
    connections. For a Sentinel client :meth:`address` asks the Sentinels each time, so a
    connection opened after a failover reaches the new master.
    """

    host: str
    port: int
    path: str | None
    """Unix socket path (``unix://``); then host and port are unused."""
    ssl: ssl.SSLContext | None
    db: int
    credentials: CredentialProvider | None
    keepalive: Mapping[int, int | bytes] | None
    """TCP keepalive options as redis-py sets them (with ``SO_KEEPALIVE``); None: off."""
    sentinel: SentinelConnectionPool | None

    async def address(self) -> tuple[str, int]:
        """The server's host and port; for Sentinel, the master the Sentinels name now.

        Raises:
            redis.exceptions.RedisError: no Sentinel names a master
                (``MasterNotFoundError``).
        """
        if self.sentinel is None:
            return self.host, self.port
        host, port = await self.sentinel.get_master_address()  # type: ignore[no-untyped-call]
        return str(host), int(port)

    async def handshake(self) -> list[tuple[bytes, ...]]:
        """The commands a new connection sends first: ``AUTH`` when there are
        credentials, ``SELECT`` when the database is not 0 (as redis-py does, in RESP2)."""
        commands: list[tuple[bytes, ...]] = []
        if self.credentials is not None:
            creds = await self.credentials.get_credentials_async()
            commands.append((b"AUTH", *(str(c).encode() for c in creds)))
        if self.db:
            commands.append((b"SELECT", b"%d" % self.db))
        return commands


def direct_target(client: Redis) -> DirectTarget:
    """Describe how to reach the server of a standalone or Sentinel ``client``.

    Takes the parameters of a connection the client's pool would make (never connected),
    so URL options such as ``ssl_ca_certs`` or ``ssl_cert_reqs`` apply alike.
    """
    pool = client.connection_pool
    template = pool.make_connection()  # type: ignore[no-untyped-call]
    credentials: CredentialProvider | None = template.credential_provider
    if credentials is None and (template.username or template.password):
        credentials = UsernamePasswordCredentialProvider(template.username, template.password)
    path = template.path if isinstance(template, UnixDomainSocketConnection) else None
    context = template.ssl_context.get() if isinstance(template, SSLConnection) else None
    keepalive: dict[int, int | bytes] | None = (
        dict(getattr(template, "socket_keepalive_options", None) or {})
        if getattr(template, "socket_keepalive", False) else None)
    return DirectTarget(
        host=str(getattr(template, "host", "")), port=int(getattr(template, "port", 0)),
        path=path, ssl=context, db=int(template.db), credentials=credentials,
        keepalive=keepalive,
        sentinel=pool if isinstance(pool, SentinelConnectionPool) else None)


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
