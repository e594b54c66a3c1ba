"""The store's own Redis connection (``sidecar.ratelimit.wire``) against real redis-servers:
ACL users, databases, TLS, unix sockets, replaced connections, demoted masters, timeouts,
cancellation and batching."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sidecar.config.ratelimit import PolicyConfig
from sidecar.config.server import RedisConfig
from sidecar.ratelimit.errors import StoreError
from sidecar.ratelimit.policy import Policy, bucket_key, client_tag, compile_policy
from sidecar.ratelimit.redis_store import RedisStore
from sidecar.ratelimit.wire import (
    ConnectionLost,
    HandshakeError,
    PipelinedConnection,
    encode_command,
)
from sidecar.redisconn import build_redis, close_redis, direct_target
from tests.fixtures.redis import BlackHole, RedisServer, redis_binary
from tests.fixtures.tls import TLSMaterial
from tests.support import free_port


def policy(capacity: int, name: str = "p") -> Policy:
    return compile_policy(PolicyConfig.model_validate(
        {"name": name, "key": "client_id", "capacity": capacity, "refill": "1/m"}))


def whole(result: tuple[bool, list[float]]) -> tuple[bool, list[int]]:
    """The verdict and whole tokens held (refill adds fractions between calls)."""
    return result[0], [int(t) for t in result[1]]


def key(client: str, pol: Policy) -> str:
    return bucket_key("t:", client_tag(client), pol, None)


@contextlib.asynccontextmanager
async def store_for(url: str, timeout: str = "500ms", **options: Any) -> AsyncIterator[RedisStore]:
    client = build_redis(RedisConfig(url=url, timeout=timeout))
    store = RedisStore(client, timeout=RedisConfig(timeout=timeout).timeout, **options)
    try:
        yield store
    finally:
        await store.close()
        await close_redis(client)


@contextlib.asynccontextmanager
async def connection_for(url: str, timeout: float = 0.5) -> AsyncIterator[PipelinedConnection]:
    client = build_redis(RedisConfig(url=url))
    conn = PipelinedConnection(direct_target(client), timeout=timeout)  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        await conn.close()
        await close_redis(client)


def wire_of(store: RedisStore) -> PipelinedConnection:
    wire = store._wire
    assert wire is not None
    return wire


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Any]:
    """Start redis-servers with extra arguments; all stopped at the end."""
    started: list[RedisServer] = []

    def start(*extra: str, port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", port, *extra)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


ACL = ("--user", "default", "on", "nopass", "resetchannels", "-@all", "+ping",
       "--user", "limiter", "on", ">s3cret", "~*", "&*", "+@all")
"""Anyone may PING (the fixture's readiness probe); only ``limiter`` may do anything else."""




async def test_an_acl_user_and_a_database_are_used(server_with: Any) -> None:
    server = server_with(*ACL)
    p = policy(5)
    async with store_for(f"redis://limiter:s3cret@127.0.0.1:{server.port}/3") as store:
        assert whole(await store.take([key("a", p)], [p])) == (True, [5])
        assert whole(await store.take([key("a", p)], [p])) == (True, [4])
    raw = Redis(port=server.port, username="limiter", password="s3cret", db=3)
    try:
        assert await raw.exists(key("a", p)) == 1
    finally:
        await raw.aclose()


async def test_a_refused_password_is_a_store_error_that_names_no_secret(server_with: Any) -> None:
    server = server_with(*ACL)
    p = policy(5)
    async with store_for(f"redis://limiter:wrong-one@127.0.0.1:{server.port}/0") as store:
        with pytest.raises(StoreError) as info:
            await store.take([key("a", p)], [p])
    cause = info.value.__cause__
    assert isinstance(cause, HandshakeError)
    assert "wrong-one" not in str(cause) and "AUTH refused" in str(cause)


def _supports_tls() -> bool:
    done = subprocess.run([redis_binary(), "--port", "0", "--tls-port", "0"],  # exits at once
                          capture_output=True, text=True, timeout=10, check=False)
    return "Bad directive" not in (done.stdout + done.stderr)


async def test_tls_with_the_url_ca_and_verification_on(server_with: Any,
                                                       tls_material: TLSMaterial) -> None:
    if not _supports_tls():
        pytest.skip("this redis-server is built without TLS")
    tls_port = free_port()
    server_with("--tls-port", str(tls_port), "--tls-cert-file", str(tls_material.server_cert),
                "--tls-key-file", str(tls_material.server_key),
                "--tls-ca-cert-file", str(tls_material.ca_file), "--tls-auth-clients", "no")
    p = policy(5)
    url = f"rediss://localhost:{tls_port}/0"
    async with store_for(f"{url}?ssl_ca_certs={tls_material.ca_file}") as store:
        assert whole(await store.take([key("tls", p)], [p])) == (True, [5])
    async with store_for(url) as store:  # the system CAs do not trust this server
        with pytest.raises(StoreError) as info:
            await store.take([key("tls", p)], [p])
    assert "SSL" in type(info.value.__cause__).__name__


async def test_a_unix_socket_url(server_with: Any) -> None:
    directory = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # short: socket paths are limited
    try:
        path = f"{directory}/redis.sock"
        server_with("--unixsocket", path, "--unixsocketperm", "700")
        p = policy(5)
        async with store_for(f"unix://{path}?db=2") as store:
            assert whole(await store.take([key("u", p)], [p])) == (True, [5])
            assert whole(await store.take([key("u", p)], [p])) == (True, [4])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_connection_redis_closed_is_replaced_without_a_failure(redis_url: str) -> None:
    p = policy(5)
    raw = Redis.from_url(redis_url)
    try:
        async with store_for(redis_url) as store:
            await store.take([key("k", p)], [p])
            assert await raw.client_kill_filter(_type="normal", skipme=True) >= 1
            await asyncio.sleep(0.05)
            assert whole(await store.take([key("k", p)], [p])) == (True, [4])
            assert wire_of(store).connects == 2
    finally:
        await raw.aclose()


async def test_a_demoted_master_drops_the_connection_and_a_promotion_is_followed(
    server_with: Any,
) -> None:
    master = server_with()
    replica = server_with("--replicaof", "127.0.0.1", str(master.port))
    async with connection_for(replica.url) as conn:
        with pytest.raises(ConnectionLost, match="READONLY"):
            await conn.submit(encode_command([b"SET", b"k", b"v"]))
        assert conn.connects == 1
        raw = Redis(port=replica.port)
        try:
            await raw.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            await raw.aclose()
        assert await conn.submit(encode_command([b"SET", b"k", b"v"])) == b"OK"
        assert conn.connects == 2, "a new connection after READONLY"


async def test_a_store_on_a_replica_fails_every_check(server_with: Any) -> None:
    master = server_with()
    replica = server_with("--replicaof", "127.0.0.1", str(master.port))
    p = policy(5)
    async with store_for(replica.url) as store:
        for _ in range(3):
            with pytest.raises(StoreError):
                await store.take([key("r", p)], [p])


async def test_checks_on_a_silent_server_all_fail_within_the_timeout(
    black_hole: BlackHole,
) -> None:
    port = black_hole.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    p = policy(5)
    async with store_for(f"redis://127.0.0.1:{port}/0", timeout="100ms") as store:
        started = time.monotonic()
        results = await asyncio.gather(
            *(store.take([key(f"c{i}", p)], [p]) for i in range(20)), return_exceptions=True)
        assert time.monotonic() - started < 1.0
        assert all(isinstance(r, StoreError) for r in results)
        assert isinstance(results[0].__cause__, TimeoutError)  # type: ignore[union-attr]
        assert black_hole.connections == 1, "every check waited on the one connection"


async def test_a_late_reply_drops_the_connection_and_the_next_check_reconnects(
    server_with: Any,
) -> None:
    server = server_with()
    assert server.proc is not None
    p = policy(5)
    async with store_for(server.url, timeout="100ms") as store:
        await store.take([key("late", p)], [p])
        server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(StoreError) as info:
                await store.take([key("late", p)], [p])
            assert isinstance(info.value.__cause__, TimeoutError)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        allowed, held = whole(await store.take([key("late", p)], [p]))
        assert allowed and held in ([4], [3]), "the late check may have run after all"
        assert wire_of(store).connects == 2


async def test_a_handshake_nobody_answers_times_out(black_hole: BlackHole) -> None:
    port = black_hole.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    p = policy(5)
    async with store_for(f"redis://:pw@127.0.0.1:{port}/0", timeout="100ms") as store:
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.take([key("h", p)], [p])
        assert time.monotonic() - started < 1.0
        assert isinstance(info.value.__cause__, TimeoutError)


async def test_closing_the_store_fails_waiting_checks(black_hole: BlackHole) -> None:
    port = black_hole.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    p = policy(5)
    async with store_for(f"redis://127.0.0.1:{port}/0", timeout="10s") as store:
        waiting = asyncio.ensure_future(store.take([key("w", p)], [p]))
        await asyncio.sleep(0.1)
        await store.close()
        with pytest.raises(StoreError):
            await asyncio.wait_for(waiting, 1.0)


async def test_a_cancelled_check_keeps_the_replies_in_step(redis_url: str) -> None:
    big, small = policy(7, "big"), policy(3, "small")
    async with store_for(redis_url) as store:
        await store.take([key("warm", small)], [small])
        cancelled = asyncio.ensure_future(store.take([key("x", big)], [big]))
        await asyncio.sleep(0)  # written, reply not read yet
        cancelled.cancel()
        assert whole(await store.take([key("y", small)], [small])) == (True, [3])
        assert whole(await store.take([key("x", big)], [big])) in ((True, [7]), (True, [6]))


async def test_concurrent_checks_share_writes_and_stay_one_command_each(redis_url: str) -> None:
    p = policy(100)
    raw = Redis.from_url(redis_url)
    try:
        async with store_for(redis_url) as store, store_for(redis_url, batching=False) as single:
            for s in (store, single):
                await s.take([key("warm", p)], [p])
            await raw.config_resetstat()
            before = wire_of(store).writes
            results = await asyncio.gather(
                *(store.take([key(f"b{i % 4}", p)], [p]) for i in range(32)))
            assert wire_of(store).writes - before <= 8
            assert sorted(int(t[0]) for _, t in results) == sorted(
                100 - n for _ in range(4) for n in range(8))
            before = wire_of(single).writes
            await asyncio.gather(*(single.take([key(f"s{i}", p)], [p]) for i in range(32)))
            assert wire_of(single).writes - before == 32
            stats = await raw.info("commandstats")
            assert stats["cmdstat_evalsha"]["calls"] == 64
    finally:
        await raw.aclose()


async def test_a_restart_with_checks_waiting_is_one_failure_then_recovery(
    redis_server: RedisServer, redis_url: str,
) -> None:
    p = policy(5)
    async with store_for(redis_url) as store:
        await store.take([key("k", p)], [p])
        redis_server.stop()
        with pytest.raises(StoreError):
            await store.take([key("k", p)], [p])
        redis_server.start()
        assert whole(await store.take([key("k", p)], [p])) == (True, [5]), "a fresh server"
        assert wire_of(store).connects == 2
