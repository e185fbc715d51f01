"""Streamed uploads and downloads (never whole in memory) and the NDJSON execution stream."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from azure_sessions_kernel import wire
from azure_sessions_kernel.client import (
    MAX_UPLOAD_BYTES,
    ConfigurationError,
    ExecutionStatus,
    ExecutionTimeoutError,
    ResponseFormatError,
    UploadTooLargeError,
)
from azure_sessions_kernel.client._streams import CHUNK_SIZE

from .helpers import SESSION, Recorder, body_stream

BIG = 32 * 1024 * 1024
#: Far below the size of what is moved: proof that it never sits in memory whole.
MEMORY_LIMIT = 8 * 1024 * 1024


class StreamingPool(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Consumes request bodies chunk by chunk into a file, as a server would."""

    def __init__(self, received: Path) -> None:
        self.received = received
        self.requests = 0

    def _answer(self, size: int) -> httpx.Response:
        return httpx.Response(200, json={"name": "big.bin", "type": "File", "sizeInBytes": size})

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        with self.received.open("wb") as sink:
            for chunk in request.stream:
                sink.write(chunk)
        return self._answer(self.received.stat().st_size)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        with self.received.open("wb") as sink:
            async for chunk in request.stream:
                sink.write(chunk)
        return self._answer(self.received.stat().st_size)


class SpyReader(io.RawIOBase):
    """A seekable file that records how much was asked of each read."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self.reads: list[int] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()
        super().close()


def big_file(path: Path) -> str:
    """Write BIG pseudo-random bytes in 1 MiB pieces; return their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(BIG // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def multipart_content_digest(received: Path) -> str:
    body = received.read_bytes()
    boundary = body[2 : body.index(b"\r\n")]
    content = body[body.index(b"\r\n\r\n") + 4 : -len(b"\r\n--" + boundary + b"--\r\n")]
    return hashlib.sha256(content).hexdigest()


def test_upload_streams_a_large_file(make_client, tmp_path):
    source = tmp_path / "big.bin"
    expected = big_file(source)
    pool = StreamingPool(tmp_path / "received")
    client = make_client(pool)
    progress: list[int] = []
    reader = SpyReader(source)

    tracemalloc.start()
    try:
        remote = client.upload(SESSION, reader, "big.bin", progress=progress.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < MEMORY_LIMIT
    assert max(reader.reads) <= CHUNK_SIZE and -1 not in reader.reads
    assert sum(progress) == BIG and max(progress) <= CHUNK_SIZE
    assert remote.size == (tmp_path / "received").stat().st_size
    assert multipart_content_digest(tmp_path / "received") == expected


def test_upload_from_a_path(make_client, tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    pool = StreamingPool(tmp_path / "received")
    make_client(pool).upload(SESSION, source, "data.bin")
    assert multipart_content_digest(tmp_path / "received") == hashlib.sha256(b"\x00\x01" * 1000).hexdigest()


def test_oversized_upload_is_refused_before_sending(make_client, tmp_path):
    sparse = tmp_path / "sparse.bin"
    with sparse.open("wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # no disk space used
    rec = Recorder()
    with pytest.raises(UploadTooLargeError, match="at most 134217728 bytes \\(128 MB\\).*HTTP 413") as caught:
        make_client(rec).upload(SESSION, sparse, "sparse.bin")
    assert rec.requests == [] and caught.value.status_code is None


def test_oversized_unsized_stream_is_stopped_while_sending(make_client, tmp_path):
    class Zeros(io.RawIOBase):  # non-seekable: its size is unknown until read
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return bytes(size)

    pool = StreamingPool(tmp_path / "received")
    with pytest.raises(UploadTooLargeError):
        make_client(pool).upload(SESSION, Zeros(), "endless.bin")
    assert pool.requests == 1 and (tmp_path / "received").stat().st_size <= MAX_UPLOAD_BYTES + CHUNK_SIZE


@pytest.mark.parametrize("data", ["text", io.StringIO("text"), 42])
def test_upload_data_must_be_binary(make_client, data):
    rec = Recorder()
    with pytest.raises(ConfigurationError):
        make_client(rec).upload(SESSION, data, "a.txt")
    assert rec.requests == []


class SpyWriter:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.writes: list[int] = []

    def write(self, chunk: bytes) -> int:
        self.writes.append(len(chunk))
        self.digest.update(chunk)
        return len(chunk)


def test_download_to_streams_a_large_file(make_client, kind):
    block = os.urandom(1024 * 1024)
    count = BIG // len(block)

    def chunks() -> Iterator[bytes]:
        yield from (block for _ in range(count))

    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, chunks)))
    sink, progress = SpyWriter(), []

    tracemalloc.start()
    try:
        written = make_client(rec).download_to(SESSION, "big.bin", sink, progress=progress.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert written == BIG == sum(progress)
    assert peak < MEMORY_LIMIT and max(sink.writes) <= len(block)
    assert sink.digest.hexdigest() == hashlib.sha256(block * count).hexdigest()


# --------------------------------------------------------------------------
# NDJSON execution stream (wire.py, end of module)
# --------------------------------------------------------------------------

EXECUTION = {"id": "e1", "identifier": SESSION, "executionType": "Synchronous", "status": "Succeeded", "result": {"stdout": "héllo\n", "stderr": "", "executionResult": 2}}
LINES = [
    {"type": "iopub", "msg_type": "stream", "content": {"name": "stdout", "text": "héllo\n"}},
    {"type": "iopub", "msg_type": "display_data", "content": {"data": {"text/plain": "<Figure>"}, "metadata": {}}},
    {"type": "progress", "percent": 50},  # an unknown type is passed on, not dropped
    {"type": "iopub", "msg_type": "execute_result", "content": {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 1}},
    {"type": "done", "status": "ok", "execution": EXECUTION},
]


def ndjson(lines: list[dict], *, final_newline: bool = True) -> bytes:
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    return (text + ("\n" if final_newline else "")).encode()


def in_pieces(data: bytes, size: int) -> Iterator[bytes]:
    # Odd sizes split lines, and the UTF-8 of 'é', across chunks.
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("piece", [1, 7, 4096])
@pytest.mark.parametrize("final_newline", [True, False])
def test_stream_events(make_client, kind, piece, final_newline):
    data = ndjson(LINES, final_newline=final_newline)
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: in_pieces(data, piece))))
    events = list(make_client(rec).execute_stream(SESSION, "print('héllo'); 1 + 1"))

    assert [(e.type, e.msg_type) for e in events] == [("iopub", "stream"), ("iopub", "display_data"), ("progress", None), ("iopub", "execute_result"), ("done", None)]
    assert events[0].content == {"name": "stdout", "text": "héllo\n"}
    assert events[2].content == {"type": "progress", "percent": 50}
    done = events[-1]
    assert done.done and done.status == "ok"
    assert (done.execution.status, done.execution.stdout, done.execution.result) == (ExecutionStatus.SUCCEEDED, "héllo\n", 2)


