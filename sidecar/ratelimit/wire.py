"""One pipelined Redis connection of our own: pre-encoded RESP out, hiredis replies in.

redis-py's ``await conn.read_response()`` costs its caller tens of µs of CPU per reply
(stream reader, parser and coroutine layers), and the rate limiter pays it on every
request. :class:`PipelinedConnection` drives one socket with an :class:`asyncio.Protocol`
instead: a command is written with ``transport.write``, and ``data_received`` feeds a
:class:`hiredis.Reader` (the parser; nothing here parses RESP by hand) and resolves the
waiting futures in order.

Batching: commands submitted in one turn of the event loop leave together as one write at
the end of that turn, while fewer than ``max_in_flight`` writes await their replies;
beyond that they queue and leave together when a write is fully answered. Batches grow
with load, and a lone command never waits for a timer.

The connection is opened on first use and again after any failure: TCP or ``unix://``,
TLS with the client's context, ``AUTH`` and ``SELECT`` as the client's own connections
do, the Sentinels asked for the master each time (:class:`sidecar.redisconn.DirectTarget`).

Failures reach the waiting futures as exceptions; :meth:`PipelinedConnection.submit`
itself never raises:

* :class:`ConnectionLost` — the socket closed, or the server answered ``READONLY`` (a
  demoted master), before this command's reply. The command may have run.
* :class:`TimeoutError` — no reply within ``timeout`` of submission. The connection is
  dropped: every reply queued behind a late one would be late too.
* :class:`OSError` or :class:`redis.exceptions.RedisError` — opening the connection
  failed (refused, TLS, ``AUTH`` refused: :class:`HandshakeError`, no master known).

An error reply (``-ERR ...``) is a reply, not a failure: a :class:`hiredis.ReplyError`
value.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import hiredis

from sidecar.redisconn import DirectTarget

_NO_LIMIT = 1 << 62


class ConnectionLost(ConnectionError):
    """The connection ended before this command's reply; the command may have run."""


class HandshakeError(ConnectionError):
    """The server refused ``AUTH`` or ``SELECT`` on a new connection."""


def encode_command(args: Iterable[bytes]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args]
    return b"*%d\r\n%s" % (len(parts), b"".join(parts))


