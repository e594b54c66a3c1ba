"""The one outbound-HTTP adapter of the authn package: bounded, timed, no redirects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

MAX_RESPONSE_BYTES = 1024 * 1024
"""JWKS, discovery and introspection responses larger than this are refused."""


class FetchError(Exception):
    """A fetch failed; the message is short and safe to log and to put in an event."""


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response body, refusing more than ``limit`` bytes (after decompression).

    Raises:
        FetchError: the body is larger than ``limit``.
    """
    if response.content_length is not None and response.content_length > limit:
        raise FetchError(f"response larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise FetchError(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def request_bytes(session: aiohttp.ClientSession, method: str, url: str, *,
                        time_limit: float, headers: Mapping[str, str] | None = None,
                        data: Mapping[str, str] | None = None,
                        limit: int = MAX_RESPONSE_BYTES) -> tuple[bytes, Mapping[str, str]]:
    """Send one request; return the 200 body and response headers.

    Redirects are not followed (a redirect could downgrade https to http or leave the
    issuer's host).

    Raises:
        FetchError: connection error, timeout, non-200 status or oversized body.
    """
    try:
        async with session.request(method, url, headers=headers, data=data,
                                   allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=time_limit)) as response:
            if response.status != 200:
                raise FetchError(f"HTTP {response.status}")
            body = await read_capped(response, limit)
            return body, response.headers
    except TimeoutError as exc:
        raise FetchError("timed out") from exc
    except aiohttp.ClientError as exc:
        raise FetchError(f"connection failed ({type(exc).__name__})") from exc


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object.

    Raises:
        FetchError: not JSON or not an object.
    """
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise FetchError(f"{what} is not a JSON object")
    return value