@pytest.mark.parametrize(
    "data, message",
    [
        (ndjson(LINES[:2]), "ended without its 'done' line"),
        (b'{"type": "iopub", "msg_type": "stream"\n', "not JSON"),
        (b'{"msg_type": "stream"}\n', "without a 'type'"),
        (b'{"type": "iopub", "content": {}}\n', "lacks 'msg_type'"),
        (b'{"type": "done", "execution": [1]}\n', "done line is malformed"),
    ],
)
def test_malformed_streams(make_client, kind, data, message):
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: iter([data]))))
    with pytest.raises(ResponseFormatError, match=message):
        list(make_client(rec).execute_stream(SESSION, "1"))


def test_a_stalled_stream_is_an_execution_timeout(make_client, kind):
    def stalls() -> Iterator[bytes]:
        yield ndjson(LINES[:1])
        raise httpx.ReadTimeout("stalled")

    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, stalls)))
    with pytest.raises(ExecutionTimeoutError, match="may still be running"):
        list(make_client(rec).execute_stream(SESSION, "while True: pass", timeout=5))


def test_stream_arguments_are_checked_at_once_and_sent_lazily(make_client):
    rec = Recorder()
    client = make_client(rec)
    target = getattr(client, "client", client)  # the client itself, not the test facade
    with pytest.raises(ConfigurationError):
        target.execute_stream(SESSION, "1", timeout=wire.MAX_EXECUTION_TIMEOUT + 1)
    target.execute_stream(SESSION, "1")
    assert rec.requests == []


def test_nothing_after_the_done_line_matters(make_client, kind):
    data = ndjson(LINES[-1:]) + b"not json, and never read as such\n"
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: in_pieces(data, 16))))
    events = list(make_client(rec).execute_stream(SESSION, "1"))
    assert [e.type for e in events] == ["done"]


# --------------------------------------------------------------------------
# The jupyter-cells extension: a cell's options out, its reply and etag back
# --------------------------------------------------------------------------

REPLY = {"status": "error", "execution_count": 7, "ename": "NameError", "evalue": "name 'x' is not defined",
         "traceback": ["Cell In[7], line 1", "NameError: name 'x' is not defined"], "payload": [], "user_expressions": {}}


