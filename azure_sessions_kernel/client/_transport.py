"""An HTTP/1.1 transport for a pool on this machine: plain HTTP to a loopback address.

The asynchronous client uses it instead of httpx's default transport when its
endpoint is ``http://`` on a loopback address (the local pool); TLS, proxies
and remote hosts keep httpx's own. Why: a notebook cell is one streamed
request, and the default transport (httpcore over anyio) writes a request's
headers and its body in two writes and wraps each read in a cancel scope.
Against a process on the same machine every write wakes that process, so the
pool woke twice per cell, and the extra layers cost more than the loopback
round trip itself (``bench/kernel_bench.py`` shows the difference).

Framing is h11's (the HTTP/1.1 state machine httpcore itself uses); this
module only moves bytes: one write for the head and a small body, plain
``asyncio`` streams for reading, keep-alive connections reused while the
server keeps them open. Errors and timeouts are raised as httpx's own
exceptions, so the client treats them exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

__all__ = ["LoopbackTransport"]

#: Request bodies up to this size go out in the same write as the head.
_COALESCE_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024


class _Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    @property
    def reusable(self) -> bool:
        # An idle connection the server has closed shows as EOF once the loop has read it.
        return self.h11.our_state is h11.IDLE and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()

    async def send(self, request: httpx.Request, timeout: float | None) -> None:
        out = self.h11.send(h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw))
        async with _guard(request, timeout, httpx.WriteTimeout, httpx.WriteError):
            async for chunk in request.stream:
                if not chunk:
                    continue
                out += self.h11.send(h11.Data(data=chunk))
                if len(out) >= _COALESCE_BYTES:
                    self.writer.write(out)
                    out = b""
                    await self.writer.drain()
            out += self.h11.send(h11.EndOfMessage())
            self.writer.write(out)
            await self.writer.drain()

    async def next_event(self, request: httpx.Request, timeout: float | None) -> Any:
        async with _guard(request, timeout, httpx.ReadTimeout, httpx.ReadError):
            while True:
                event = self.h11.next_event()
                if event is not h11.NEED_DATA:
                    return event
                self.h11.receive_data(await self.reader.read(_READ_BYTES))


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, pool: LoopbackTransport, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._request = request
        self._timeout = timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._complete:
            event = await self._conn.next_event(self._request, self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._complete = True
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("The server closed the connection before the response ended.", request=self._request)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            self._pool._release(conn, reuse=self._complete)


class LoopbackTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` for ``http://`` on loopback; keeps up to ``max_idle`` connections open."""

    def __init__(self, max_idle: int = 4) -> None:
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{type(self).__name__} speaks plain http, not {request.url.scheme}.", request=request)
        timeouts = request.extensions.get("timeout", {})
        conn = self._take_idle() or await self._connect(request, timeouts.get("connect"))
        try:
            await conn.send(request, timeouts.get("write"))
            head = await conn.next_event(request, timeouts.get("read"))
            while isinstance(head, h11.InformationalResponse):  # 100 Continue and friends
                head = await conn.next_event(request, timeouts.get("read"))
            if not isinstance(head, h11.Response):
                raise httpx.RemoteProtocolError("The server closed the connection without a response.", request=request)
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=_ResponseBody(self, conn, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        if reuse and not self._closed and len(self._idle) < self._max_idle and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            conn.close()

    async def _connect(self, request: httpx.Request, timeout: float | None) -> _Connection:
        url = request.url
        async with _guard(request, timeout, httpx.ConnectTimeout, httpx.ConnectError):
            reader, writer = await asyncio.open_connection(url.host, url.port or 80)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Each small write goes out at once instead of waiting ~40 ms for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)


@contextlib.asynccontextmanager
async def _guard(
    request: httpx.Request, seconds: float | None, timeout: type[httpx.TimeoutException], failure: type[httpx.TransportError]
) -> AsyncIterator[None]:
    """Within ``seconds`` or raise ``timeout``; socket errors as ``failure``, framing errors as httpx's own."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:  # before OSError, of which it is a subclass
        raise timeout("timed out", request=request) from None
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    except OSError as exc:
        raise failure(str(exc) or type(exc).__name__, request=request) from exc
