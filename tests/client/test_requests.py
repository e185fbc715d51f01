"""Exact requests and parsed responses for every api-version, sync and async.

Each test is parametrised over ``wire.API_VERSIONS`` (and, via the
``make_client`` fixture, over both clients). Response bodies are copied from
the reference (``shared/reference/aca-sessions-api.md``); the section is
quoted beside each. Routes a version lacks must fail before anything is sent.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import pytest

from azure_sessions_kernel import wire
from azure_sessions_kernel.client import ExecutionStatus, UnsupportedOperationError

from .helpers import PREFIX, SESSION, TOKEN, Recorder

OLD = ("2024-02-02-preview", "2024-08-02-preview")  # code/execute generation
NEW = ("2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview")  # executions generation
MANAGED = ("2025-02-02-preview", "2025-10-02-preview")  # session, listSessions, metadata
CODE = "import math\nprint('hi')\nmath.factorial(5)"


def versions(selected: tuple[str, ...]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("version", selected)


def assert_sent(request: httpx.Request, method: str, route: str, query: str) -> None:
    """Method, percent-encoded path under the endpoint prefix, query in order, bearer token."""
    assert request.method == method
    assert request.url.raw_path.decode() == f"{PREFIX}/{route}?{query}"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def q(version: str, **extra: str) -> str:
    return "&".join([f"api-version={version}", f"identifier={SESSION}", *(f"{k}={v}" for k, v in extra.items())])


def multipart_part(request: httpx.Request) -> tuple[str, bytes]:
    """(Content-Disposition, content) of the single multipart part."""
    boundary = re.fullmatch(r"multipart/form-data; boundary=(\w+)", request.headers["content-type"]).group(1)
    body = request.read()
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert int(request.headers["content-length"]) == len(body)
    head, _, content = body[len(f"--{boundary}\r\n") : -len(f"\r\n--{boundary}--\r\n")].partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
    assert headers["Content-Type"] == "application/octet-stream"
    return headers["Content-Disposition"], content


# --------------------------------------------------------------------------
# Executions
# --------------------------------------------------------------------------

# §4.2 (LC-NB, pool 2024-02-02-preview): "$id" wrappers, Success, top-level properties.result.
EXEC_2402 = {"$id": "1", "properties": {"$id": "2", "status": "Success", "stdout": "hi\n", "stderr": "", "result": 120, "executionTimeInMilliseconds": 8}}
# §4.2 (SAMP-API 2024-08 sample, 202 Accepted): executionResult instead of result.
EXEC_2408 = {"properties": {"$id": "6c0f5a4e", "status": "Success", "stdout": "hi\n", "stderr": "", "executionResult": 120, "executionTimeInMilliseconds": 9}}
# §4.3 SessionCodeExecutionResource (202 in the 2024-10 spec, 200 later).
EXEC_NEW = {
    "id": "exec-7",
    "identifier": SESSION,
    "executionType": "Synchronous",
    "status": "Succeeded",
    "result": {"stdout": "hi\n", "stderr": "", "executionResult": 120, "executionTimeInMilliseconds": 4},
}
EXECUTE_ANSWERS = {
    "2024-02-02-preview": (200, EXEC_2402, 8),
    "2024-08-02-preview": (202, EXEC_2408, 9),
    "2024-10-02-preview": (202, EXEC_NEW, 4),
    "2025-02-02-preview": (200, EXEC_NEW, 4),
    "2025-10-02-preview": (200, EXEC_NEW, 4),
}


@versions(wire.API_VERSIONS)
def test_execute_request_and_result(make_client, version):
    status, body, duration = EXECUTE_ANSWERS[version]
    rec = Recorder(httpx.Response(status, json=body))
    execution = make_client(rec, api_version=version).execute(SESSION, CODE, timeout=30)

    if version in OLD:  # §4.2: properties-wrapped, lower-case enums
        assert_sent(rec.last, "POST", "code/execute", q(version))
        expected = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": CODE, "timeoutInSeconds": 30}}
    else:  # §4.3: flat body
        assert_sent(rec.last, "POST", "executions", q(version))
        expected = {"codeInputType": "Inline", "executionType": "Synchronous", "code": CODE, "timeoutInSeconds": 30}
    assert rec.last.headers["content-type"] == "application/json"
    assert json.loads(rec.last.content) == expected
    assert (execution.status, execution.stdout, execution.result, execution.duration_ms) == (ExecutionStatus.SUCCEEDED, "hi\n", 120, duration)


@versions(NEW)
def test_start_get_and_wait_execution(make_client, version):
    # §4.3 "Asynchronous execution": immediate answer with status Running, then GET executions/{id}.
    running = {"id": "exec/1", "identifier": SESSION, "executionType": "Asynchronous", "status": "Running"}
    done = {**running, "status": "Succeeded", "result": {"stdout": "", "stderr": "", "executionResult": 3, "executionTimeInMilliseconds": 1200}}
    rec = Recorder(httpx.Response(202, json=running), httpx.Response(200, json=running), httpx.Response(200, json=done))
    client = make_client(rec, api_version=version)

    started = client.start_execution(SESSION, "import time; time.sleep(1); 3", timeout=60)
    assert json.loads(rec.last.content) == {"codeInputType": "Inline", "executionType": "Asynchronous", "code": "import time; time.sleep(1); 3", "timeoutInSeconds": 60}
    assert (started.status, started.id, started.asynchronous) == (ExecutionStatus.RUNNING, "exec/1", True)

    finished = client.wait_execution(SESSION, started.id, poll_interval=0.25)
    # The execution id is one path segment, whatever it contains.
    assert_sent(rec.requests[1], "GET", "executions/exec%2F1", q(version))
    assert len(rec.requests) == 3 and client.sleeps == [0.25]
    assert (finished.status, finished.result) == (ExecutionStatus.SUCCEEDED, 3)


@versions(OLD)
@pytest.mark.parametrize("call", ["start_execution", "get_execution"])
def test_asynchronous_execution_needs_2024_10(make_client, version, call):
    rec = Recorder()
    client = make_client(rec, api_version=version)
    with pytest.raises(UnsupportedOperationError, match="2024-10-02-preview or later.*" + version):
        getattr(client, call)(SESSION, "1")
    assert rec.requests == []


def test_execute_polls_when_the_pool_answers_before_the_code_finished(make_client):
    # The specs mark POST executions as a long-running operation (§4.3, final-state-via operation-location).
    running = {"id": "exec-9", "identifier": SESSION, "executionType": "Synchronous", "status": "Running"}
    done = {**running, "status": "Failed", "result": {"stdout": "", "stderr": "ZeroDivisionError", "executionResult": None}}
    rec = Recorder(httpx.Response(202, json=running), httpx.Response(200, json=done))
    execution = make_client(rec).execute(SESSION, "1/0")
    assert [r.method for r in rec.requests] == ["POST", "GET"]
    assert execution.status is ExecutionStatus.FAILED and execution.stderr == "ZeroDivisionError"


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

# §5.1 upload/list shape of 2024-02-02-preview (also what 2024-08 pools answer, §1).
FILE_2402 = {"$id": "1", "value": [{"$id": "2", "properties": {"$id": "3", "filename": "data.csv", "size": 4, "lastModifiedTime": "2024-05-02T07:21:07.9922617Z"}}]}
# §5.3 / SAMP-API: one SessionResourceFile.
FILE_NEW = {"name": "README2.md", "sizeInBytes": 133, "lastModifiedAt": "2024-11-02T12:33:05.677Z", "contentType": "text/markdown; charset=utf-8", "type": "File"}


@versions(wire.API_VERSIONS)
def test_upload_request_and_result(make_client, version):
    rec = Recorder(httpx.Response(200, json=FILE_2402 if version in OLD else FILE_NEW))
    remote = make_client(rec, api_version=version).upload(SESSION, b"a,b\n", "data.csv", path="inputs")

    disposition, content = multipart_part(rec.last)
    assert content == b"a,b\n"
    if version in OLD:  # no path query: the folder travels in the multipart filename (§5.1)
        assert_sent(rec.last, "POST", "files/upload", q(version))
        assert disposition == 'form-data; name="file"; filename="inputs/data.csv"'
        assert (remote.name, remote.size, remote.last_modified) == ("data.csv", 4, dt.datetime(2024, 5, 2, 7, 21, 7, 992261, tzinfo=dt.timezone.utc))
    else:
        assert_sent(rec.last, "POST", "files", q(version, path="inputs"))
        assert disposition == 'form-data; name="file"; filename="data.csv"'
        assert (remote.name, remote.size, remote.content_type) == ("README2.md", 133, "text/markdown; charset=utf-8")


@versions(wire.API_VERSIONS)
def test_download_route(make_client, version):
    rec = Recorder(httpx.Response(200, content=b"\x89PNG...", headers={"content-type": "application/octet-stream"}))
    data = make_client(rec, api_version=version).download(SESSION, "plot.png", path="out")
    assert data == b"\x89PNG..."
    if version in OLD:  # §5.1: files/content/{folder/name}
        assert_sent(rec.last, "GET", "files/content/out/plot.png", q(version))
    else:  # §5.3: files/{name}/content?path=
        assert_sent(rec.last, "GET", "files/plot.png/content", q(version, path="out"))


@versions(wire.API_VERSIONS)
def test_list_files(make_client, version):
    if version in OLD:  # §5.1 list: value[].properties, .NET 7-digit timestamps
        body = {"$id": "1", "value": [FILE_2402["value"][0], {"$id": "4", "properties": {"$id": "5", "filename": "/mnt/data/out/plot.png", "size": 9, "lastModifiedTime": "2024-05-02T07:21:08.1Z"}}]}
        expected = [("", "data.csv", 4), ("out", "plot.png", 9)]
    else:  # §5.3 list: {"value": [...], "nextLink": null}
        body = {"value": [FILE_NEW], "nextLink": None}
        expected = [("", "README2.md", 133)]
    rec = Recorder(httpx.Response(200, json=body))
    files = make_client(rec, api_version=version).list_files(SESSION, path="/mnt/data/out")
    assert_sent(rec.last, "GET", "files", q(version, path="out"))
    assert [(f.directory, f.name, f.size) for f in files] == expected


def test_recursive_listing_on_2025_10(make_client):
    # §5.4 SessionResourceFiles_List_Recursive (SPEC-2510a), verbatim but for the elided fields.
    body = {
        "value": [
            {"name": "directory-level1", "directory": "", "type": "directory", "sizeInBytes": 4096, "lastModifiedAt": "2024-05-29T02:17:25.902Z", "contentType": "application/octet-stream"},
            {"name": "testfile.yaml", "directory": "level1/level2", "type": "File", "contentType": "application/yaml", "sizeInBytes": 4, "lastModifiedAt": "2024-05-29T02:17:25.902Z"},
        ],
        "nextLink": None,
    }
    rec = Recorder(httpx.Response(200, json=body))
    files = make_client(rec, api_version="2025-10-02-preview").list_files(SESSION, path="test-directory", recursive=True)
    assert_sent(rec.last, "GET", "files", q("2025-10-02-preview", path="test-directory", recursive="true"))
    assert [(f.path, f.is_directory) for f in files] == [("directory-level1", True), ("level1/level2/testfile.yaml", False)]


@versions(wire.API_VERSIONS[:-1])
def test_recursive_listing_needs_2025_10(make_client, version):
    rec = Recorder()
    with pytest.raises(UnsupportedOperationError, match="2025-10-02-preview"):
        make_client(rec, api_version=version).list_files(SESSION, recursive=True)
    assert rec.requests == []


def test_list_follows_next_link_on_the_pool_only(make_client):
    page2 = f"https://eastus.dynamicsessions.io{PREFIX}/files?api-version=2025-10-02-preview&identifier={SESSION}&skip=1"
    rec = Recorder(httpx.Response(200, json={"value": [FILE_NEW], "nextLink": page2}), httpx.Response(200, json={"value": [{**FILE_NEW, "name": "b.md"}], "nextLink": None}))
    files = make_client(rec).list_files(SESSION)
    assert [f.name for f in files] == ["README2.md", "b.md"]
    assert str(rec.requests[1].url) == page2 and rec.requests[1].headers["authorization"] == f"Bearer {TOKEN}"


# §5.2 (2024-08 samples): GET files/{name} wraps one file in value[].properties; DELETE answers a message.
FILE_2408 = {"value": [{"$id": "", "properties": {"$id": "", "filename": "a b#?.txt", "size": 10, "lastModifiedTime": "2024-08-02T10:00:00.1234567Z"}}]}


@versions(wire.API_VERSIONS[1:])
def test_get_and_delete_file(make_client, version):
    body, deleted = (FILE_2408, httpx.Response(200, json={"message": "file deleted successfully"})) if version in OLD else ({**FILE_NEW, "name": "a b#?.txt"}, httpx.Response(204))
    rec = Recorder(httpx.Response(200, json=body), deleted)
    client = make_client(rec, api_version=version)

    remote = client.get_file(SESSION, "a b#?.txt", path="notes")
    client.delete_file(SESSION, "a b#?.txt", path="notes")
    # The name is one percent-encoded segment: '#' and '?' cannot start a fragment or query.
    assert_sent(rec.requests[0], "GET", "files/a%20b%23%3F.txt", q(version, path="notes"))
    assert_sent(rec.requests[1], "DELETE", "files/a%20b%23%3F.txt", q(version, path="notes"))
    assert remote.name == "a b#?.txt"


@pytest.mark.parametrize("call", ["get_file", "delete_file"])
def test_file_metadata_routes_need_2024_08(make_client, call):
    rec = Recorder()
    with pytest.raises(UnsupportedOperationError, match="2024-08-02-preview"):
        getattr(make_client(rec, api_version="2024-02-02-preview"), call)(SESSION, "a.txt")
    assert rec.requests == []


# --------------------------------------------------------------------------
# Sessions and pool metadata (§6)
# --------------------------------------------------------------------------

SESSION_BODY = {"identifier": SESSION, "createdAt": "2025-03-01T10:00:00Z", "lastAccessedAt": "2025-03-01T10:05:00Z", "expireAt": "2025-03-01T10:10:00Z", "etag": "c0ffee"}
METADATA_BODY = {
    # §6 GET /metadata; the spec example shows node/axios/IJavascript.
    "runtimes": [{"name": "node", "version": "20.11.0"}],
    "preInstalledPackages": [{"name": "axios", "version": "1.6.7"}],
    "createdAt": "2025-02-02T00:00:00Z",
    "lastUpdatedAt": "2025-02-03T00:00:00Z",
    "jupyterKernel": {"name": "IJavascript", "version": "5.2.1", "projectUrl": "https://github.com/n-riesco/ijavascript", "description": "JavaScript kernel"},
}


@versions(MANAGED)
def test_session_management_routes(make_client, version):
    rec = Recorder(
        httpx.Response(200, json=SESSION_BODY),
        httpx.Response(204),
        httpx.Response(200, json={"sessions": [SESSION_BODY]}),
        httpx.Response(200, json=METADATA_BODY),
        httpx.Response(200, text=f"Session {SESSION} in session pool P stopped."),  # §6 stopSession: 200 text/plain
    )
    client = make_client(rec, api_version=version)

    session = client.get_session(SESSION)
    client.delete_session(SESSION)
    sessions = client.list_sessions()
    metadata = client.metadata()
    client.stop_session(SESSION)

    assert_sent(rec.requests[0], "GET", "session", q(version))
    assert_sent(rec.requests[1], "DELETE", "session", q(version))
    assert_sent(rec.requests[2], "GET", "listSessions", f"api-version={version}")  # pool-wide: no identifier
    assert_sent(rec.requests[3], "GET", "metadata", f"api-version={version}")
    assert_sent(rec.requests[4], "POST", ".management/stopSession", q(version))
    assert (session.etag, session.expires_at) == ("c0ffee", dt.datetime(2025, 3, 1, 10, 10, tzinfo=dt.timezone.utc))
    assert [s.identifier for s in sessions] == [SESSION]
    assert (metadata.runtimes, metadata.jupyter_kernel["name"], metadata.extensions) == ((("node", "20.11.0"),), "IJavascript", None)


@versions(wire.API_VERSIONS[:2] + ("2024-10-02-preview",))
@pytest.mark.parametrize("call, args", [("get_session", (SESSION,)), ("delete_session", (SESSION,)), ("stop_session", (SESSION,)), ("list_sessions", ()), ("metadata", ())])
def test_session_management_needs_2025_02(make_client, version, call, args):
    rec = Recorder()
    with pytest.raises(UnsupportedOperationError, match=f"{call} needs api-version 2025-02-02-preview or later; this client uses {version}"):
        getattr(make_client(rec, api_version=version), call)(*args)
    assert rec.requests == []


# --------------------------------------------------------------------------
# Local-pool extensions (wire.py, end of module): same routes on every version
# --------------------------------------------------------------------------


@versions(wire.API_VERSIONS)
def test_extension_routes(make_client, version):
    done = {"type": "done", "status": "ok", "execution": EXECUTE_ANSWERS[version][1]}
    rec = Recorder(
        httpx.Response(200, content=json.dumps(done).encode() + b"\n", headers={"content-type": "application/x-ndjson"}),
        httpx.Response(204),
        httpx.Response(200, json={"matches": ["factorial"], "cursor_start": 5, "cursor_end": 9, "metadata": {}, "status": "ok"}),
        httpx.Response(200, json={"status": "ok", "found": True, "data": {"text/plain": "factorial(n)"}, "metadata": {}}),
    )
    client = make_client(rec, api_version=version)

    events = list(client.execute_stream(SESSION, CODE, timeout=30))
    client.interrupt(SESSION)
    completion = client.complete(SESSION, "math.fact", 9)
    inspection = client.inspect(SESSION, "math.factorial", 14, detail_level=1)

    assert_sent(rec.requests[0], "POST", ".local/executions/stream", q(version))
    assert json.loads(rec.requests[0].content) == wire.render_execute_request(version, wire.ExecutionRequest(CODE, 30))
    assert_sent(rec.requests[1], "POST", ".local/executions/interrupt", q(version))
    assert_sent(rec.requests[2], "POST", ".local/complete", q(version))
    assert json.loads(rec.requests[2].content) == {"code": "math.fact", "cursor_pos": 9}
    assert json.loads(rec.requests[3].content) == {"code": "math.factorial", "cursor_pos": 14, "detail_level": 1}
    assert [(e.type, e.status, e.execution.result) for e in events] == [("done", "ok", 120)]
    assert completion["matches"] == ["factorial"] and inspection["found"] is True
