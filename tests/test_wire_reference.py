"""Pin ``wire.py`` to raw JSON copied from the reference, in both directions.

Client and pool both build on ``wire``; a mistake they share would pass
every round trip between them. These tests compare against the reference
(``shared/reference/aca-sessions-api.md``, section quoted at each sample)
instead: ``render_*`` must produce the documented shapes, ``parse_*`` must
read every documented sample.

Timestamps are the one thing compared by value rather than by text: the
samples themselves use 3 and 7 fractional digits, ``format_time`` writes 6.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from azure_sessions_kernel import wire
from azure_sessions_kernel.wire import (
    ContractError,
    ErrorInfo,
    Execution,
    ExecutionRequest,
    ExecutionStatus,
    PoolMetadata,
    RemoteFile,
    Session,
)

OLD = ("2024-02-02-preview", "2024-08-02-preview")
NEW = ("2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview")
TIME_KEYS = {"lastModifiedTime", "lastModifiedAt", "last_modified_time", "createdAt", "lastAccessedAt", "expireAt", "expiresAt", "lastUpdatedAt"}


def raw(text: str) -> Any:
    """JSON exactly as the reference prints it."""
    return json.loads(text)


def same_times(rendered: Any, sample: Any) -> Any:
    """``rendered`` with each timestamp replaced by the sample's text when both mean the same instant."""
    if isinstance(rendered, dict) and isinstance(sample, dict):
        out = {}
        for key, value in rendered.items():
            if key in TIME_KEYS and key in sample and wire.parse_time(value) == wire.parse_time(sample[key]) is not None:
                out[key] = sample[key]
            else:
                out[key] = same_times(value, sample.get(key))
        return out
    if isinstance(rendered, list) and isinstance(sample, list) and len(rendered) == len(sample):
        return [same_times(r, s) for r, s in zip(rendered, sample)]
    return rendered


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------
# Execute requests (§4.2, §4.3)
# --------------------------------------------------------------------------

# §4.2: all documented clients wrap in properties; SK-PY adds timeoutInSeconds.
REQUEST_2402 = raw('{"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "print(1)", "timeoutInSeconds": 100}}')
# §4.3: flat body of the specs and samples.
REQUEST_2410 = raw('{"codeInputType": "Inline", "executionType": "Synchronous", "code": "print(1)", "timeoutInSeconds": 100}')


@pytest.mark.parametrize("version", wire.API_VERSIONS)
def test_render_execute_request(version):
    body = wire.render_execute_request(version, ExecutionRequest("print(1)", 100))
    assert body == (REQUEST_2402 if version in OLD else REQUEST_2410)


def test_render_execute_request_asynchronous_and_2025_10_options():
    request = ExecutionRequest("x", 30, asynchronous=True, output_streams_max_length=100, return_jupyter_format=True, use_empty_kernel=True)
    assert wire.render_execute_request("2025-10-02-preview", request) == raw(
        '{"codeInputType": "Inline", "executionType": "Asynchronous", "code": "x", "timeoutInSeconds": 30,'
        ' "outputStreamsMaxLength": 100, "returnJupyterFormatExecutionResult": true, "useEmptyKernel": true}'
    )
    # The options do not exist before 2025-10-02-preview (§4.3 table) and are not sent.
    assert wire.render_execute_request("2025-02-02-preview", request) == raw('{"codeInputType": "Inline", "executionType": "Asynchronous", "code": "x", "timeoutInSeconds": 30}')


