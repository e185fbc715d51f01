"""The loopback transport (``client/_transport.py``) against a real HTTP server on this machine.

The server is a few lines of asyncio speaking HTTP/1.1 by hand, so that each
test can make it misbehave: close idle connections, stop mid-response, stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from azure_sessions_kernel.client import AsyncSessionsClient, SessionsClient
from azure_sessions_kernel.client._base import is_loopback
from azure_sessions_kernel.client._transport import LoopbackTransport


class Server:
    """Answers ``GET /ok`` (keep-alive), ``/close-after`` (then closes), ``/cut`` (half a body),
    ``/stall`` (never answers), ``/chunks`` (a chunked body) and ``POST /count`` (body length)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method, target = head.split(" ")[:2]
                self.requests.append(f"{method} {target}")
                headers = {line.split(":")[0].lower(): line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:] if ":" in line}
                size = 0
                if headers.get("transfer-encoding") == "chunked":
                    while (n := int((await reader.readuntil(b"\r\n")).strip(), 16)) != 0:
                        size += len(await reader.readexactly(n + 2)) - 2
                    await reader.readuntil(b"\r\n")
                elif "content-length" in headers:
                    size = len(await reader.readexactly(int(headers["content-length"])))
                if target == "/stall":
                    await asyncio.sleep(3600)
                if target == "/cut":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
                    await writer.drain()
                    writer.close()
                    return
                if target == "/chunks":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for piece in (b"one\n", b"two\n"):
                        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        await writer.drain()
                        await asyncio.sleep(0.01)
                    writer.write(b"0\r\n\r\n")
                    continue
                body = json.dumps({"size": size}).encode() if target == "/count" else b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if target == "/close-after":
                    writer.close()
                    return


def run(coro):
    return asyncio.run(coro)


def test_connections_are_kept_alive_and_reused():
    async def scenario():
        async with Server() as server, httpx.AsyncClient(transport=LoopbackTransport()) as client:
            for _ in range(3):
                r = await client.get(server.url + "/ok")
                assert (r.status_code, r.text) == (200, "ok")
            assert server.connections == 1

    run(scenario())


def test_a_connection_the_server_closed_is_not_reused():
    async def scenario():
        async with Server() as server, httpx.AsyncClient(transport=LoopbackTransport()) as client:
            assert (await client.get(server.url + "/close-after")).text == "ok"
            await asyncio.sleep(0.05)  # the loop sees the server's FIN
            assert (await client.get(server.url + "/ok")).text == "ok"
            assert server.connections == 2

    run(scenario())


def test_a_streamed_chunked_response_arrives_piece_by_piece():
    async def scenario():
        async with Server() as server, httpx.AsyncClient(transport=LoopbackTransport()) as client:
            async with client.stream("GET", server.url + "/chunks") as r:
                lines = [line async for line in r.aiter_lines()]
            assert lines == ["one", "two"]
            assert (await client.get(server.url + "/ok")).text == "ok"
            assert server.connections == 1  # the finished stream left its connection reusable

    run(scenario())


def test_request_bodies_of_known_and_unknown_length():
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 65536

    async def scenario():
        async with Server() as server, httpx.AsyncClient(transport=LoopbackTransport()) as client:
            assert (await client.post(server.url + "/count", json={"a": 1})).json() == {"size": len(b'{"a":1}')}
            assert (await client.post(server.url + "/count", content=pieces())).json() == {"size": 64 * 65536}
            assert (await client.post(server.url + "/count", content=b"y" * 300_000)).json() == {"size": 300_000}

    run(scenario())


def test_failures_are_httpx_exceptions():
    async def scenario():
        async with Server() as server, httpx.AsyncClient(transport=LoopbackTransport()) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url + "/cut")
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url + "/stall", timeout=httpx.Timeout(5, read=0.2))
            assert (await client.get(server.url + "/ok")).text == "ok"  # broken connections were dropped
            port = server.url.rsplit(":", 1)[1]
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(transport=LoopbackTransport()) as client:
                await client.get(f"http://127.0.0.1:{port}/ok")  # the server is gone
        with pytest.raises(httpx.UnsupportedProtocol):
            async with httpx.AsyncClient(transport=LoopbackTransport()) as client:
                await client.get("https://127.0.0.1:1/ok")

    run(scenario())


def test_a_cancelled_request_does_not_leave_its_connection_for_reuse():
    async def scenario():
        async with Server() as server, httpx.AsyncClient(transport=LoopbackTransport()) as client:
            task = asyncio.ensure_future(client.get(server.url + "/stall"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await client.get(server.url + "/ok")).text == "ok"
            assert server.connections == 2

    run(scenario())


@pytest.mark.parametrize(
    "endpoint, loopback",
    [("http://127.0.0.1:8000", True), ("http://localhost:8000", True), ("http://[::1]:8000", True),
     ("https://127.0.0.1:8000", False), ("http://10.0.0.5:8000", False), ("https://eastus.dynamicsessions.io/x", False)],
)
def test_only_the_async_client_on_plain_loopback_uses_it(endpoint, loopback):
    async def scenario():
        client = AsyncSessionsClient(endpoint, token="t")
        try:
            return isinstance(client._http._transport, LoopbackTransport)
        finally:
            await client.close()

    assert run(scenario()) is (loopback and endpoint.startswith("http://"))
    assert is_loopback(httpx.URL(endpoint)) is ("127.0.0.1" in endpoint or "localhost" in endpoint or "[::1]" in endpoint)
    with SessionsClient(endpoint, token="t") as sync:
        assert not isinstance(sync._http._transport, LoopbackTransport)
