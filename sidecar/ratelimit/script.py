"""``bucket.lua``: its text and digest, the command that runs it, and its reply, pure.

The command is ``EVALSHA sha n key... spec...`` (``EVAL script ...`` after ``NOSCRIPT``),
pre-encoded as RESP bytes once per request shape; the reply is ``"ok t1 t2 ..."``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, TypeAlias

from sidecar.ratelimit.errors import StoreError
from sidecar.ratelimit.policy import Policy

Result: TypeAlias = tuple[bool, list[float]]
"""The verdict (taken from every bucket, or from none) and the tokens each held before."""

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
    try:
        tokens = [float(x) for x in parts[1:]]
    except ValueError:
        raise StoreError("script reply is not numeric") from None
    return parts[0] == b"1", tokens