@pytest.mark.parametrize(
    "body, expected",
    [
        (REQUEST_2402, ExecutionRequest("print(1)", 100)),
        (REQUEST_2410, ExecutionRequest("print(1)", 100)),
        # §4.1 legacy field name; LI-TS sends pythonCode and identifier inside properties.
        (raw('{"properties": {"identifier": "s", "codeInputType": "inline", "executionType": "synchronous", "pythonCode": "1+1"}}'), ExecutionRequest("1+1", 220)),
        # §4.2: SAMP-API capitalises; any case is accepted.
        (raw('{"properties": {"codeInputType": "INLINE", "executionType": "Synchronous", "code": "1"}}'), ExecutionRequest("1", 220)),
        # §4.3: the Azure CLI wraps its /executions body; KO-LAB uses 600 s, over the 220 s cap.
        (raw('{"properties": {"codeInputType": "inline", "executionType": "synchronous", "timeoutInSeconds": 600, "code": "2"}}'), ExecutionRequest("2", 220)),
        # §4.3 codeInputType InlineBase64 (SAMP-API JS tutorial).
        ({"codeInputType": "InlineBase64", "executionType": "Synchronous", "code": base64.b64encode("print('é')".encode()).decode(), "timeoutInSeconds": 5}, ExecutionRequest("print('é')", 5)),
        ({"code": "3", "timeoutInSeconds": "12"}, ExecutionRequest("3", 12)),
    ],
)
def test_parse_execute_request_reads_what_clients_send(body, expected):
    assert wire.parse_execute_request("2024-10-02-preview", body) == expected


def test_parse_execute_request_2025_10_options():
    body = raw('{"code": "x", "timeoutInSeconds": 9, "executionType": "asynchronous", "returnJupyterFormat": true, "useEmptyKernel": "true"}')
    # The 2510 examples name the Jupyter flag returnJupyterFormat (§4.3 "name mismatch").
    assert wire.parse_execute_request("2025-10-02-preview", body) == ExecutionRequest("x", 9, True, 4096, True, True)
    assert wire.parse_execute_request("2025-02-02-preview", body) == ExecutionRequest("x", 9, True, None, False, False)


@pytest.mark.parametrize(
    "version, body, message",
    [
        ("2024-10-02-preview", ["code"], "must be a JSON object"),
        ("2024-10-02-preview", {"properties": "x"}, "'properties' must be a JSON object"),
        ("2024-10-02-preview", {"codeInputType": "Inline"}, "'code' is required"),
        ("2024-10-02-preview", {"code": 42}, "'code' must be a string"),
        ("2024-10-02-preview", {"code": "1", "codeInputType": "File"}, "codeInputType"),
        ("2024-10-02-preview", {"code": "%%%", "codeInputType": "InlineBase64"}, "base64"),
        ("2024-10-02-preview", {"code": "1", "executionType": "Later"}, "executionType"),
        ("2024-10-02-preview", {"code": "1", "timeoutInSeconds": True}, "timeoutInSeconds"),
        ("2024-10-02-preview", {"code": "1", "timeoutInSeconds": 0}, "timeoutInSeconds"),
        ("2024-10-02-preview", {"code": "1", "timeoutInSeconds": 1.5}, "timeoutInSeconds"),
        ("2024-10-02-preview", {"code": "1", "timeoutInSeconds": "soon"}, "timeoutInSeconds"),
        ("2025-10-02-preview", {"code": "1", "useEmptyKernel": "maybe"}, "useEmptyKernel"),
        ("2025-10-02-preview", {"shellCommand": "ls"}, "Shell pools"),
        ("2024-02-02-preview", {"code": "1", "executionType": "Asynchronous"}, "needs api-version 2024-10-02-preview"),
    ],
)
def test_parse_execute_request_rejects(version, body, message):
    with pytest.raises(ContractError, match=message) as caught:
        wire.parse_execute_request(version, body)
    assert caught.value.status == 400


def test_base64_code_with_non_ascii_text_is_a_contract_error():
    """Found by schemathesis: b64decode raises a plain ValueError for non-ASCII text (was a 500)."""
    with pytest.raises(ContractError, match="base64") as caught:
        wire.parse_execute_request("2025-10-02-preview", {"code": "é", "codeInputType": "InlineBase64"})
    assert caught.value.status == 400


# --------------------------------------------------------------------------
# Execute responses (§4.2, §4.3, §4.4)
# --------------------------------------------------------------------------

