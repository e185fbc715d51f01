"""The synchronous client: drives the shared operations with ``httpx.Client``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import httpx

from .. import wire
from ._base import ClientBase, Operation, Send, Sink, Sleep, T
from ._streams import ProgressCallback, StreamEvent, UploadData

__all__ = ["SessionsClient"]


class SessionsClient(ClientBase):
    """A client for a session pool's data-plane API (Azure, or the local pool).

    ``endpoint`` is the pool management endpoint, e.g.
    ``https://eastus.dynamicsessions.io/subscriptions/S/resourceGroups/R/sessionPools/P``
    or ``http://127.0.0.1:8765`` for the local pool. Authenticate with a
    static ``token`` (the local pool) or an azure-identity ``credential``;
    with neither, ``DefaultAzureCredential`` is created on the first request.
    ``api_version`` selects the wire generation (:data:`API_VERSIONS`);
    operations the version lacks raise :class:`UnsupportedOperationError`
    before sending. ``transport`` is an ``httpx`` transport, e.g.
    ``httpx.MockTransport`` in tests; ``headers`` are added to every request.

    Used by the kernel for every cell, file transfer and session call; also
    usable on its own::

        with SessionsClient(endpoint, token=token) as client:
            print(client.execute("my-session", "6 * 7").result)
    """

    _http_class = httpx.Client
    _http: httpx.Client
    _sleep = staticmethod(time.sleep)

    # -- driver -------------------------------------------------------------------

    def _run(self, operation: Operation[T]) -> T:
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
                    self._sleep(step.seconds)
                    continue
                try:
                    outcome = self._send(step)
                except httpx.RequestError as exc:
                    error = exc

    def _send(self, step: Send) -> httpx.Response:
        response = self._http.send(step.request, stream=step.stream)
        if step.stream and not response.is_success:
            with contextlib.closing(response):  # error bodies are small; read them for the message
                response.read()
        return response

    def _stream_content(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        return chunks

    # -- executions ----------------------------------------------------------------

    def execute(self, identifier: str, code: str, *, timeout: float | None = None, resend: bool = False) -> wire.Execution:
        """Run ``code`` in session ``identifier`` and wait for the outcome.

        ``timeout`` is the execution deadline in seconds (default
        ``Timeouts.execution``, at most 220), sent as ``timeoutInSeconds``.
        ``resend=True`` declares the code safe to run twice: it is then retried
        like any idempotent request (after a transport error or a retryable
        status), not only when nothing reached the pool.
        A failing cell is not an exception: check :attr:`Execution.status`,
        ``stderr`` and ``error`` (a run the pool stopped at the deadline is
        a failed execution, the local pool's with error code ``Timeout``).
        :class:`ExecutionTimeoutError` means no answer came at all within
        the deadline plus ``Timeouts.margin``.
        """
        return self._run(self._op_execute(identifier, code, timeout, resend))

    def start_execution(self, identifier: str, code: str, *, timeout: float | None = None) -> wire.Execution:
        """Start ``code`` as an asynchronous execution (2024-10-02-preview and later).

        Returns at once, usually with status ``Running`` and an ``id`` for
        :meth:`get_execution` / :meth:`wait_execution`.
        """
        return self._run(self._op_start_execution(identifier, code, timeout))

    def get_execution(self, identifier: str, execution_id: str) -> wire.Execution:
        """The current state of an execution (``GET executions/{id}``)."""
        return self._run(self._op_get_execution(identifier, execution_id))

    def wait_execution(
        self, identifier: str, execution_id: str, *, poll_interval: float = 1.0, deadline: float | None = None
    ) -> wire.Execution:
        """Poll an execution every ``poll_interval`` s until it has finished.

        ``deadline`` is the most seconds to wait (default
        ``Timeouts.execution + Timeouts.margin``); then
        :class:`ExecutionTimeoutError` is raised.
        """
        return self._run(self._op_wait_execution(identifier, execution_id, poll_interval, deadline))

    # -- files ------------------------------------------------------------------------

    def upload(
        self,
        identifier: str,
        data: UploadData,
        name: str,
        *,
        path: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> wire.RemoteFile:
        """Upload ``data`` as ``/mnt/data/[path/]name``.

        ``data`` is bytes, a binary file object (streamed from its current
        position, never read whole) or a path. ``progress`` is called with
        the size of each chunk once sent (pass ``tqdm(...).update``). Over
        128 MB raises :class:`UploadTooLargeError` before sending.
        """
        return self._run(self._op_upload(identifier, data, name, path, progress))

    def download(self, identifier: str, name: str, *, path: str | None = None) -> bytes:
        """The content of ``/mnt/data/[path/]name``, in memory."""
        return self._run(self._op_download(identifier, name, path))

    def download_to(
        self,
        identifier: str,
        name: str,
        fileobj: BinaryIO,
        *,
        path: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Stream ``/mnt/data/[path/]name`` into ``fileobj``; returns the bytes written."""
        call = self._download_call(identifier, name, path, stream=True)
        sink = Sink(fileobj, progress)
        with contextlib.closing(self._run(self._exchange(call))) as response:
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
            except httpx.RequestError as exc:
                raise self._transport_error(exc, call) from exc
        return sink.written

    def list_files(self, identifier: str, *, path: str | None = None, recursive: bool = False) -> list[wire.RemoteFile]:
        """Files in ``/mnt/data[/path]``; ``recursive`` needs 2025-10-02-preview."""
        return self._run(self._op_list_files(identifier, path, recursive))

    def get_file(self, identifier: str, name: str, *, path: str | None = None) -> wire.RemoteFile:
        """Metadata of one file (2024-08-02-preview and later)."""
        return self._run(self._op_get_file(identifier, name, path))

    def delete_file(self, identifier: str, name: str, *, path: str | None = None) -> None:
        """Delete one file (2024-08-02-preview and later)."""
        self._run(self._op_delete_file(identifier, name, path))

    # -- sessions and pool (2025-02-02-preview and later) ---------------------------------

    def get_session(self, identifier: str) -> wire.Session:
        """Times and etag of a session (``GET session``)."""
        return self._run(self._op_get_session(identifier))

    def delete_session(self, identifier: str) -> None:
        """End a session now and free its pool slot (``DELETE session``)."""
        self._run(self._op_delete_session(identifier))

    def stop_session(self, identifier: str) -> None:
        """``POST .management/stopSession`` (documented for custom-container pools)."""
        self._run(self._op_stop_session(identifier))

    def list_sessions(self) -> list[wire.Session]:
        """Every session of the pool (``GET listSessions``, all pages)."""
        return self._run(self._op_list_sessions())

    def metadata(self) -> wire.PoolMetadata:
        """Runtimes, packages and kernel of the pool (``GET metadata``)."""
        return self._run(self._op_metadata())

    # -- local-pool extensions ---------------------------------------------------------------

    def execute_stream(
        self,
        identifier: str,
        code: str,
        *,
        timeout: float | None = None,
        cell: wire.JupyterCell | None = None,
        session_etag: str | None = None,
    ) -> Iterator[StreamEvent]:
        """Run ``code`` and yield its Jupyter output as it is produced (local pool only).

        The request is sent on the first ``next()``; the last event has
        ``type == "done"`` and the execution. Raises
        :class:`ExtensionUnavailableError` on a pool without the extension.

        ``cell`` runs the code as that notebook cell (pools with the
        ``jupyter-cells`` extension): the done event then carries the session
        kernel's ``execute_reply`` fields as ``reply``. ``session_etag`` (the
        ``etag`` of an earlier done event) runs it only in that same session:
        if the session ended or was replaced, :class:`SessionNotFoundError` is
        raised and nothing runs.
        """
        call = self._stream_call(identifier, code, timeout, cell, session_etag)  # invalid arguments raise here, not on next()

        def events() -> Iterator[StreamEvent]:
            decoder = self._decoder()
            with contextlib.closing(self._run(self._exchange(call))) as response:
                ready: list[StreamEvent] = []
                try:
                    for chunk in response.iter_bytes():
                        if decoder.finished:
                            continue  # read the body's end so the connection is reused for the next cell
                        ready = decoder.feed(chunk)
                        if not decoder.finished:
                            yield from ready
                    if not decoder.finished:
                        ready = decoder.finish()
                except httpx.RequestError as exc:
                    raise self._transport_error(exc, call) from exc
            yield from ready

        return events()

    def comm(self, identifier: str, msg: wire.CommMessage) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Deliver a frontend's comm message to the session's kernel (local pool, ``comms`` extension).

        Returns what the kernel published under the message until it was idle
        (each a dict with ``msgType``, ``content``, ``metadata``, base64
        ``buffers``) and, for ``comm_info_request``, the reply content.
        """
        return self._run(self._op_comm(identifier, msg))

    def events(self, identifier: str, *, after: int = 0, wait: float = 0.0) -> tuple[list[dict[str, Any]], int]:
        """What the session published outside its cells since event ``after`` (``comms`` extension).

        Waits up to ``wait`` seconds (at most 10) when there is nothing yet;
        returns the events (as :meth:`comm` gives outputs, plus ``seq`` and
        ``parentMsgId``) and the last event number, the next call's ``after``.
        """
        return self._run(self._op_events(identifier, after, wait))

    def send_input(self, identifier: str, value: str) -> None:
        """Answer the ``input()`` a streamed cell waits in (local pool, ``stdin`` extension).

        The stream announced it with a ``type == "stdin"`` event whose
        ``content`` has the ``prompt`` and ``password``. Raises
        :class:`ApiError` 409 when no cell of the session waits for input.
        """
        self._run(self._op_send_input(identifier, value))

    def interrupt(self, identifier: str) -> None:
        """Interrupt the session's running execution; its state is kept (local pool only)."""
        self._run(self._op_interrupt(identifier))

    def complete(self, identifier: str, code: str, cursor_pos: int) -> dict[str, Any]:
        """Jupyter ``complete_reply`` content for ``code`` at ``cursor_pos`` (local pool only)."""
        return self._run(self._op_complete(identifier, code, cursor_pos))

    def inspect(self, identifier: str, code: str, cursor_pos: int, detail_level: int = 0) -> dict[str, Any]:
        """Jupyter ``inspect_reply`` content for ``code`` at ``cursor_pos`` (local pool only)."""
        return self._run(self._op_inspect(identifier, code, cursor_pos, detail_level))

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close connections and a default credential the client created."""
        self._http.close()
        self._auth.close()

    def __enter__(self) -> SessionsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

