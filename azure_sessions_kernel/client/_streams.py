"""Streamed bodies: the multipart upload we send and the NDJSON stream we read.

Both are plain synchronous objects shared by the two clients: the upload is
an iterator of byte chunks (the async client wraps it), the NDJSON decoder
is fed whatever chunks the response yields.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from .. import wire
from ._exceptions import ConfigurationError, ResponseFormatError, UploadTooLargeError

__all__ = ["StreamEvent"]

#: Bytes read from an upload source at a time: small enough to never hold a
#: large file in memory, large enough to keep per-chunk overhead low.
CHUNK_SIZE = 256 * 1024

UploadData = bytes | bytearray | memoryview | BinaryIO | os.PathLike[str]
ProgressCallback = Callable[[int], object]


def too_large(size: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"The upload is {size} bytes; Azure Container Apps sessions accept at most "
        f"{wire.MAX_UPLOAD_BYTES} bytes (128 MB) per file and answer HTTP 413 beyond that, "
        "so it was not sent. Split the file, or compress it and unpack it in the session.",
        code="RequestEntityTooLarge",
    )


def _quote_filename(name: str) -> str:
    # The escaping browsers (and httpx) use inside a quoted-string parameter.
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class UploadBody:
    """A ``multipart/form-data`` body with one part, field ``file`` (reference §5).

    The source is bytes, a binary file object (read in :data:`CHUNK_SIZE`
    pieces from its current position, never as a whole) or a path (opened
    here, closed by :meth:`close`). Sizes are checked before sending when
    known and while sending otherwise. Use as a context manager.
    """

    def __init__(self, data: UploadData, filename: str, progress: ProgressCallback | None = None) -> None:
        self._progress = progress
        self._opened: BinaryIO | None = None
        self._buffer: memoryview | None = None
        self._file: BinaryIO | None = None
        self._start = 0
        self.size: int | None
        self.rewindable: bool
        #: Set once a byte of the source has been read: an unrewindable body
        #: can then never be sent again.
        self.started = False
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._buffer = memoryview(data).cast("B")
            self.size, self.rewindable = len(self._buffer), True
        elif isinstance(data, os.PathLike):
            self._file = self._opened = open(data, "rb")  # noqa: SIM115 - closed by close()
            self.size, self.rewindable = os.fstat(self._opened.fileno()).st_size, True
        elif isinstance(data, str):
            raise ConfigurationError("upload data must be bytes, a binary file object or a pathlib.Path; a str is ambiguous.")
        elif isinstance(data, io.TextIOBase) or not callable(getattr(data, "read", None)):
            raise ConfigurationError(f"upload data must be bytes, a binary file object or a pathlib.Path, got {type(data).__name__}.")
        else:
            self._file = data
            self.size, self.rewindable = self._remaining_size(data)
        if self.size is not None and self.size > wire.MAX_UPLOAD_BYTES:
            self.close()
            raise too_large(self.size)
        boundary = os.urandom(16).hex()
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{_quote_filename(filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()

    def _remaining_size(self, f: BinaryIO) -> tuple[int | None, bool]:
        try:
            if not f.seekable():
                return None, False
            self._start = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(self._start)
        except (AttributeError, OSError, ValueError):
            return None, False
        return end - self._start, True

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.size is not None:
            headers["Content-Length"] = str(len(self._head) + self.size + len(self._tail))
        return headers

    def rewind(self) -> None:
        """Prepare to send again from the start (only when :attr:`rewindable`)."""
        if self._file is not None and self.rewindable:
            self._file.seek(self._start)

    def chunks(self) -> Iterator[bytes]:
        """The body, chunk by chunk; ``progress`` hears of each data chunk once sent."""
        yield self._head
        sent = 0
        for chunk in self._data():
            sent += len(chunk)
            if sent > wire.MAX_UPLOAD_BYTES:
                raise too_large(sent)
            yield chunk
            # The generator resumes only when the transport wants the next
            # chunk, i.e. once this one has been written.
            if self._progress is not None:
                self._progress(len(chunk))
        yield self._tail

    def _data(self) -> Iterator[bytes]:
        if self._buffer is not None:
            for offset in range(0, len(self._buffer), CHUNK_SIZE):
                yield bytes(self._buffer[offset : offset + CHUNK_SIZE])
            return
        assert self._file is not None
        left = self.size  # read no more than announced in Content-Length
        while left is None or left > 0:
            self.started = True
            chunk = self._file.read(CHUNK_SIZE if left is None else min(CHUNK_SIZE, left))
            if not chunk:
                break
            if not isinstance(chunk, (bytes, bytearray)):
                raise ConfigurationError("upload file objects must be opened in binary mode ('rb').")
            if left is not None:
                left -= len(chunk)
            yield bytes(chunk)
        if left:  # the file shrank after we measured it
            raise ConfigurationError(f"The upload source ended {left} bytes before its announced size.")

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def __enter__(self) -> UploadBody:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class StreamEvent:
    """One line of the local pool's ``.local/executions/stream`` response.

    ``type == "iopub"``: ``msg_type`` is the Jupyter message type (``stream``,
    ``display_data``, ``execute_result``, ``error``, …) and ``content`` its
    Jupyter content, unchanged. ``type == "stdin"``: ``msg_type`` is
    ``input_request`` (``content``: ``prompt``, ``password``); answer it with
    ``send_input``. ``type == "keepalive"`` says only that the cell still runs. ``type == "done"`` is the last event:
    ``status`` is ``ok``/``error``/``aborted``/``timeout``, ``execution``
    the final execution resource, ``etag`` the session's (for
    ``session_etag``) and, for a ``cell`` request, ``reply`` the session
    kernel's ``execute_reply`` fields (``status``, ``ename``, ``evalue``,
    ``traceback``, ``payload``, ``user_expressions``; ``None`` when the
    kernel never answered). Unknown types are passed on with the whole line
    as ``content`` rather than dropped.
    """

    type: str
    msg_type: str | None = None
    content: Mapping[str, Any] | None = None
    #: A comm message's metadata and binary buffers (base64), as the session sent them.
    metadata: Mapping[str, Any] | None = None
    buffers: tuple[str, ...] = ()
    execution: wire.Execution | None = None
    status: str | None = None
    etag: str | None = None
    reply: Mapping[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.type == "done"


class NdjsonDecoder:
    """Turns response chunks into :class:`StreamEvent` s, one per complete line."""

    def __init__(self, version: wire.ApiVersion) -> None:
        self._version = version
        self._pending = b""
        self._done = False

    @property
    def finished(self) -> bool:
        """The ``done`` line has been decoded; nothing after it matters."""
        return self._done

    def feed(self, data: bytes) -> list[StreamEvent]:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        events = []
        for line in lines:
            if line.strip() and not self._done:
                events.append(self._event(line))
        return events

    def finish(self) -> list[StreamEvent]:
        """Events of a last line without a newline; the stream must have said it was done."""
        rest, self._pending = self._pending, b""
        events = [self._event(rest)] if rest.strip() and not self._done else []
        if not self._done:
            raise ResponseFormatError("The execution stream ended without its 'done' line; the pool may have stopped.")
        return events

    def _event(self, line: bytes) -> StreamEvent:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ResponseFormatError(f"The execution stream sent a line that is not JSON: {exc}.") from None
        if not isinstance(obj, Mapping) or not isinstance(obj.get("type"), str):
            raise ResponseFormatError("The execution stream sent a line without a 'type'.")
        kind = obj["type"]
        if kind in ("iopub", "stdin"):
            content = obj.get("content")
            if not isinstance(obj.get("msg_type"), str) or not isinstance(content, Mapping):
                raise ResponseFormatError(f"An {kind} line of the execution stream lacks 'msg_type' or 'content'.")
            metadata, buffers = obj.get("metadata"), obj.get("buffers") or []
            if (metadata is not None and not isinstance(metadata, Mapping)) or not isinstance(buffers, list) or not all(isinstance(b, str) for b in buffers):
                raise ResponseFormatError(f"An {kind} line of the execution stream has a malformed 'metadata' or 'buffers'.")
            return StreamEvent(kind, msg_type=obj["msg_type"], content=content, metadata=metadata, buffers=tuple(buffers))
        if kind == "done":
            execution = obj.get("execution")
            try:
                parsed = wire.parse_execution(self._version, execution) if execution is not None else None
            except wire.ContractError as exc:
                raise ResponseFormatError(f"The execution stream's done line is malformed: {exc.message}") from None
            try:
                reply = wire.parse_cell_reply(obj["reply"]) if obj.get("reply") is not None else None
            except wire.ContractError as exc:
                raise ResponseFormatError(f"The execution stream's done line is malformed: {exc.message}") from None
            status, etag = obj.get("status"), obj.get("etag")
            self._done = True
            return StreamEvent(
                kind,
                execution=parsed,
                status=status if isinstance(status, str) else None,
                etag=etag if isinstance(etag, str) and etag else None,
                reply=reply,
            )
        return StreamEvent(kind, content=obj)