# §4.2, LC-NB live output: tool.execute("6 * 7").
EXEC_2402 = raw('{"$id": "1", "properties": {"$id": "2", "status": "Success", "stdout": "", "stderr": "", "result": 42, "executionTimeInMilliseconds": 8}}')
# §4.2, SAMP-API 2024-08 sample (local interpreter image), 202 Accepted.
EXEC_2408 = raw('{"properties":{"$id":"4a5a3b4c-0e3d-4c39-9d8c-4c2e1a1d5e6f","status":"Success","stdout":"inline-synchronous\\n","stderr":"","executionResult":"","executionTimeInMilliseconds":9}}')
# §4.3 SessionCodeExecutionResource with result.
EXEC_2410 = raw(
    '{"id": "exec-1", "identifier": "sess-1", "executionType": "Synchronous", "status": "Succeeded",'
    ' "result": {"stdout": "[1 2 3]\\n", "stderr": "", "executionResult": 4, "executionTimeInMilliseconds": 4}}'
)
# §4.3: some 2025-10 samples omit executionResult and executionType (third-party Japanese guide).
EXEC_2510_MINIMAL = raw('{"identifier": "sess-1", "status": "Succeeded", "result": {"stdout": "150\\n"}}')
# §4.3: samples add sessionId and rawResult, not in the specs.
EXEC_RAW_RESULT = raw(
    '{"id": "e2", "identifier": "sess-1", "sessionId": "sess-1", "executionType": "Synchronous", "status": "Failed",'
    ' "result": {"stdout": "", "stderr": "ZeroDivisionError: division by zero", "executionResult": null, "executionTimeInMilliseconds": 3},'
    ' "rawResult": {"hresult": 0, "result": null, "error_name": "ZeroDivisionError", "error_message": "division by zero",'
    ' "error_stack_trace": "...", "stdout": "", "stderr": "", "diagnosticInfo": {"executionDuration": 3}}}'
)
# §4.1 legacy python/execute: top-level result, stdout, stderr (LC-JS early rev.).
EXEC_LEGACY = raw('{"result": 2, "stdout": "", "stderr": ""}')
# §4.3 asynchronous execution: immediate answer, status Running.
EXEC_RUNNING = raw('{"id": "op-9", "identifier": "sess-1", "executionType": "Asynchronous", "status": "Running"}')
# §4.4 LC-NB "Handling image results".
IMAGE = {"type": "image", "format": "png", "base64_data": base64.b64encode(b"\x89PNG\r\n").decode()}


@pytest.mark.parametrize(
    "body, expected",
    [
        (EXEC_2402, Execution(ExecutionStatus.SUCCEEDED, "", "", 42, 8)),
        (EXEC_2408, Execution(ExecutionStatus.SUCCEEDED, "inline-synchronous\n", "", "", 9)),
        (EXEC_2410, Execution(ExecutionStatus.SUCCEEDED, "[1 2 3]\n", "", 4, 4, "exec-1", "sess-1")),
        (EXEC_2510_MINIMAL, Execution(ExecutionStatus.SUCCEEDED, "150\n", "", None, None, None, "sess-1")),
        (EXEC_RAW_RESULT, Execution(ExecutionStatus.FAILED, "", "ZeroDivisionError: division by zero", None, 3, "e2", "sess-1")),
        (EXEC_LEGACY, Execution(None, "", "", 2)),
        (EXEC_RUNNING, Execution(ExecutionStatus.RUNNING, id="op-9", identifier="sess-1", asynchronous=True)),
    ],
)
def test_parse_execution_reads_every_sample(body, expected):
    for version in wire.API_VERSIONS:  # pools answer with whatever they answer
        assert wire.parse_execution(version, body) == expected


