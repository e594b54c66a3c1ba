"""The verified-token cache: SHA-256(token) -> identity, bounded LRU, never past ``exp``.

A hit skips parsing and signature work but not the per-request checks (expiry against the
injected clock, certificate binding). Entries remember the issuer and ``kid`` that verified
them so a key that leaves its JWKS takes its cached tokens with it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from sidecar.context import Identity

DEFAULT_CACHE_SIZE = 10_000


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class CachedToken:
    identity: Identity | None
    """None: an introspection endpoint said the token is inactive (negative entry)."""
    expires_at: float
    issuer_name: str
    kid: str | None = None


class TokenCache:
    """Bounded LRU; not thread-safe (one event loop owns it)."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()

    def get(self, digest: bytes, now: float) -> CachedToken | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now >= entry.expires_at:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, entry: CachedToken, now: float) -> None:
        if entry.expires_at <= now or self._max <= 0:
            return
        self._entries[digest] = entry
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def evict_keys(self, issuer_name: str, kept_kids: frozenset[str]) -> int:
        """Drop entries of ``issuer_name`` verified by a kid no longer published."""
        stale = [d for d, e in self._entries.items()
                 if e.issuer_name == issuer_name and e.kid is not None and e.kid not in kept_kids]
        for digest in stale:
            del self._entries[digest]
        return len(stale)

    def __len__(self) -> int:
        return len(self._entries)