def test_a_cell_request_carries_its_options_and_the_etag_precondition(make_client, kind):
    done = {"type": "done", "status": "error", "execution": EXECUTION, "etag": "e7a9", "reply": REPLY}
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: iter([ndjson([done])]))))
    cell = wire.JupyterCell(execution_count=7, silent=False, store_history=True, user_expressions={"n": "len(df)"})
    events = list(make_client(rec).execute_stream(SESSION, "x", cell=cell, session_etag="e7a9"))

    body = json.loads(rec.last.content)
    assert body["code"] == "x"
    assert body["jupyter"] == {"executionCount": 7, "silent": False, "storeHistory": True, "userExpressions": {"n": "len(df)"}}
    assert rec.last.headers["If-Match"] == '"e7a9"'
    assert events[-1].etag == "e7a9" and events[-1].reply == REPLY


def test_a_plain_stream_request_has_no_cell_and_no_precondition(make_client, kind):
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: iter([ndjson(LINES[-1:])]))))
    events = list(make_client(rec).execute_stream(SESSION, "1"))
    assert "jupyter" not in json.loads(rec.last.content) and "If-Match" not in rec.last.headers
    assert events[-1].reply is None and events[-1].etag is None


@pytest.mark.parametrize(
    "reply, message",
    [([1], "must be an object"), ({"ename": "X"}, "string 'status'"), ({"status": "ok", "traceback": "text"}, "'reply.traceback' must be a list"),
     ({"status": "ok", "user_expressions": []}, "'reply.user_expressions' must be a JSON object")],
)
def test_a_malformed_cell_reply_is_a_format_error(make_client, kind, reply, message):
    data = ndjson([{"type": "done", "status": "ok", "execution": EXECUTION, "reply": reply}])
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: iter([data]))))
    with pytest.raises(ResponseFormatError, match=message):
        list(make_client(rec).execute_stream(SESSION, "1", cell=wire.JupyterCell()))


@pytest.mark.parametrize("kwargs", [{"cell": {"executionCount": 1}}, {"session_etag": ""}, {"session_etag": 'a"b'}, {"session_etag": 5}])
def test_bad_cell_arguments_are_refused_before_sending(make_client, kwargs):
    rec = Recorder()
    client = make_client(rec)
    target = getattr(client, "client", client)
    with pytest.raises(ConfigurationError):
        target.execute_stream(SESSION, "1", **kwargs)
    assert rec.requests == []


# --------------------------------------------------------------------------
# Long cells and input(): the stdin extension, keepalives, no 220 s cap
# --------------------------------------------------------------------------


def test_an_input_request_is_an_event_and_the_answer_goes_to_the_input_route(make_client, kind):
    lines = [{"type": "stdin", "msg_type": "input_request", "content": {"prompt": "Name? ", "password": False}},
             {"type": "keepalive"}, LINES[-1]]
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: iter([ndjson(lines)]))), httpx.Response(204))
    client = make_client(rec)
    events = list(client.execute_stream(SESSION, "input()", cell=wire.JupyterCell(allow_stdin=True, timeout=0)))
    assert [(e.type, e.msg_type) for e in events] == [("stdin", "input_request"), ("keepalive", None), ("done", None)]
    assert events[0].content == {"prompt": "Name? ", "password": False}
    body = json.loads(rec.last.content)
    assert body["jupyter"]["allowStdin"] is True and body["jupyter"]["timeout"] == 0
    client.send_input(SESSION, "Ada")
    assert rec.last.url.path.endswith("/.local/executions/input") and json.loads(rec.last.content) == {"value": "Ada"}


def test_a_long_cell_stream_keeps_a_read_timeout_for_a_hung_pool(make_client, kind):
    rec = Recorder(lambda request: httpx.Response(200, content=body_stream(kind, lambda: iter([ndjson(LINES[-1:])]))))
    list(make_client(rec).execute_stream(SESSION, "1", cell=wire.JupyterCell(timeout=3600)))
    read = rec.last.extensions["timeout"]["read"]
    assert 3 * wire.STREAM_KEEPALIVE <= read < 3600, "keepalive lines let the read timeout stay short"
    assert json.loads(rec.last.content)["jupyter"]["timeout"] == 3600


@pytest.mark.parametrize("value", [5, b"bytes", "x" * (wire.MAX_INPUT_BYTES + 1)])
def test_a_bad_input_answer_is_refused_before_sending(make_client, value):
    rec = Recorder()
    with pytest.raises(ConfigurationError):
        make_client(rec).send_input(SESSION, value)
    assert rec.requests == []


@pytest.mark.parametrize("timeout", [-1, True, "soon"])
def test_a_bad_cell_timeout_is_refused_before_sending(make_client, timeout):
    rec = Recorder()
    client = make_client(rec)
    target = getattr(client, "client", client)
    with pytest.raises(ConfigurationError):
        target.execute_stream(SESSION, "1", cell=wire.JupyterCell(timeout=timeout))
    assert rec.requests == []
