"""The pool's OpenAPI document describes the API, and the API keeps to it (issue 12, item 5).

* The document is checked for what a client generator needs: every route's
  ``api-version`` and ``identifier``, request bodies, response schemas,
  unique operationIds (in process, no pool needed).
* Every ``render_*`` of :mod:`azure_sessions_kernel.wire`, for every
  api-version, is valid against the type the document declares for it: the
  document is generated from those types, so this is what keeps document
  and code from drifting.
* schemathesis drives a real pool (normal and Azure-strict) from the
  document, in bounded runs: no 5xx, no response outside its schema, and the
  pool still serves afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from azure_sessions_kernel import wire
from azure_sessions_kernel.pool.http import create_app

EXECUTION_ROUTES = {("post", "/code/execute"), ("post", "/executions"), ("get", "/executions/{execution_id}")}
FILE_ROUTES = {("post", "/files/upload"), ("post", "/files"), ("get", "/files"), ("get", "/files/{rest}"), ("delete", "/files/{rest}")}


def document(strict: bool = False) -> dict[str, Any]:
    app = create_app(object(), token="t", strict=strict, metadata=wire.PoolMetadata)  # type: ignore[arg-type]
    while not hasattr(app, "openapi"):  # unwrap the ASGI middleware
        app = app.app
    return app.openapi()


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_every_route_declares_api_version_and_the_session_routes_identifier():
    for (method, path), op in operations(document()).items():
        params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        assert params["api-version"]["required"], (method, path)
        assert params["api-version"]["schema"]["enum"] == list(wire.API_VERSIONS)
        if path not in ("/listSessions", "/metadata", "/.management/listSessions"):
            assert params["identifier"]["required"] and params["identifier"]["schema"]["pattern"], (method, path)


def test_execution_and_file_routes_have_request_and_response_schemas():
    ops = operations(document())
    for key in EXECUTION_ROUTES | FILE_ROUTES:
        op = ops[key]
        ok = [r for status, r in op["responses"].items() if status.startswith("2")]
        assert ok and all("content" in r or status == "204" for status, r in op["responses"].items() if status.startswith("2")), key
        assert op["responses"]["default"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
        if key[0] == "post" and key != ("post", "/executions/{execution_id}"):
            assert op["requestBody"]["required"] and op["requestBody"]["content"], key
    assert ops[("post", "/executions")]["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ExecuteBody"}
    assert "multipart/form-data" in ops[("post", "/files")]["requestBody"]["content"]


def test_operation_ids_are_unique_and_every_schema_reference_resolves():
    doc = document()
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids)), ids
    text = repr(doc)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in doc["components"]["schemas"], name
    assert doc["security"] == [{"bearer": []}]


def test_a_strict_pool_documents_no_extensions():
    strict = document(strict=True)
    assert not [path for path in strict["paths"] if path.startswith("/.local/")]
    assert "StreamBody" not in strict["components"]["schemas"] and "ExecuteBody" in strict["components"]["schemas"]
    assert [path for path in document()["paths"] if path.startswith("/.local/")]


# ---------------------------------------------------------------- the types the document is made of match the code


def conforms(value: Any, tp: Any) -> None:
    """``value`` validates as ``tp`` and, like the document, has no key ``tp`` does not declare."""
    TypeAdapter(tp).validate_python(value, strict=False)
    _no_undeclared_keys(value, TypeAdapter(tp).json_schema(), None)


def _no_undeclared_keys(value: Any, schema: dict[str, Any], defs: dict[str, Any] | None) -> None:
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    options = schema.get("anyOf")
    if options:  # the first option the value fits
        for option in options:
            try:
                _no_undeclared_keys(value, option, defs)
                return
            except AssertionError:
                continue
        raise AssertionError(f"{value!r} fits none of {options}")
    if isinstance(value, dict) and "properties" in schema:
        assert set(value) <= set(schema["properties"]), set(value) - set(schema["properties"])
        for key, item in value.items():
            _no_undeclared_keys(item, schema["properties"][key], defs)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _no_undeclared_keys(item, schema["items"], defs)


NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
EXECUTIONS = [
    wire.Execution(wire.ExecutionStatus.SUCCEEDED, "out", "", 2, 12, "e1", "abcd"),
    wire.Execution(wire.ExecutionStatus.FAILED, "", "Traceback", "", 3, "e2", "abcd", error=wire.ErrorInfo("ZeroDivisionError", "division by zero")),
    wire.Execution(wire.ExecutionStatus.RUNNING, id="e3", identifier="abcd", asynchronous=True),
    wire.Execution(wire.ExecutionStatus.SUCCEEDED, result={"type": "image", "format": "png", "base64_data": "AA=="}, id="e4", identifier="abcd"),
]
FILES = [wire.RemoteFile("a.txt", 3, NOW, "text/plain"), wire.RemoteFile("sub", 0, None, None, True), wire.RemoteFile("b.csv", 1, NOW, "text/csv", directory="sub")]
SESSIONS = [wire.Session("abcd", NOW, NOW, NOW, "etag1"), wire.Session()]


@pytest.mark.parametrize("version", wire.API_VERSIONS)
def test_rendered_executions_and_requests_conform(version):
    v = wire.api_version(version)
    for execution in EXECUTIONS:
        if execution.asynchronous and not v.executions_api:
            continue
        _, body, _ = wire.render_execution(v, execution)
        conforms(body, wire.ExecutionResource if v.executions_api else wire.LegacyExecution)
    request = wire.ExecutionRequest("1 + 1", 30, v.executions_api, 100, True, True)
    conforms(wire.render_execute_request(v, request), wire.ExecuteBody if v.executions_api else wire.LegacyExecuteBody)


@pytest.mark.parametrize("version", wire.API_VERSIONS)
def test_rendered_files_conform(version):
    v = wire.api_version(version)
    for f in FILES:
        conforms(wire.render_file(v, f), wire.FileResource if v.executions_api else wire.LegacyFileList)
    conforms(wire.render_file_list(v, FILES), wire.FileList if v.executions_api else wire.LegacyFileList)


def test_rendered_sessions_metadata_errors_and_cells_conform():
    for s in SESSIONS:
        conforms(wire.render_session(s), wire.SessionResource)
        conforms(wire.render_session(s, view=True), wire.SessionView)
    conforms(wire.render_session_list(SESSIONS), wire.SessionList)
    conforms(wire.render_session_list(SESSIONS, view=True), wire.SessionViewList)
    meta = wire.PoolMetadata((("python", "3.11"),), (("numpy", "2.0"),), NOW, None, {"name": "python3"}, {"extensions": ["stream"]})
    conforms(wire.render_metadata(meta), wire.Metadata)
    conforms(wire.render_metadata(wire.PoolMetadata()), wire.Metadata)
    conforms(wire.render_error("NotFound", "no such thing", "identifier"), wire.ErrorEnvelope)
    conforms({"jupyter": wire.render_jupyter_cell(wire.JupyterCell(3, False, True, {"x": "1"})), "code": "1"}, wire.StreamBody)


def test_undeclared_keys_are_caught():
    """The drift check itself: a key the type does not declare fails it."""
    with pytest.raises(AssertionError):
        conforms({**wire.render_session(SESSIONS[0]), "surprise": 1}, wire.SessionResource)
    with pytest.raises(Exception):
        conforms({"value": [{"name": "x"}], "nextLink": None}, wire.FileList)


def test_api_version_type_lists_every_version():
    assert wire.ApiVersionName.__args__ == wire.API_VERSIONS


# ---------------------------------------------------------------- schemathesis against real pools

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
REPO = Path(__file__).resolve().parent.parent
#: no_server_error (tests/schemathesis_hooks.py) is not_a_server_error except for a slow kernel's completion.
CHECKS = "no_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["normal", "azure-strict"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(start_pool, strict, tmp_path):
    # Few sessions with a short cooldown: the fuzzer names a new identifier in most requests.
    pool = start_pool("--max-sessions", "4", "--cooldown", "5", "--allow-short-cooldown", strict=strict)
    run = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{pool.endpoint}/openapi.json", "-H", f"Authorization: Bearer {pool.token}",
         "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--workers", "1",
         "--generation-database", "none", "--seed", "1", "--request-timeout", "60", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) >= 300, tail
    # Healthy afterwards: free the fuzzer's sessions, then a session starts and runs code.
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=60) as http:
        q = {"api-version": wire.DEFAULT_API_VERSION}
        for s in http.get("/listSessions", params=q).json()["sessions"]:
            http.delete("/session", params={**q, "identifier": s["identifier"]})
        r = http.post("/executions", params={**q, "identifier": "after-the-fuzzer"}, json={"code": "6 * 7"})
        assert r.status_code == 200 and r.json()["result"]["executionResult"] == 42, r.text
    assert pool.process.poll() is None


@pytest.mark.slow
def test_docs_page_is_self_contained(local_pool):
    with httpx.Client(base_url=local_pool.endpoint, headers=local_pool.headers, timeout=60) as http:
        page = http.get("/docs")
        served = http.get("/openapi.json").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "<script" not in text and "<link" not in text and "//" not in re.sub(r"<pre>.*?</pre>", "", text, flags=re.S)
    for path, item in served["paths"].items():
        for op in item.values():
            assert f"id='{op['operationId']}'" in text, path
    assert "id='ExecuteBody'" in text and "executionsCreate" in text