class _Wire(asyncio.Protocol):
    """One socket: writes commands, parses replies, answers the waiters in order."""

    def __init__(self, owner: PipelinedConnection, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._loop = loop
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self.batches: deque[tuple[int, float]] = deque()
        """Per write still owed replies, oldest first: (replies sent up to and including
        it, its deadline on the loop clock)."""
        self._sent = 0
        self._received = 0
        self._timer: asyncio.TimerHandle | None = None
        self._dead = False
        self.closed: asyncio.Future[None] = loop.create_future()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        keepalive = self._owner.target.keepalive
        sock = transport.get_extra_info("socket")
        if keepalive is not None and sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError, TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for option, value in keepalive.items():
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        received = self._received
        try:
            reply = reader.gets()
            while reply is not False:
                waiter = waiters.popleft()
                received += 1
                if type(reply) is hiredis.ReplyError and reply.args[0].startswith("READONLY"):
                    # A demoted master: the command did not run; the Sentinels know the
                    # new master, which the next connection asks for.
                    waiters.appendleft(waiter)
                    self._die(ConnectionLost("the server is a replica now (READONLY)"))
                    return
                if not waiter.done():
                    waiter.set_result(reply)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply unasked for
            self._die(ConnectionLost(f"unreadable reply stream ({type(exc).__name__})"))
            return
        self._received = received
        batches = self.batches
        if batches and batches[0][0] <= received:
            while batches and batches[0][0] <= received:
                batches.popleft()
            self._owner._slot_freed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionLost("the connection closed")
        error.__cause__ = exc
        self._transport = None
        self._die(error)
        if not self.closed.done():
            self.closed.set_result(None)

    # --- used by PipelinedConnection ----------------------------------------------------

    def send(self, payload: bytes, waiters: list[asyncio.Future[Any]], deadline: float) -> None:
        """Write ``payload`` (one command per waiter); fail them all after ``deadline``."""
        assert self._transport is not None
        self._transport.write(payload)
        self._waiters.extend(waiters)
        self._sent += len(waiters)
        self.batches.append((self._sent, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def send_one(self, payload: bytes, waiter: asyncio.Future[Any], deadline: float) -> None:
        """:meth:`send` for a single command."""
        assert self._transport is not None
        self._transport.write(payload)
        self._waiters.append(waiter)
        self._sent += 1
        self.batches.append((self._sent, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def abort(self, error: BaseException) -> None:
        """Drop the connection; every waiter gets ``error``."""
        self._die(error)

    def _on_timer(self) -> None:
        # One timer per connection, for the oldest write's deadline: it fires at most once
        # per deadline, instead of one timer armed and cancelled per command.
        self._timer = None
        if not self.batches:
            return
        deadline = self.batches[0][1]
        if deadline <= self._loop.time():
            self._die(TimeoutError("no reply from Redis within the timeout"))
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _die(self, error: BaseException) -> None:
        if self._dead:
            return
        self._dead = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, deque()
        self.batches.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        if self._transport is not None:
            self._transport.abort()
        self._owner._lost(self, error)


class PipelinedConnection:
    """One Redis connection, opened on demand, shared by every caller (see the module).

    Args:
        target: where and how to connect (``sidecar.redisconn.direct_target``).
        timeout: seconds for opening a connection (address, TCP, TLS, handshake), and
            for each command's reply, counted from :meth:`submit`.
        max_in_flight: writes awaiting replies before commands queue for the next one;
            None writes every command at once, alone (no batching).
    """

    def __init__(self, target: DirectTarget, *, timeout: float,
                 max_in_flight: int | None = 4) -> None:
        self.target = target
        self._timeout = timeout
        self._batching = max_in_flight is not None
        self._cap = _NO_LIMIT if max_in_flight is None else max(1, max_in_flight)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wire: _Wire | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queue: list[bytes] = []
        self._queued: list[asyncio.Future[Any]] = []
        self._queued_at = 0.0
        self._flush_scheduled = False
        self._closed = False
        self.writes = 0
        """Writes of commands so far (commands / writes is the batching factor)."""
        self.connects = 0
        """Connections opened so far."""

    def submit(self, payload: bytes) -> asyncio.Future[Any]:
        """Send one pre-encoded command; the future gets its reply or the failure."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        wire = self._wire
        if wire is not None and not self._batching:
            self.writes += 1
            wire.send_one(payload, future, loop.time() + self._timeout)
            return future
        if self._closed:
            future.set_exception(ConnectionAbortedError("the Redis connection was closed"))
            return future
        if not self._queue:
            self._queued_at = loop.time()
        self._queue.append(payload)
        self._queued.append(future)
        if wire is None:
            if self._connecting is None:
                self._connecting = loop.create_task(self._connect())
        elif not self._flush_scheduled and len(wire.batches) < self._cap:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def close(self) -> None:
        """Close the connection; commands not answered yet fail."""
        self._closed = True
        error = ConnectionAbortedError("the Redis connection was closed")
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        self._fail_queue(error)
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.abort(error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await wire.closed

    # --- internals ----------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        wire, loop = self._wire, self._loop
        if wire is None or loop is None or not self._queue or len(wire.batches) >= self._cap:
            return
        payload = b"".join(self._queue)
        waiters, deadline = self._queued, self._queued_at + self._timeout
        self._queue, self._queued = [], []
        if deadline <= loop.time():  # waited out its time for a connection: never sent
            error = TimeoutError("no Redis connection within the timeout")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        self.writes += 1
        wire.send(payload, waiters, deadline)

    def _slot_freed(self, wire: _Wire) -> None:
        if self._queue and wire is self._wire:
            self._flush()

    def _lost(self, wire: _Wire, error: BaseException) -> None:
        if wire is self._wire:
            self._wire = None
            self._fail_queue(error)

    def _fail_queue(self, error: BaseException) -> None:
        waiters, self._queued, self._queue = self._queued, [], []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def _connect(self) -> None:
        try:
            wire = await self._open()
        except asyncio.CancelledError:
            self._connecting = None
            raise
        except Exception as exc:  # every failure goes to the waiting commands
            self._connecting = None
            self._fail_queue(exc)
            return
        self._connecting = None
        self._wire = wire
        self.connects += 1
        try:
            self._flush()
        except Exception as exc:  # never leave a waiting command hanging
            wire.abort(exc)

    async def _open(self) -> _Wire:
        loop = self._loop
        assert loop is not None
        target = self.target
        wire: _Wire | None = None
        try:
            async with asyncio.timeout(self._timeout):
                if target.path is not None:
                    _, wire = await loop.create_unix_connection(
                        lambda: _Wire(self, loop), target.path)
                else:
                    host, port = await target.address()
                    _, wire = await loop.create_connection(
                        lambda: _Wire(self, loop), host, port, ssl=target.ssl)
                commands = await target.handshake()
                if commands:
                    waiters: list[asyncio.Future[Any]] = [
                        loop.create_future() for _ in commands]
                    wire.send(b"".join(encode_command(c) for c in commands), waiters,
                              loop.time() + self._timeout)
                    for command, waiter in zip(commands, waiters, strict=True):
                        reply = await waiter
                        if isinstance(reply, hiredis.ReplyError):
                            # The reply names the problem; the command holds the secret.
                            raise HandshakeError(f"{command[0].decode()} refused: {reply}")
        except BaseException as exc:
            if wire is not None:
                wire.abort(exc if isinstance(exc, Exception)
                           else ConnectionAbortedError("connecting was cancelled"))
            raise
        return wire
