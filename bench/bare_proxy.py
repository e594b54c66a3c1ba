"""The framework's ceiling: the least an aiohttp reverse proxy can do.

One process, one ``ClientSession``, the request body streamed up and the response body
streamed back, hop-by-hop headers dropped, nothing else: no routing, no auth, no metrics.
The sidecar's throughput is reported as a ratio of this one, so the bench separates "what
our pipeline costs" from "what aiohttp on this machine can do at all".

Run: ``python -m bench.bare_proxy --listen 127.0.0.1:8101 --upstream http://127.0.0.1:8100``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from yarl import URL

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
SMALL_BODY = 64 * 1024
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


def _filter(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """End-to-end headers only, repeated ones kept (a multidict's items() yields each)."""
    return [(k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP]


async def proxy(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    body = request.content.iter_any() if request.body_exists else None
    try:
        async with session.request(
            request.method, url, headers=_filter(request.headers), data=body,
            allow_redirects=False, compress=None,
        ) as upstream:
            headers = _filter(upstream.headers)
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY:
                # The same shortcut as the sidecar's forwarder: small bodies in one write.
                return web.Response(status=upstream.status, headers=headers,
                                    body=await upstream.read())
            response = web.StreamResponse(status=upstream.status, headers=headers)
            if length is None:
                response.enable_chunked_encoding()
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(65536):
                await response.write(chunk)
            await response.write_eof()
            return response
    except (OSError, aiohttp.ClientError):
        # wrk drops its connections mid-request when a run ends; a broken backend shows
        # up in wrk's non-2xx count.
        return web.Response(status=502)


def build_app(upstream: str, max_connections: int = 256) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
        timeout = aiohttp.ClientTimeout(total=None, connect=2, sock_read=30)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8101", help="host:port to serve on")
    parser.add_argument("--upstream", default="http://127.0.0.1:8100", help="backend base URL")
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_name = "asyncio"
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    print(f"bare proxy on {args.listen} -> {args.upstream} ({loop_name})", file=sys.stderr,
          flush=True)
    web.run_app(build_app(args.upstream, args.max_connections), host=host, port=int(port),
                access_log=None, print=None, handle_signals=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
