"""Pure parsing: the bearer token out of ``Authorization``, and the unverified JWS parts.

Nothing here trusts what it parses: the header and claims returned by :func:`split_jws` are
used only to choose an issuer and a key; the claims that reach an :class:`Identity` are the
same bytes, read again only after the signature over them verified.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.authn.errors import DuplicateAuthorization, TokenInvalid, TokenMissing

MAX_TOKEN_BYTES = 8 * 1024
"""Longer tokens are refused before any parsing (``token_invalid``)."""

# RFC 6750 §2.1 b64token; a folded "Bearer a, Bearer b" fails it (no ',' or ' ').
_B64TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def bearer_token(authorization: Sequence[str]) -> str:
    """The token of the single ``Authorization: Bearer`` header (scheme case-insensitive).

    Raises:
        DuplicateAuthorization: more than one ``Authorization`` header (400).
        TokenMissing: no header, another scheme, or an empty token (401).
        TokenInvalid: the token is over 8 KiB or not RFC 6750 ``b64token`` syntax (401).
    """
    if len(authorization) > 1:
        raise DuplicateAuthorization(f"{len(authorization)} Authorization headers")
    if not authorization:
        raise TokenMissing("no Authorization header")
    value = authorization[0]
    # SECURITY: size first, so an oversized header costs nothing more (RFC 6750 §3.1).
    if len(value) > MAX_TOKEN_BYTES + 7:
        raise TokenInvalid("token over 8 KiB")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenMissing("Authorization scheme is not Bearer")
    token = token.strip(" ")
    if not token:
        raise TokenMissing("empty bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenInvalid("token over 8 KiB")
    if not _B64TOKEN_RE.match(token):
        raise TokenInvalid("token is not b64token syntax")
    return token


def looks_like_jws(token: str) -> bool:
    """A compact JWS has exactly two dots; anything else goes to introspection (if any)."""
    return token.count(".") == 2


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url_decode(segment: str) -> bytes:
    """Strict unpadded base64url: canonical encodings only (no malleable trailing bits).

    Raises:
        ValueError: not canonical base64url.
    """
    rest = len(segment) % 4
    if rest == 1 or not _B64URL_RE.match(segment):
        raise ValueError("not base64url")
    # SECURITY: the unused low bits of the last character must be zero, otherwise several
    # strings decode to the same bytes (signature malleability, RFC 7515 §2 base64url).
    if rest and _B64URL_ALPHABET.index(segment[-1]) & (0x0F if rest == 2 else 0x03):
        raise ValueError("non-canonical base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise TokenInvalid(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise TokenInvalid(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class UnverifiedJWS:
    """The parts of a compact JWS, decoded but not verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def split_jws(token: str) -> UnverifiedJWS:
    """Decode a compact JWS without verifying it.

    Raises:
        TokenInvalid: wrong shape, bad base64url, or header/payload not a JSON object.
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenInvalid("not a compact JWS")
    try:
        header_raw = b64url_decode(parts[0])
        payload_raw = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise TokenInvalid("bad base64url in token") from exc
    header = _json_object(header_raw, "JWS header")
    claims = _json_object(payload_raw, "JWT payload")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return UnverifiedJWS(header, claims, signing_input, signature)
