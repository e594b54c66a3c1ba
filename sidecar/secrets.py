"""scrypt hashes for the embedded token endpoint's client secrets.

Format (one line, ``$``-separated, what ``sidecar hash-secret`` prints)::

    scrypt$N$r$p$<salt, base64>$<hash, base64>

``N`` (CPU/memory cost, a power of two), ``r`` (block size) and ``p`` (parallelism) are the
RFC 7914 parameters; the defaults ``N=2**14, r=8, p=1`` cost about 16 MiB and a few tens of
milliseconds per verification, which is why the token endpoint verifies in a thread pool
behind a semaphore. Base64 is the standard alphabet; padding is optional when parsing.
The salt is 16 random bytes, the derived hash 32 bytes.

Verification compares in constant time (``hmac.compare_digest``). These functions are
CPU-heavy and blocking: never call :func:`verify_secret` or :func:`hash_secret` on the event
loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Bounds that keep a hostile or mistyped config from pinning a CPU or exhausting memory.
MIN_N, MAX_N = 2**10, 2**20
MAX_R, MAX_P = 32, 16
MIN_SALT_BYTES, MIN_HASH_BYTES, MAX_HASH_BYTES = 8, 16, 64

_B64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


@dataclass(frozen=True, slots=True)
class ScryptHash:
    """A parsed ``scrypt$N$r$p$salt$hash`` value."""

    n: int
    r: int
    p: int
    salt: bytes
    hash: bytes

    def __repr__(self) -> str:  # never print the hash, even in a traceback
        return f"ScryptHash(n={self.n}, r={self.r}, p={self.p})"

    def encode(self) -> str:
        return "$".join(("scrypt", str(self.n), str(self.r), str(self.p),
                         _b64(self.salt), _b64(self.hash)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    if not _B64_RE.match(text):
        raise ValueError(f"{what} is not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{what} is not base64") from exc


def _maxmem(n: int, r: int, p: int) -> int:
    # scrypt needs 128*N*r bytes for V plus 128*r*p for B; leave slack for OpenSSL's own use.
    return 128 * n * r + 128 * r * p + 4 * 1024 * 1024


def _check_params(n: int, r: int, p: int) -> None:
    if n < MIN_N or n > MAX_N or n & (n - 1):
        raise ValueError(f"N must be a power of two between 2**10 and 2**20, got {n}")
    if not 1 <= r <= MAX_R:
        raise ValueError(f"r must be between 1 and {MAX_R}, got {r}")
    if not 1 <= p <= MAX_P:
        raise ValueError(f"p must be between 1 and {MAX_P}, got {p}")


def parse_secret_hash(text: str) -> ScryptHash:
    """Parse a ``scrypt$N$r$p$salt$hash`` string.

    Raises:
        ValueError: the format or a parameter is wrong (the message names which, never the
            hash itself).
    """
    parts = text.strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("must be scrypt$N$r$p$<salt b64>$<hash b64> (see `sidecar hash-secret`)")
    if not all(part.isdigit() for part in parts[1:4]):
        raise ValueError("N, r and p must be decimal integers")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    _check_params(n, r, p)
    salt = _unb64(parts[4], "salt")
    digest = _unb64(parts[5], "hash")
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"salt must be at least {MIN_SALT_BYTES} bytes")
    if not MIN_HASH_BYTES <= len(digest) <= MAX_HASH_BYTES:
        raise ValueError(f"hash must be {MIN_HASH_BYTES} to {MAX_HASH_BYTES} bytes")
    return ScryptHash(n, r, p, salt, digest)


def _derive(secret: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p),
                          dklen=length)


def hash_secret(secret: str | bytes, *, n: int = DEFAULT_N, r: int = DEFAULT_R,
                p: int = DEFAULT_P, salt: bytes | None = None) -> str:
    """Hash a client secret into the ``scrypt$...`` format (blocking, CPU-heavy).

    Raises:
        ValueError: a parameter is out of bounds or the secret is empty.
    """
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not raw:
        raise ValueError("the secret is empty")
    _check_params(n, r, p)
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _derive(raw, n, r, p, salt, HASH_BYTES)
    return ScryptHash(n, r, p, salt, digest).encode()


def verify_secret(secret: str | bytes, stored: ScryptHash | str) -> bool:
    """True when ``secret`` matches ``stored`` (blocking, CPU-heavy, constant-time compare).

    A malformed ``stored`` string is a config error and raises ``ValueError``; config
    validation rejects those at load time.
    """
    parsed = parse_secret_hash(stored) if isinstance(stored, str) else stored
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    candidate = _derive(raw, parsed.n, parsed.r, parsed.p, parsed.salt, len(parsed.hash))
    return hmac.compare_digest(candidate, parsed.hash)


DUMMY_HASH = ScryptHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, b"\x00" * SALT_BYTES, b"\x00" * HASH_BYTES)
"""Verified against when the client id is unknown, so the answer takes as long either way."""
