"""The streaming forwarder: one pooled ClientSession to the backend.

Bodies stream both ways in bounded memory. ``upstream.timeout`` runs until the response
headers arrive; ``idle_timeout`` bounds each silence while the response body streams.
aiohttp/OS errors are translated here into ``UpstreamUnavailable`` / ``UpstreamTimeout``;
nothing about the backend reaches the client.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from sidecar.config.server import UpstreamConfig
from sidecar.deadlines import Deadlines
from sidecar.headers import downstream_response_headers
from sidecar.problem import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable

# Responses up to this size with a known length are read whole and written in one go:
# fewer writes for the common small JSON answer, still bounded memory.
SMALL_BODY: Final = 64 * 1024
# A signed response must be buffered to digest it; this bounds that buffer.
MAX_SIGNED_RESPONSE: Final = 64 * 1024 * 1024

SignResponse = Callable[[int, CIMultiDict[str], bytes], Mapping[str, str]]
CHUNK: Final = 64 * 1024


class BodyTooLarge(PayloadTooLarge):
    """Raised from inside the request-body stream when a chunked upload passes the cap."""


async def capped_body(request: web.BaseRequest, limit: int) -> AsyncIterator[bytes]:
    """Stream the request body, refusing more than ``limit`` bytes."""
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"request body passed {limit} bytes while streaming")
        yield chunk


class Upstream:
    """Forwards requests to ``upstream.url`` and streams the response back."""

    def __init__(self, cfg: UpstreamConfig, max_body_bytes: int) -> None:
        self._cfg = cfg
        self._base = cfg.url.rstrip("/")
        self._max_body = max_body_bytes
        url = URL(cfg.url)
        self.host = url.host or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout, sock_connect=cfg.connect_timeout,
            sock_read=None,
        )
        # upstream.timeout (until the response head) on a coarse sweep, not a timer each.
        self._deadlines = Deadlines(resolution=min(0.05, cfg.timeout / 10))
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadlines.start()
        ssl_ctx: ssl.SSLContext | bool = True
        if self._cfg.ca_file:
            ssl_ctx = ssl.create_default_context(cafile=self._cfg.ca_file)
        connector = aiohttp.TCPConnector(
            limit=self._cfg.max_connections, limit_per_host=self._cfg.max_connections,
            ssl=ssl_ctx, keepalive_timeout=30, enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        await self._deadlines.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reachable(self) -> bool:
        """A TCP connect to the backend succeeds within ``connect_timeout`` (for /readyz)."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self._cfg.connect_timeout)
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    async def forward(
        self,
        request: web.BaseRequest,
        headers: CIMultiDict[str],
        body: bytes | None,
        response_headers: CIMultiDict[str],
        sign_response: SignResponse | None = None,
    ) -> tuple[web.StreamResponse, float]:
        """Send the request upstream and stream the answer to the client.

        ``body`` is the already-buffered body (signed routes) or None to stream it from the
        client. Returns the prepared-and-finished response and the seconds until the
        upstream's response headers arrived.

        Raises:
            UpstreamUnavailable: connect failure or the backend broke the exchange (502).
            UpstreamTimeout: no response headers within ``upstream.timeout`` (504).
            PayloadTooLarge: a streamed body passed ``max_body_bytes`` (413).
        """
        assert self._session is not None, "Upstream.start() not awaited"
        data: bytes | AsyncIterator[bytes] | None = body
        if body is None and request.body_exists:
            data = capped_body(request, self._max_body)
        url = URL(self._base + request.raw_path, encoded=True)
        task = asyncio.current_task()
        assert task is not None and self._loop is not None
        deadlines = self._deadlines
        started = time.perf_counter()
        deadlines.arm(task, self._loop.time() + self._cfg.timeout)
        fired = False
        try:
            try:
                upstream = await self._session.request(
                    request.method, url, headers=headers, data=data,
                    allow_redirects=False, compress=None,
                )
            finally:
                fired = deadlines.disarm(task)
        except asyncio.CancelledError:
            if not fired:
                raise
            task.uncancel()
            raise UpstreamTimeout("no response headers within upstream.timeout") from None
        except TimeoutError as exc:
            raise UpstreamTimeout("no response headers within upstream.timeout") from exc
        except PayloadTooLarge:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, PayloadTooLarge):
                raise cause from exc
            raise UpstreamUnavailable(f"upstream request failed: {type(exc).__name__}") from exc
        upstream_seconds = time.perf_counter() - started
        try:
            response: web.StreamResponse
            if sign_response is not None:
                response = await self._relay_signed(upstream, response_headers, sign_response)
            else:
                response = await self._relay(request, upstream, response_headers)
        finally:
            upstream.release()
        return response, upstream_seconds

    async def _relay_signed(
        self,
        upstream: aiohttp.ClientResponse,
        extra_headers: CIMultiDict[str],
        sign_response: SignResponse,
    ) -> web.Response:
        """Buffer the whole response (bounded) so its digest and signature can be sent."""
        headers = downstream_response_headers(upstream.headers, extra_headers, drop_length=True)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._cfg.idle_timeout) as deadline:
                loop = asyncio.get_running_loop()
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > MAX_SIGNED_RESPONSE:
                        raise UpstreamUnavailable("response too large to sign")
                    chunks.append(chunk)
                    deadline.reschedule(loop.time() + self._cfg.idle_timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamTimeout("backend stalled while sending the body") from exc
        body = b"".join(chunks)
        headers.update(sign_response(upstream.status, headers, body))
        return web.Response(status=upstream.status, headers=headers, body=body)

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        extra_headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        length = upstream.content_length
        idle = self._cfg.idle_timeout
        small = length is not None and length <= SMALL_BODY
        # A small body is written whole and aiohttp sets Content-Length from it; the
        # upstream's copy must not double it.
        headers = downstream_response_headers(upstream.headers, extra_headers, drop_length=small)
        if small:
            try:
                if upstream.content.is_eof():
                    body = await upstream.read()  # arrived with the head: nothing to wait for
                else:
                    async with asyncio.timeout(idle):
                        body = await upstream.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise UpstreamTimeout("backend stalled while sending the body") from exc
            return web.Response(status=upstream.status, headers=headers, body=body)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if length is None and request.version >= aiohttp.HttpVersion11:
            response.enable_chunked_encoding()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(idle) as deadline:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                    deadline.reschedule(loop.time() + idle)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are already sent: the only honest signal left is an aborted body.
            if request.transport is not None:
                request.transport.abort()
            raise UpstreamTimeout("backend stalled or broke while streaming") from exc
        await response.write_eof()
        return response