def test_parse_execution_error_and_image():
    failed = raw('{"id": "e", "identifier": "s", "status": "Failed", "error": {"error": {"code": "Timeout", "message": "Execution timed out"}}}')
    assert wire.parse_execution("2025-10-02-preview", failed).error == ErrorInfo("Timeout", "Execution timed out")
    execution = wire.parse_execution("2024-02-02-preview", {"properties": {"status": "Success", "result": IMAGE}})
    assert execution.image.format == "png" and execution.image.data == b"\x89PNG\r\n"
    with pytest.raises(ContractError):
        wire.parse_execution("2025-10-02-preview", "Succeeded")


@pytest.mark.parametrize("version", OLD)
def test_render_execution_code_execute_generation(version):
    status, body, headers = wire.render_execution(version, Execution(ExecutionStatus.SUCCEEDED, "", "", 42, 8))
    # §4.2 pool shape, plus executionResult (the 2024-08 sample's key; §4.2 inference: emit both).
    assert (status, headers) == (200, {})
    assert body == {**EXEC_2402, "properties": {**EXEC_2402["properties"], "executionResult": 42}}
    _, failed, _ = wire.render_execution(version, Execution(ExecutionStatus.FAILED, "", "Traceback", None, 1))
    assert failed["properties"]["status"] == "Failure"


@pytest.mark.parametrize("version, http_status", [("2024-10-02-preview", 202), ("2025-02-02-preview", 200), ("2025-10-02-preview", 200)])
def test_render_execution_executions_generation(version, http_status):
    execution = Execution(ExecutionStatus.SUCCEEDED, "[1 2 3]\n", "", 4, 4, "exec-1", "sess-1")
    status, body, headers = wire.render_execution(version, execution, endpoint_path="/pool")
    # §4.3: 202 in the 2024-10 spec even for synchronous runs, 200 from 2025-02-02-preview.
    assert status == http_status
    assert body == {**EXEC_2410, "sessionId": "sess-1"}
    assert headers == {"operation-id": "exec-1", "Operation-Location": f"/pool/executions/exec-1?api-version={version}&identifier=sess-1"}


def test_render_execution_asynchronous_and_failed():
    status, body, _ = wire.render_execution("2025-10-02-preview", Execution(ExecutionStatus.RUNNING, id="op-9", identifier="sess-1", asynchronous=True))
    assert status == 202 and body == {**EXEC_RUNNING, "sessionId": "sess-1"}
    failed = Execution(ExecutionStatus.FAILED, "", "boom", None, 3, "e", "s", error=ErrorInfo("Timeout", "Execution timed out"))
    _, body, _ = wire.render_execution("2025-10-02-preview", failed)
    assert body["status"] == "Failed" and body["error"] == raw('{"error": {"code": "Timeout", "message": "Execution timed out"}}')


# --------------------------------------------------------------------------
# Files (§5)
# --------------------------------------------------------------------------

