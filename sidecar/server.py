"""One worker process: the public listener, the admin listener, signals and draining.

SIGTERM/SIGINT: stop accepting, let in-flight requests finish within
``server.shutdown_grace``, close stages (flushing audit), exit 0. SIGHUP: reload config.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from typing import Any

from aiohttp import web, web_protocol

from sidecar.admin import build_admin_app
from sidecar.app import Runtime
from sidecar.config import LoadedConfig
from sidecar.config.server import ServerConfig, split_listen
from sidecar.metrics import Metrics
from sidecar.tls import ServerTLS

log = logging.getLogger("sidecar.server")

GC_GEN0_THRESHOLD = 20_000


class _Handler(web_protocol.RequestHandler):
    """aiohttp's protocol plus a header-read deadline (slowloris).

    A connection must deliver a request's complete head within ``header_read_timeout`` of
    its first byte (or of the connection opening); otherwise it is closed. The deadline is
    enforced by the server's sweeper rather than a timer per request: marking the start
    of a head is one attribute write on the hot path.
    """

    peer_ip: str = ""
    head_since: float | None = None
    """Loop time the current request head began arriving; None while a request runs or
    the connection idles between requests."""
    in_request: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.head_since = self._loop.time()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer_ip = str(peer[0])

    def data_received(self, data: bytes) -> None:
        if self.head_since is None and not self.in_request:
            self.head_since = self._loop.time()
        super().data_received(data)


class _Server(web.Server):
    def __init__(self, *args: Any, header_read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_read_timeout = header_read_timeout
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> web_protocol.RequestHandler:
        if self._sweeper is None:
            self._sweeper = self._loop.create_task(self._sweep())
        return _Handler(self, loop=self._loop, **self._kwargs)

    async def _sweep(self) -> None:
        timeout = self._header_read_timeout
        interval = min(1.0, timeout / 4)
        while True:
            await asyncio.sleep(interval)
            expired = self._loop.time() - timeout
            for handler in self.connections:  # a copy: closing edits the live dict
                if (isinstance(handler, _Handler) and handler.head_since is not None
                        and handler.head_since < expired and handler.transport is not None):
                    handler.transport.close()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp API)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)


def public_server(runtime: Runtime, cfg: ServerConfig) -> web.Server:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, _Handler):
            protocol.head_since = None
            protocol.in_request = True
        try:
            return await runtime.pipeline.handle(request)
        finally:
            if isinstance(protocol, _Handler):
                protocol.in_request = False

    return _Server(
        handle,
        header_read_timeout=cfg.header_read_timeout,
        keepalive_timeout=cfg.keepalive_timeout,
        # Let our own checks answer 414/431 as problem+json; the parser's limits sit above.
        max_line_size=cfg.max_url_bytes + 1024,
        max_field_size=cfg.max_header_bytes + 1024,
        max_headers=256,
        auto_decompress=False,
        access_log=None,
        handler_cancellation=False,
    )


def bind(listen: str, reuse_port: bool) -> socket.socket:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(loaded: LoadedConfig, *, reuse_port: bool) -> int:
    """Run one worker until SIGTERM; return the exit code."""
    config = loaded.config
    # The certificate first: a file that does not load stops the worker before any stage.
    server_tls = ServerTLS(config.server.tls) if config.server.tls is not None else None
    metrics = Metrics()
    runtime = Runtime(loaded, metrics)
    await runtime.start()
    loop = asyncio.get_running_loop()
    public = public_server(runtime, config.server)
    public_sock = bind(config.server.listen, reuse_port)
    listener = await loop.create_server(
        public, sock=public_sock, ssl=server_tls.listener if server_tls is not None else None)
    if server_tls is not None:
        await server_tls.start()  # file watcher: a rotated certificate needs no signal
    admin_runner = web.AppRunner(build_admin_app(metrics, runtime.readiness), access_log=None)
    await admin_runner.setup()
    admin_site = web.SockSite(admin_runner, bind(config.admin.listen, reuse_port))
    await admin_site.start()
    log.info("listening on %s (admin %s)", config.server.listen, config.admin.listen)

    tune_gc()
    flusher = loop.create_task(metrics.run_flusher())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def reload() -> None:
        await runtime.reload()
        if server_tls is not None:  # the live server.tls section, files re-read
            await server_tls.reload(runtime.config.server.tls)

    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    await stop.wait()

    grace = runtime.config.server.shutdown_grace
    log.info("draining: up to %.1fs for in-flight requests", grace)
    listener.close()
    if server_tls is not None:
        await server_tls.close()
    await public.shutdown(grace)
    await admin_runner.cleanup()
    await runtime.close(grace)
    flusher.cancel()
    metrics.flush()
    log.info("stopped")
    return 0


def tune_gc() -> None:
    """Keep the cyclic collector off the request path.

    Everything built at startup (modules, config, compiled stages) lives for the process:
    ``gc.freeze`` moves it out of the collector's view, so a full collection no longer
    walks it; a larger first-generation threshold makes collections rarer. Requests
    allocate mostly acyclic short-lived objects that reference counting frees anyway.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, second, third)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
