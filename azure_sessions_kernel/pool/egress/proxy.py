"""The egress proxy: HTTP ``CONNECT`` (and plain ``http://``) to allowed host names, for sessions without a network.

A session's network namespace has only loopback. When the pool runs with
``--egress``, the launcher gives every sandbox a Unix socket of its own
(:meth:`EgressProxy.listen`, bound read-only into the sandbox) and the
session's runner relays ``127.0.0.1:3128`` to it, so ``HTTPS_PROXY`` works for
pip, requests and urllib as it would on any proxied network. This end
decides: names only, on the list, resolved here and checked again by
address (:class:`~.policy.EgressPolicy`), connected to the address that was
checked (no second lookup), one log line per connection.

TLS is not intercepted: a ``CONNECT`` tunnel carries the session's own TLS
to the server, which the session verifies against the host's CA bundle.

It runs on a thread and event loop of its own, so that a large download
never delays the pool's HTTP API, and each sandbox's listener is closed,
with its open tunnels, when the sandbox ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .policy import EgressPolicy

__all__ = ["EgressProxy"]

log = logging.getLogger("azure_sessions_kernel.pool.egress")

#: Longest request head a session may send (request line plus headers).
MAX_HEAD = 16 * 1024
#: Seconds for the request head, the name lookup and the TCP connect, each.
HEAD_TIMEOUT = 30.0
RESOLVE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
#: Connections open at once per sandbox (waiting for their request, or tunnels); more are refused at once,
#: so that no session can spend the pool's file descriptors (two per tunnel).
MAX_TUNNELS = 64
#: Connections a session's socket queues before the proxy's loop accepts them.
LISTEN_BACKLOG = 256
_CHUNK = 64 * 1024
# Hop-by-hop headers of the proxy leg; never forwarded to the server.
_PROXY_HEADERS = (b"proxy-authorization", b"proxy-connection", b"proxy-authenticate")


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass
class _Listener:
    server: asyncio.AbstractServer
    tunnels: set[asyncio.Task[None]]  # one per open connection


class EgressProxy:
    """One per pool with ``--egress``; the bwrap launcher asks it for a socket per sandbox.

    ``log_file``, when given, gets one JSON line per connection (time,
    session, host, port, address, decision, reason, bytes each way, seconds)
    besides the ``azure_sessions_kernel.pool.egress`` log.
    """

    def __init__(self, policy: EgressPolicy, log_file: Path | None = None) -> None:
        self.policy = policy
        self.log_file = log_file
        self._log_lock = threading.Lock()
        self._listeners: dict[str, _Listener] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-proxy", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ lifecycle

    def listen(self, path: Path, label: Callable[[], str]) -> None:
        """Serve a sandbox on a new Unix socket at ``path`` (any local user may connect: the
        directory decides who can). Called by the launcher's spawn thread before bwrap starts.
        ``label()`` names the session in the log, at each connection."""
        asyncio.run_coroutine_threadsafe(self._listen(path, label), self._loop).result(10)

    def close_listener(self, path: Path) -> None:
        """Stop serving ``path`` and cut its tunnels; called when the sandbox is released."""
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self._close_listener(str(path)), self._loop).result(10)

    def close(self) -> None:
        """Stop every listener and the proxy's thread (pool shutdown)."""
        if self._loop.is_closed():
            return
        for path in list(self._listeners):
            self.close_listener(Path(path))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _listen(self, path: Path, label: Callable[[], str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        tunnels: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(tunnels) >= MAX_TUNNELS:
                await self._refuse(writer, 429, f"too many connections through the egress proxy at once ({MAX_TUNNELS} per session)")
                self._log({"session": label(), "host": None, "port": None, "address": None, "decision": "refused",
                           "reason": "too many connections", "bytes_out": 0, "bytes_in": 0, "seconds": 0.0})
                writer.close()
                return
            task = asyncio.current_task()
            assert task is not None
            tunnels.add(task)
            try:
                await self._serve(reader, writer, label)
            finally:
                tunnels.discard(task)

        # A deep queue, so that a burst (pip opens several connections at once) waits for the loop instead of being
        # refused by the kernel; the session's relay retries what still does not fit.
        server = await asyncio.start_unix_server(on_connect, path=str(path), limit=MAX_HEAD, backlog=LISTEN_BACKLOG)
        os.chmod(path, 0o666)
        self._listeners[str(path)] = _Listener(server, tunnels)

    async def _close_listener(self, path: str) -> None:
        listener = self._listeners.pop(path, None)
        if listener is None:
            return
        listener.server.close()
        for task in list(listener.tunnels):
            task.cancel()
        await asyncio.gather(*listener.tunnels, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    # ------------------------------------------------------------ one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, label: Callable[[], str]) -> None:
        started = time.monotonic()
        record: dict[str, Any] = {"session": label(), "host": None, "port": None, "address": None}
        counts = [0, 0]
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            method, host, port, forward = self._parse_head(head)
            record.update(method=method, host=host, port=port)
            if (why := self.policy.refuse_name(host, port)) is not None:
                raise _Refused(403, why)
            address = await self._resolve(host, port)
            record["address"] = address[0]
            upstream_reader, upstream_writer = await self._connect(host, address)
            try:
                if forward is None:
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    upstream_writer.write(forward)
                    counts[0] += len(forward)
                await writer.drain()
                record["decision"] = "allowed"
                await asyncio.gather(
                    self._pump(reader, upstream_writer, counts, 0),
                    self._pump(upstream_reader, writer, counts, 1),
                )
            finally:
                upstream_writer.close()
        except _Refused as refusal:
            record.update(decision="refused", reason=refusal.reason)
            await self._refuse(writer, refusal.status, refusal.reason)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError) as exc:
            record.update(decision="refused", reason=f"bad or incomplete request ({type(exc).__name__})")
        except (ConnectionError, asyncio.CancelledError) as exc:
            if "decision" not in record:
                record.update(decision="abandoned", reason="the session went away before the tunnel opened")
            elif isinstance(exc, asyncio.CancelledError):
                record["reason"] = "cut: the session ended"
        finally:
            writer.close()
            record.update(bytes_out=counts[0], bytes_in=counts[1], seconds=round(time.monotonic() - started, 3))
            self._log(record)

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        body = (reason + "\n").encode()
        # The reason goes in the status line too: pip and urllib3 print only that.
        head = f"HTTP/1.1 {status} {_reason_phrase(reason)}\r\n".encode()
        writer.write(head + b"Content-Type: text/plain\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    @staticmethod
    def _parse_head(head: bytes) -> tuple[str, str, int, bytes | None]:
        """``(method, host, port, request to forward)``; ``None`` to forward means a CONNECT tunnel."""
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "not an HTTP request line") from None
        if not version.startswith("HTTP/1."):
            raise _Refused(400, f"unsupported protocol {version}")
        if method == "CONNECT":
            host, sep, port_text = target.rpartition(":")
            if not sep or not port_text.isdigit() or not host:
                raise _Refused(400, f"CONNECT needs host:port, not {target}")
            return method, host.strip("[]").lower(), int(port_text), None
        url = urllib.parse.urlsplit(target)
        if url.scheme == "https":
            raise _Refused(400, "https:// goes through CONNECT (set HTTPS_PROXY, not only HTTP_PROXY)")
        if url.scheme != "http" or not url.hostname:
            raise _Refused(400, f"a proxy request needs an absolute http:// URL, not {target[:100]}")
        try:
            port = url.port or 80
        except ValueError:
            raise _Refused(400, f"bad port in {target[:100]}") from None
        # Origin form to the server, without the proxy leg's own headers.
        path = url.path or "/"
        request_line = f"{method} {path}{'?' + url.query if url.query else ''} {version}".encode()
        headers = [h for h in lines[1:] if h and h.split(b":", 1)[0].strip().lower() not in _PROXY_HEADERS]
        return method, url.hostname.lower(), port, b"\r\n".join([request_line, *headers]) + b"\r\n\r\n"

    async def _resolve(self, host: str, port: int) -> tuple[str, int]:
        """The first address of ``host`` after checking them all; any refused address refuses the name."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            raise _Refused(502, f"cannot resolve {host}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        addresses = [(str(info[4][0]), int(info[4][1])) for info in infos]
        for address, _ in addresses:
            if (why := self.policy.refuse_address(host, address, port)) is not None:
                raise _Refused(403, why)
        return addresses[0]

    async def _connect(self, host: str, address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_connection(*address, limit=_CHUNK), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            raise _Refused(502, f"cannot connect to {host} ({address[0]}): {getattr(exc, 'strerror', None) or 'timed out'}") from None

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int], index: int) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                counts[index] += len(chunk)
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            writer.close()

    def _log(self, record: dict[str, Any]) -> None:
        target = f"{record['host']}:{record['port']}" if record["host"] else "?"
        if record["decision"] == "allowed":
            log.info("egress %s: %s -> %s allowed (%d B out, %d B in, %.1f s)", record["session"], target,
                     record["address"], record["bytes_out"], record["bytes_in"], record["seconds"])
        else:
            log.warning("egress %s: %s %s: %s", record["session"], target, record["decision"], record.get("reason"))
        if self.log_file is not None:
            line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}) + "\n"
            with self._log_lock, open(self.log_file, "a") as f:
                f.write(line)


def _reason_phrase(reason: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in reason)[:200]

