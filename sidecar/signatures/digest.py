"""``Content-Digest`` (RFC 9530): generate for signing, verify against received bytes.

The digest is over the content as it travels (after any content coding, before transfer
decoding), so the verifier must be handed the body bytes exactly as received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence

from sidecar.signatures.fields import MalformedField, parse_dictionary

DIGEST_ALGORITHMS: dict[str, Callable[[bytes], bytes]] = {
    "sha-256": lambda data: hashlib.sha256(data).digest(),
    "sha-512": lambda data: hashlib.sha512(data).digest(),
}
"""The active algorithms of the RFC 9530 registry; the deprecated ones are ignored."""


class DigestError(ValueError):
    """The ``Content-Digest`` field is malformed, has no supported algorithm, or mismatches."""


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """The ``Content-Digest`` value for ``body``, e.g. ``sha-256=:...:``."""
    digest = DIGEST_ALGORITHMS[algorithm](body)
    return f"{algorithm}=:{base64.b64encode(digest).decode('ascii')}:"


def verify_content_digest(lines: Sequence[str], body: bytes) -> str:
    """Check every supported digest in the field against ``body``; return the algorithm(s).

    Unsupported algorithms are ignored, but at least one supported one must be present and
    every supported one must match (a wrong second digest is not "ignored").

    Raises:
        DigestError: malformed field, repeated algorithm, no supported algorithm, mismatch.
    """
    try:
        members = parse_dictionary(lines)
    except MalformedField as exc:
        raise DigestError(f"malformed Content-Digest: {exc}") from exc
    checked: list[str] = []
    for algorithm, member in members.items():
        if algorithm not in DIGEST_ALGORITHMS:
            continue
        value = member[0]  # an Item (bytes, params) or an Inner List ([...], params)
        if type(value) is not bytes:
            raise DigestError(f"Content-Digest {algorithm} is not a Byte Sequence")
        # Each supported algorithm runs once over the received bytes (a repeated algorithm
        # is refused by the strict parse).
        expected = DIGEST_ALGORITHMS[algorithm](body)
        # SECURITY: constant-time compare; a length mismatch is simply unequal.
        if not hmac.compare_digest(value, expected):
            raise DigestError(f"Content-Digest {algorithm} does not match the body")
        checked.append(algorithm)
    if not checked:
        raise DigestError("Content-Digest has no supported algorithm (sha-256, sha-512)")
    return ",".join(checked)