# §5.1 upload response of 2024-02-02-preview (LC-PY, LC-JS, LI) and MS-CI's 7-digit timestamp.
FILE_2402 = raw('{"$id":"1","value":[{"$id":"2","properties":{"$id":"3","filename":"test.txt","size":12,"lastModifiedTime":"2024-05-02T07:21:07.9922617Z"}}]}')
LIST_2402 = raw(
    '{"$id":"1","value":[{"$id":"2","properties":{"$id":"3","filename":"test.txt","size":12,"lastModifiedTime":"2024-05-02T07:21:07.9922617Z"}},'
    '{"$id":"4","properties":{"$id":"5","filename":"out/plot.png","size":2048,"lastModifiedTime":"2024-05-02T07:22:00.1Z"}}]}'
)
# §5.1: SK-PY and LI upload absolute /mnt/data/<name> filenames.
FILE_ABSOLUTE = raw('{"$id":"1","value":[{"$id":"2","properties":{"$id":"3","filename":"/mnt/data/x.csv","size":5,"lastModifiedTime":"2024-05-02T07:21:07Z"}}]}')
# §5.1 legacy (pre-2024-02-02) $values list, snake-case time.
LIST_LEGACY = raw('{"$id":"1","$values":[{"$id":"2","filename":"a.txt","size":3,"last_modified_time":"2024-04-30T10:00:00.0000000Z"}]}')
# §5.2 2024-08 local-container samples: bare array; GET files/{name} with empty $ids.
LIST_2408_CONTAINER = raw('[{"name":"a.txt","type":"file","filename":"a.txt","size":3,"last_modified_time":"2024-08-02T10:00:00.123Z","mime_type":"text/plain"}]')
FILE_2408 = raw('{"value":[{"$id":"","properties":{"$id":"","filename":"a.txt","size":3,"lastModifiedTime":"2024-08-02T10:00:00.123Z"}}]}')
# §5.3 SessionResourceFile (SAMP-API; SPEC-2510b Upload example).
FILE_2410 = raw('{"name":"README2.md","type":"File","sizeInBytes":133,"lastModifiedAt":"2024-11-02T12:33:05.677Z","contentType":"text/markdown; charset=utf-8"}')
# §5.4 SessionResourceFiles_List_Recursive (SPEC-2510a); the elided fields filled in.
LIST_2510_RECURSIVE = raw(
    '{"value":[{"name":"directory-level1","directory":"","type":"directory","sizeInBytes":4096,"lastModifiedAt":"2024-05-29T02:17:25.902Z","contentType":"application/octet-stream"},'
    '{"name":"testfile.yaml","directory":"level1/level2","type":"File","sizeInBytes":4,"lastModifiedAt":"2024-05-29T02:17:25.902Z","contentType":"application/yaml"}],'
    '"nextLink":null}'
)

README = RemoteFile("README2.md", 133, utc(2024, 11, 2, 12, 33, 5, 677000), "text/markdown; charset=utf-8")
TEST_TXT = RemoteFile("test.txt", 12, utc(2024, 5, 2, 7, 21, 7, 992261))


@pytest.mark.parametrize(
    "body, expected",
    [
        (FILE_2402, TEST_TXT),
        (FILE_ABSOLUTE, RemoteFile("x.csv", 5, utc(2024, 5, 2, 7, 21, 7))),
        (FILE_2408, RemoteFile("a.txt", 3, utc(2024, 8, 2, 10, 0, 0, 123000))),
        (FILE_2410, README),
    ],
)
def test_parse_file(body, expected):
    assert wire.parse_file(body) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        (LIST_2402, [TEST_TXT, RemoteFile("plot.png", 2048, utc(2024, 5, 2, 7, 22, 0, 100000), directory="out")]),
        (LIST_LEGACY, [RemoteFile("a.txt", 3, utc(2024, 4, 30, 10))]),
        (LIST_2408_CONTAINER, [RemoteFile("a.txt", 3, utc(2024, 8, 2, 10, 0, 0, 123000), "text/plain")]),
        (
            LIST_2510_RECURSIVE,
            [
                RemoteFile("directory-level1", 4096, utc(2024, 5, 29, 2, 17, 25, 902000), "application/octet-stream", is_directory=True),
                RemoteFile("testfile.yaml", 4, utc(2024, 5, 29, 2, 17, 25, 902000), "application/yaml", directory="level1/level2"),
            ],
        ),
    ],
)
def test_parse_file_list(body, expected):
    assert wire.parse_file_list(body) == expected


@pytest.mark.parametrize("body", [{"value": "x"}, {"files": []}, "files", {"value": [{"size": 1}]}])
def test_parse_file_rejects_non_files(body):
    with pytest.raises(ContractError):
        wire.parse_file_list(body)


@pytest.mark.parametrize("version", OLD)
def test_render_file_code_execute_generation(version):
    assert same_times(wire.render_file(version, TEST_TXT), FILE_2402) == FILE_2402
    listed = [TEST_TXT, RemoteFile("plot.png", 2048, utc(2024, 5, 2, 7, 22, 0, 100000), directory="out")]
    assert same_times(wire.render_file_list(version, listed), LIST_2402) == LIST_2402


