"""Replay stores: a nonce is claimed once; a second claim within its TTL fails.

The stage claims a nonce only after the signature carrying it verified, so a forged request
cannot burn a legitimate client's nonce. Keys are hashes of (keyid, nonce): nonces are
scoped to the key that signed them and never reach Redis verbatim.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio
import redis.exceptions


class NonceStoreError(Exception):
    """The store could not answer (Redis down, or the memory store is full)."""


class NonceStore(Protocol):
    """Remember claimed nonces for ``ttl`` seconds."""

    async def claim(self, key: str, ttl: float) -> bool:
        """True when ``key`` was not claimed within its TTL (and is now); False on replay.

        Raises:
            NonceStoreError: the store cannot answer; the caller must fail closed.
        """
        ...


def nonce_key(keyid: str, nonce: str) -> str:
    """The store key of a nonce: SHA-256 of keyid and nonce (bounded, opaque)."""
    return hashlib.sha256(f"{keyid}\n{nonce}".encode()).hexdigest()


class MemoryNonceStore:
    """One process's store: TTL-bounded, at most ``max_entries`` live nonces.

    When full of unexpired nonces it refuses new claims (``NonceStoreError``) rather than
    forget a live one, which would reopen a replay window.
    """

    def __init__(self, max_entries: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def _evict(self, now: float) -> None:
        # Entries are appended in claim order; with one TTL per store that is expiry order,
        # but a shorter TTL can sit behind a longer one, so sweep a bounded prefix.
        entries = self._expiry
        for _ in range(1024):
            if not entries:
                return
            key, expiry = next(iter(entries.items()))
            if expiry > now:
                return
            del entries[key]

    async def claim(self, key: str, ttl: float) -> bool:
        now = self._clock()
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return False
        self._evict(now)
        if key not in self._expiry and len(self._expiry) >= self._max:
            raise NonceStoreError("memory nonce store is full")
        self._expiry.pop(key, None)
        self._expiry[key] = now + ttl
        return True


class RedisNonceStore:
    """Shared store: one ``SET key 1 NX PX ttl`` per claim, atomic across replicas."""

    def __init__(self, client: redis.asyncio.Redis, key_prefix: str = "sidecar:",
                 timeout: float | None = 1.0) -> None:
        self._client = client
        self._prefix = f"{key_prefix}sig-nonce:"
        self._timeout = timeout

    async def claim(self, key: str, ttl: float) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                created = await self._client.set(
                    self._prefix + key, b"1", nx=True, px=max(1, int(ttl * 1000)))
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise NonceStoreError(f"redis nonce claim failed: {type(exc).__name__}") from exc
        return created is True
