"""The asynchronous client: drives the shared operations with ``httpx.AsyncClient``.

Each method behaves as the :class:`SessionsClient` method of the same name;
only sending, sleeping and streaming are awaited here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, BinaryIO

import httpx

from .. import wire
from ._base import ClientBase, Operation, Send, Sink, Sleep, T
from ._streams import ProgressCallback, StreamEvent, UploadData
from ._transport import LoopbackTransport

__all__ = ["AsyncSessionsClient"]


class AsyncSessionsClient(ClientBase):
    """The ``asyncio`` twin of :class:`SessionsClient`.

    ``credential`` is an ``azure.identity.aio`` credential or a sync one (run in
    a thread while it fetches a token); with none, the sync
    ``azure.identity.DefaultAzureCredential`` is created on first use and run
    in a thread (``azure.identity.aio`` would need aiohttp)::

        async with AsyncSessionsClient(endpoint, token=token) as client:
            execution = await client.execute("my-session", "6 * 7")
    """

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient
    _sleep = staticmethod(asyncio.sleep)

    def _default_transport(self) -> Any:
        # A pool on this machine (the local pool) gets the lean transport of _transport.py.
        if self._endpoint.scheme == "http" and self.loopback:
            return LoopbackTransport()
        return None

    # -- driver -------------------------------------------------------------------

    async def _run(self, operation: Operation[T]) -> T:
        """Perform the steps of a shared operation until it returns."""
        with contextlib.closing(operation):
            outcome: Any = None
            error: Exception | None = None
            while True:
                try:
                    step = operation.throw(error) if error is not None else operation.send(outcome)
                except StopIteration as stop:
                    return stop.value
                outcome, error = None, None
                if isinstance(step, Sleep):
                    await self._sleep(step.seconds)
                    continue
                try:
                    outcome = await self._send(step)
                except httpx.RequestError as exc:
                    error = exc

    async def _send(self, step: Send) -> httpx.Response:
        response = await self._http.send(step.request, stream=step.stream)
        if step.stream and not response.is_success:
            try:  # error bodies are small; read them for the message
                await response.aread()
            finally:
                await response.aclose()
        return response

    def _stream_content(self, chunks: Iterable[bytes]) -> Any:
        # Chunks come from memory or a local file: reading 256 KiB blocks the
        # loop for well under a millisecond, not worth a thread per chunk.
        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return body()

    # -- executions ----------------------------------------------------------------

    async def execute(self, identifier: str, code: str, *, timeout: float | None = None, resend: bool = False) -> wire.Execution:
        """See :meth:`SessionsClient.execute`."""
        return await self._run(self._op_execute(identifier, code, timeout, resend))

    async def start_execution(self, identifier: str, code: str, *, timeout: float | None = None) -> wire.Execution:
        """See :meth:`SessionsClient.start_execution`."""
        return await self._run(self._op_start_execution(identifier, code, timeout))

    async def get_execution(self, identifier: str, execution_id: str) -> wire.Execution:
        """See :meth:`SessionsClient.get_execution`."""
        return await self._run(self._op_get_execution(identifier, execution_id))

    async def wait_execution(
        self, identifier: str, execution_id: str, *, poll_interval: float = 1.0, deadline: float | None = None
    ) -> wire.Execution:
        """See :meth:`SessionsClient.wait_execution`."""
        return await self._run(self._op_wait_execution(identifier, execution_id, poll_interval, deadline))

    # -- files ------------------------------------------------------------------------

    async def upload(
        self,
        identifier: str,
        data: UploadData,
        name: str,
        *,
        path: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> wire.RemoteFile:
        """See :meth:`SessionsClient.upload`."""
        return await self._run(self._op_upload(identifier, data, name, path, progress))

    async def download(self, identifier: str, name: str, *, path: str | None = None) -> bytes:
        """See :meth:`SessionsClient.download`."""
        return await self._run(self._op_download(identifier, name, path))

    async def download_to(
        self,
        identifier: str,
        name: str,
        fileobj: BinaryIO,
        *,
        path: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """See :meth:`SessionsClient.download_to`."""
        call = self._download_call(identifier, name, path, stream=True)
        sink = Sink(fileobj, progress)
        response = await self._run(self._exchange(call))
        try:
            async for chunk in response.aiter_bytes():
                sink.write(chunk)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, call) from exc
        finally:
            await response.aclose()
        return sink.written

    async def list_files(self, identifier: str, *, path: str | None = None, recursive: bool = False) -> list[wire.RemoteFile]:
        """See :meth:`SessionsClient.list_files`."""
        return await self._run(self._op_list_files(identifier, path, recursive))

    async def get_file(self, identifier: str, name: str, *, path: str | None = None) -> wire.RemoteFile:
        """See :meth:`SessionsClient.get_file`."""
        return await self._run(self._op_get_file(identifier, name, path))

    async def delete_file(self, identifier: str, name: str, *, path: str | None = None) -> None:
        """See :meth:`SessionsClient.delete_file`."""
        await self._run(self._op_delete_file(identifier, name, path))

    # -- sessions and pool ---------------------------------------------------------------

    async def get_session(self, identifier: str) -> wire.Session:
        """See :meth:`SessionsClient.get_session`."""
        return await self._run(self._op_get_session(identifier))

    async def delete_session(self, identifier: str) -> None:
        """See :meth:`SessionsClient.delete_session`."""
        await self._run(self._op_delete_session(identifier))

    async def stop_session(self, identifier: str) -> None:
        """See :meth:`SessionsClient.stop_session`."""
        await self._run(self._op_stop_session(identifier))

    async def list_sessions(self) -> list[wire.Session]:
        """See :meth:`SessionsClient.list_sessions`."""
        return await self._run(self._op_list_sessions())

    async def metadata(self) -> wire.PoolMetadata:
        """See :meth:`SessionsClient.metadata`."""
        return await self._run(self._op_metadata())

    # -- local-pool extensions ---------------------------------------------------------------

    def execute_stream(
        self,
        identifier: str,
        code: str,
        *,
        timeout: float | None = None,
        cell: wire.JupyterCell | None = None,
        session_etag: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """See :meth:`SessionsClient.execute_stream`; iterate with ``async for``."""
        call = self._stream_call(identifier, code, timeout, cell, session_etag)  # invalid arguments raise here

        async def events() -> AsyncIterator[StreamEvent]:
            decoder = self._decoder()
            response = await self._run(self._exchange(call))
            ready: list[StreamEvent] = []
            try:
                async for chunk in response.aiter_bytes():
                    if decoder.finished:
                        continue  # read the body's end so the connection is reused for the next cell
                    ready = decoder.feed(chunk)
                    if not decoder.finished:
                        for event in ready:
                            yield event
                if not decoder.finished:
                    ready = decoder.finish()
            except httpx.RequestError as exc:
                raise self._transport_error(exc, call) from exc
            finally:
                await response.aclose()
            for event in ready:
                yield event

        return events()

    async def comm(self, identifier: str, msg: wire.CommMessage) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """See :meth:`SessionsClient.comm`."""
        return await self._run(self._op_comm(identifier, msg))

    async def events(self, identifier: str, *, after: int = 0, wait: float = 0.0) -> tuple[list[dict[str, Any]], int]:
        """See :meth:`SessionsClient.events`."""
        return await self._run(self._op_events(identifier, after, wait))

    async def send_input(self, identifier: str, value: str) -> None:
        """See :meth:`SessionsClient.send_input`."""
        await self._run(self._op_send_input(identifier, value))

    async def interrupt(self, identifier: str) -> None:
        """See :meth:`SessionsClient.interrupt`."""
        await self._run(self._op_interrupt(identifier))

    async def complete(self, identifier: str, code: str, cursor_pos: int) -> dict[str, Any]:
        """See :meth:`SessionsClient.complete`."""
        return await self._run(self._op_complete(identifier, code, cursor_pos))

    async def inspect(self, identifier: str, code: str, cursor_pos: int, detail_level: int = 0) -> dict[str, Any]:
        """See :meth:`SessionsClient.inspect`."""
        return await self._run(self._op_inspect(identifier, code, cursor_pos, detail_level))

    # -- lifetime -----------------------------------------------------------------------------

    async def close(self) -> None:
        """See :meth:`SessionsClient.close`."""
        await self._http.aclose()
        await self._auth.aclose()

    async def __aenter__(self) -> AsyncSessionsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