@pytest.mark.parametrize("version", NEW)
def test_render_file_executions_generation(version):
    rendered = wire.render_file(version, README)
    if version == "2025-10-02-preview":  # directory: 2510+
        assert same_times(rendered, FILE_2410) == {**FILE_2410, "directory": ""}
    else:
        assert same_times(rendered, FILE_2410) == FILE_2410
    assert wire.render_file_list(version, []) == raw('{"value": [], "nextLink": null}')


def test_render_recursive_file_list():
    files = wire.parse_file_list(LIST_2510_RECURSIVE)
    assert same_times(wire.render_file_list("2025-10-02-preview", files), LIST_2510_RECURSIVE) == LIST_2510_RECURSIVE


# --------------------------------------------------------------------------
# Sessions and metadata (§6)
# --------------------------------------------------------------------------

# §6 Session (SPEC-2502/2510): identifier, createdAt, lastAccessedAt, expireAt, etag.
SESSION = raw('{"identifier":"sess-1","createdAt":"2025-03-01T10:00:00Z","lastAccessedAt":"2025-03-01T10:05:00Z","expireAt":"2025-03-01T10:10:00Z","etag":"0a1b2c"}')
# §6 SessionView of the .management routes (MS-CUSTOM): expiresAt, {value, count, nextLink}.
SESSION_VIEW_LIST = raw('{"value":[{"identifier":"sess-1","createdAt":"2025-03-01T10:00:00Z","lastAccessedAt":"2025-03-01T10:05:00Z","expiresAt":"2025-03-01T10:10:00Z","etag":"0a1b2c"}],"count":1,"nextLink":null}')
SESSION_MODEL = Session("sess-1", utc(2025, 3, 1, 10), utc(2025, 3, 1, 10, 5), utc(2025, 3, 1, 10, 10), "0a1b2c")
# §6 GET /metadata (SPEC-2502/2510 example: node, axios, IJavascript).
METADATA = raw(
    '{"runtimes":[{"name":"node","version":"20.11.0"}],"preInstalledPackages":[{"name":"axios","version":"1.6.7"}],'
    '"createdAt":"2025-02-02T00:00:00Z","lastUpdatedAt":"2025-02-03T00:00:00Z",'
    '"jupyterKernel":{"name":"IJavascript","version":"5.2.1","projectUrl":"https://github.com/n-riesco/ijavascript","description":"JavaScript kernel"}}'
)


def test_session_both_directions():
    assert wire.parse_session(SESSION) == SESSION_MODEL
    assert same_times(wire.render_session(SESSION_MODEL), SESSION) == SESSION
    assert wire.parse_session_list({"sessions": [SESSION]}) == [SESSION_MODEL]
    rendered = wire.render_session_list([SESSION_MODEL])
    assert same_times(rendered, {"sessions": [SESSION], "nextLink": None}) == {"sessions": [SESSION], "nextLink": None}


def test_session_view_both_directions():
    assert wire.parse_session_list(SESSION_VIEW_LIST) == [SESSION_MODEL]
    assert same_times(wire.render_session_list([SESSION_MODEL], view=True), SESSION_VIEW_LIST) == SESSION_VIEW_LIST


def test_metadata_both_directions():
    metadata = wire.parse_metadata(METADATA)
    assert metadata == PoolMetadata((("node", "20.11.0"),), (("axios", "1.6.7"),), utc(2025, 2, 2), utc(2025, 2, 3), METADATA["jupyterKernel"], None)
    assert same_times(wire.render_metadata(metadata), METADATA) == METADATA
    # The local pool's additive block, absent on Azure.
    local = PoolMetadata(runtimes=(("python", "3.11.9"),), extensions={"extensions": ["stream"]})
    assert wire.render_metadata(local)["localPool"] == {"extensions": ["stream"]}
    assert wire.parse_metadata(wire.render_metadata(local)).python_version == "3.11.9"


