"""Nonce store contract, run against the memory store and a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from sidecar.signatures.nonces import (
    MemoryNonceStore,
    NonceStore,
    NonceStoreError,
    RedisNonceStore,
    nonce_key,
)


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[NonceStore]:
    if request.param == "memory":
        yield MemoryNonceStore()
        return
    client = redis.asyncio.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisNonceStore(client, "test:")
    finally:
        await client.aclose()


async def test_first_claim_wins_second_is_a_replay(store: NonceStore) -> None:
    assert await store.claim("k1", 5) is True
    assert await store.claim("k1", 5) is False
    assert await store.claim("k2", 5) is True


async def test_concurrent_claims_of_one_nonce_have_exactly_one_winner(store: NonceStore) -> None:
    results = await asyncio.gather(*(store.claim("race", 5) for _ in range(20)))
    assert results.count(True) == 1


async def test_a_claim_expires_after_its_ttl(store: NonceStore) -> None:
    assert await store.claim("short", 0.05)
    await asyncio.sleep(0.2)
    assert await store.claim("short", 0.05)


def test_nonce_keys_are_scoped_to_the_key_and_opaque() -> None:
    assert nonce_key("a", "n") != nonce_key("b", "n")
    assert len(nonce_key("k", "x" * 1000)) == 64


async def test_redis_key_layout_and_ttl(redis_url: str) -> None:
    client = redis.asyncio.from_url(redis_url)
    try:
        await RedisNonceStore(client, "pfx:").claim(nonce_key("kid", "n1"), 330)
        [key] = await client.keys("*")
        assert key == f"pfx:sig-nonce:{nonce_key('kid', 'n1')}".encode()
        assert 329_000 < await client.pttl(key) <= 330_000
    finally:
        await client.aclose()


async def test_redis_errors_become_nonce_store_errors(redis_server: Any, redis_url: str) -> None:
    client = redis.asyncio.from_url(redis_url, socket_timeout=0.5)
    store = RedisNonceStore(client, "test:", timeout=1.0)
    redis_server.stop()
    try:
        with pytest.raises(NonceStoreError, match="redis nonce claim failed"):
            await store.claim("k", 5)
    finally:
        await client.aclose()
        redis_server.start()


async def test_memory_store_is_bounded_and_fails_closed_when_full() -> None:
    ticker = Ticker()
    store = MemoryNonceStore(max_entries=3, clock=ticker)
    for key in ("a", "b", "c"):
        assert await store.claim(key, 10)
    with pytest.raises(NonceStoreError, match="full"):
        await store.claim("d", 10)
    assert await store.claim("a", 10) is False  # a live nonce is never forgotten
    ticker.now = 10.5
    assert await store.claim("d", 10)  # expired entries make room
    assert len(store) == 1


async def test_memory_store_sweeps_a_bounded_prefix_of_expired_nonces() -> None:
    """A claim evicts expired nonces from the oldest end, at most 1024 at a time, and stops
    at the first live one (a shorter TTL behind it waits for the next sweep)."""
    ticker = Ticker()
    store = MemoryNonceStore(clock=ticker)
    for i in range(1500):
        assert await store.claim(f"old-{i}", 1)
    assert await store.claim("long", 100)
    assert await store.claim("short", 1)
    ticker.now = 2.0
    assert await store.claim("new-1", 1)
    assert len(store) == 1500 + 3 - 1024
    assert await store.claim("new-2", 1)
    assert len(store) == 4  # long, short (behind it), new-1, new-2
    assert await store.claim("short", 1)  # expired, though not yet swept: claimable again
    assert await store.claim("long", 1) is False
