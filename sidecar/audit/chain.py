"""The audit hash chain (pure: no I/O, no clock).

Every event of one writer process carries ``chain`` (that process's chain id), ``seq`` (1, 2,
...), ``prev`` (the previous event's ``hash``; 64 zeros for the first) and ``hash``: SHA-256,
or HMAC-SHA256 keyed with ``audit.chain_key``, over the canonical JSON of the event without
``hash`` (keys sorted, separators ``,`` and ``:``, non-ASCII as UTF-8). Editing, deleting,
inserting or reordering a line breaks the chain; with a key, no one without it can re-forge
the chain after an edit.

The canonical bytes come from orjson (keys sorted): the same bytes as Python's
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` for every value
an event holds, about ten times faster, which matters because every request is sealed on
the event loop. The two differ only in the exponent form of floats below 1e-4 or from
1e16 up (``1e16`` against ``1e+16``), which no event field takes; :func:`canonical_stdlib`
is the stdlib form, which ``sidecar audit verify`` also accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from typing import Any, Final

import orjson

GENESIS = "0" * 64
CHAIN_FIELDS = ("chain", "seq", "prev", "hash")


_SORTED: Final = orjson.OPT_SORT_KEYS


def _dumps(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes (a NaN or infinite float becomes ``null``; builders make none).

    Raises:
        TypeError: a value that is not JSON (orjson's error is a TypeError).
    """
    return orjson.dumps(obj, option=_SORTED)


def _without_hash(event: Mapping[str, Any]) -> Mapping[str, Any]:
    return event if "hash" not in event else {k: v for k, v in event.items() if k != "hash"}


def canonical(event: Mapping[str, Any]) -> bytes:
    """Canonical bytes of ``event`` without its ``hash`` field (what the hash covers)."""
    return _dumps(_without_hash(event))


def canonical_stdlib(event: Mapping[str, Any]) -> bytes:
    """:func:`canonical` as Python's json module writes it (differs only in float exponents)."""
    return json.dumps(_without_hash(event), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def digest(data: bytes, key: bytes) -> str:
    """Hex SHA-256 of ``data``, or HMAC-SHA256 under ``key`` when the key is not empty."""
    if key:
        return hmac.digest(key, data, "sha256").hex()
    return hashlib.sha256(data).hexdigest()


def event_hash(event: Mapping[str, Any], key: bytes) -> str:
    return digest(canonical(event), key)


def hash_matches(event: Mapping[str, Any], key: bytes) -> bool:
    """Does ``event["hash"]`` cover the event (in either canonical form), in constant time."""
    claimed = str(event.get("hash", "")).encode()
    if hmac.compare_digest(event_hash(event, key).encode(), claimed):
        return True
    try:
        stdlib = digest(canonical_stdlib(event), key)
    except ValueError:
        return False
    return hmac.compare_digest(stdlib.encode(), claimed)


def checkpoint_mac(chain: str, head_seq: int, head_hash: str, key: bytes) -> str:
    """HMAC-SHA256 of a checkpoint's head (``chain:seq:hash``); a value an operator can also
    copy to an external system as an anchor."""
    return hmac.new(key, f"{chain}:{head_seq}:{head_hash}".encode(), hashlib.sha256).hexdigest()


def new_chain_id() -> str:
    """16 random hex characters and the pid: unique per writer process and start."""
    return f"{secrets.token_hex(8)}-{os.getpid()}"


class Chain:
    """The head of one writer's chain. Not thread-safe: seal from the event loop only."""

    __slots__ = ("_hmac", "_key", "chain_id", "head", "seq")

    def __init__(self, key: bytes, chain_id: str | None = None) -> None:
        self._key = key
        # Keyed once; each event hashes on a copy (saves re-deriving the HMAC pads).
        self._hmac = hmac.new(key, digestmod=hashlib.sha256) if key else None
        self.chain_id = chain_id or new_chain_id()
        self.seq = 0
        self.head = GENESIS

    def seal(self, event: dict[str, Any]) -> bytes:
        """Add ``chain``, ``seq``, ``prev`` and ``hash`` to ``event`` (in place), advance, and
        return the event's JSON line: its canonical form with ``"hash"`` appended last, so
        ``hash`` covers exactly the line's bytes before ``,"hash":``.

        Raises:
            TypeError, ValueError: the event is not JSON (the chain does not advance).
        """
        event.pop("hash", None)
        event["chain"] = self.chain_id
        event["seq"] = self.seq + 1
        event["prev"] = self.head
        body = _dumps(event)  # raises before the head moves
        if self._hmac is not None:
            mac = self._hmac.copy()
            mac.update(body)
            head = mac.hexdigest()
        else:
            head = hashlib.sha256(body).hexdigest()
        event["hash"] = self.head = head
        self.seq += 1
        return b"%s,\"hash\":\"%s\"}\n" % (body[:-1], head.encode())

    def checkpoint_fields(self, reason: str) -> dict[str, Any]:
        """Fields of a ``checkpoint`` event for the current head (call before sealing it)."""
        fields: dict[str, Any] = {"reason": reason, "head_seq": self.seq, "head_hash": self.head}
        if self._key:
            fields["mac"] = checkpoint_mac(self.chain_id, self.seq, self.head, self._key)
        return fields