# --------------------------------------------------------------------------
# Errors (§8)
# --------------------------------------------------------------------------


def test_render_error_is_the_azure_envelope():
    assert wire.render_error("SessionNotFound", "Session 'x' not found") == raw('{"error":{"code":"SessionNotFound","message":"Session \'x\' not found"}}')
    assert wire.render_error("BadRequest", "no", target="code") == raw('{"error":{"code":"BadRequest","message":"no","target":"code"}}')


@pytest.mark.parametrize(
    "body, expected",
    [
        # microsoft/azure-container-apps #1665 (§8), with its traceId.
        (raw('{"error":{"code":"DynamicApisNotAllowed","message":"Dynamic API calls are not allowed for session pool \'p\': \'the pool is not dynamic\'"},"traceId":"t"}'),
         ErrorInfo("DynamicApisNotAllowed", "Dynamic API calls are not allowed for session pool 'p': 'the pool is not dynamic'")),
        (raw('{"error":{"code":"Outer","message":"m","details":[{"code":"Inner","message":"d"}]}}'), ErrorInfo("Outer", "m", None, (ErrorInfo("Inner", "d"),))),
        (raw('{"code":"SessionPropertiesMissing","message":"properties missing"}'), ErrorInfo("SessionPropertiesMissing", "properties missing")),
        # §8: container-level bodies are plain strings.
        ("`Code` field is required in the request", ErrorInfo("", "`Code` field is required in the request")),
        ({"status": "ok"}, None),
        ("", None),
    ],
)
def test_parse_error(body, expected):
    assert wire.parse_error(body) == expected


# --------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-05-02T07:21:07.9922617Z", utc(2024, 5, 2, 7, 21, 7, 992261)),  # .NET, 7 digits
        ("2024-11-02T12:33:05.677Z", utc(2024, 11, 2, 12, 33, 5, 677000)),
        ("2025-03-01T10:00:00Z", utc(2025, 3, 1, 10)),
        ("2025-03-01T12:00:00+02:00", utc(2025, 3, 1, 10)),
        ("yesterday", None),
    ],
)
def test_parse_time(text, expected):
    assert wire.parse_time(text) == expected


# --------------------------------------------------------------------------
# Local extension: jupyter-cells (not Azure; pinned here so client and pool cannot drift together)
# --------------------------------------------------------------------------

JUPYTER_MEMBER = '{"executionCount":3,"silent":false,"storeHistory":true,"userExpressions":{"n":"len(df)"}}'


def test_jupyter_cell_member_both_directions():
    from azure_sessions_kernel.wire import JupyterCell, parse_jupyter_cell, render_jupyter_cell

    cell = JupyterCell(execution_count=3, user_expressions={"n": "len(df)"})
    assert render_jupyter_cell(cell) == json.loads(JUPYTER_MEMBER)
    assert parse_jupyter_cell({"code": "x", "jupyter": json.loads(JUPYTER_MEMBER)}) == cell
    # Absent: a plain stream request. Keys in any case, like every other member.
    assert parse_jupyter_cell({"code": "x"}) is None
    assert parse_jupyter_cell({"Jupyter": {"ExecutionCount": None, "SILENT": "true"}}) == JupyterCell(None, silent=True)


def test_cell_reply_keeps_only_execute_reply_fields():
    from azure_sessions_kernel.wire import parse_cell_reply, render_cell_reply

    content = {"status": "error", "execution_count": 4, "ename": "E", "evalue": "v", "traceback": ["E: v"], "payload": [],
               "user_expressions": {}, "engine_info": {"engine_id": -1}, "azure_sessions": {"kind": "empty"}}
    rendered = render_cell_reply(content)
    assert set(rendered) == {"status", "execution_count", "ename", "evalue", "traceback", "payload", "user_expressions"}
    assert parse_cell_reply(json.loads(json.dumps(rendered))) == rendered
