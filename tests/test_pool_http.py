"""The local pool over raw HTTP: every route of every api-version, exact JSON.

These tests do not use the project's client, so a mistake shared by client
and pool cannot hide here: bodies are compared with the shapes of the
reference (shared/reference/aca-sessions-api.md, sections cited per test).
"""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest

from azure_sessions_kernel.wire import API_VERSIONS

pytestmark = pytest.mark.slow

V_CODE = ["2024-02-02-preview", "2024-08-02-preview"]
V_EXEC = ["2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview"]
V_MGMT = ["2025-02-02-preview", "2025-10-02-preview"]


@pytest.fixture(scope="module")
def http(local_pool):
    with httpx.Client(base_url=local_pool.endpoint, headers=local_pool.headers, timeout=60) as c:
        yield c


def execute(http: httpx.Client, version: str, ident: str, code: str, **extra) -> httpx.Response:
    if version in V_CODE:
        body = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code, **extra}}
        return http.post("/code/execute", params={"api-version": version, "identifier": ident}, json=body)
    body = {"codeInputType": "Inline", "executionType": "Synchronous", "code": code, "timeoutInSeconds": 60, **extra}
    return http.post("/executions", params={"api-version": version, "identifier": ident}, json=body)


def result_of(version: str, r: httpx.Response):
    body = r.json()
    return body["properties"]["result"] if version in V_CODE else body["result"]["executionResult"]


def assert_envelope(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    assert r.headers["x-ms-error-code"] == body["error"]["code"]
    assert body["error"]["message"].strip()
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# ---------------------------------------------------------------- auth and versions


def test_every_route_needs_the_token(local_pool):
    for method, path in [("POST", "/executions"), ("GET", "/files"), ("GET", "/metadata"), ("GET", "/nope"), ("GET", "/openapi.json")]:
        r = httpx.request(method, local_pool.endpoint + path, params={"api-version": API_VERSIONS[-1], "identifier": "abcd"})
        err = assert_envelope(r, 401, "Unauthorized")
        assert "Authorization" in err["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = httpx.request(method, local_pool.endpoint + path, headers={"Authorization": "Bearer wrong"})
        assert_envelope(r, 401, "Unauthorized")


def test_unknown_and_missing_api_version(http, identifier):
    err = assert_envelope(http.post("/executions", params={"api-version": "2023-01-01", "identifier": identifier}, json={"code": "1"}), 400, "InvalidApiVersion")
    assert "2025-10-02-preview" in err["message"]
    assert_envelope(http.post("/executions", params={"identifier": identifier}, json={"code": "1"}), 400, "MissingApiVersion")


def test_openapi_document_lists_the_routes(http):
    doc = http.get("/openapi.json").json()
    for path in ["/code/execute", "/executions", "/files", "/session", "/listSessions", "/metadata"]:
        assert path in doc["paths"], path


def test_route_that_a_version_lacks_is_404(http, identifier):
    err = assert_envelope(http.get("/session", params={"api-version": "2024-10-02-preview", "identifier": identifier}), 404)
    assert "2025-02-02-preview" in err["message"]
    err = assert_envelope(http.post("/code/execute", params={"api-version": "2025-10-02-preview", "identifier": identifier}, json={"properties": {"code": "1"}}), 404)
    assert "POST executions" in err["message"]


# ---------------------------------------------------------------- executions: shapes per version (reference §4)


@pytest.mark.parametrize("version", V_CODE)
def test_code_execute_shape(http, identifier, version):
    assert execute(http, version, identifier, "x = 40").status_code == 200
    r = execute(http, version, identifier, "print('hi')\nx + 2")
    assert r.status_code == 200
    body = r.json()
    # §4.2: {"$id":"1","properties":{"$id":"2","status":"Success","stdout","stderr","result",...}}
    assert body["$id"] == "1" and body["properties"]["$id"] == "2"
    p = body["properties"]
    assert p["status"] == "Success"
    assert p["stdout"] == "hi\n" and p["stderr"] == ""
    assert p["result"] == 42 and p["executionResult"] == 42
    assert isinstance(p["executionTimeInMilliseconds"], int)


@pytest.mark.parametrize("version", V_EXEC)
def test_executions_shape(http, identifier, version):
    r = execute(http, version, identifier, "print('hi')\n6 * 7")
    # §4.3: 202 in the 2024-10 spec even for synchronous runs; 200 after.
    assert r.status_code == (202 if version == "2024-10-02-preview" else 200)
    body = r.json()
    assert body["status"] == "Succeeded"
    assert body["identifier"] == identifier and body["executionType"] == "Synchronous"
    assert body["result"]["stdout"] == "hi\n" and body["result"]["stderr"] == ""
    assert body["result"]["executionResult"] == 42
    assert isinstance(body["result"]["executionTimeInMilliseconds"], int)
    assert r.headers["operation-id"] == body["id"]
    assert r.headers["operation-location"] == f"/executions/{body['id']}?api-version={version}&identifier={identifier}"


@pytest.mark.parametrize(
    "code, expected",
    [
        ("print('only printing')", ""),  # §4.4: print only -> ""
        ("None", None),
        ("'nan'", "nan"),
        ("float('nan')", "nan"),
        ("True", True),
        ("1.5", 1.5),
        ("'text'", "text"),
        ("{'a': 1}", "{'a': 1}"),
        ("[1, 2]\n[3, 4]", "[3, 4]"),
    ],
)
def test_result_value_semantics(http, identifier, code, expected):
    r = execute(http, "2025-10-02-preview", identifier, code)
    assert r.json()["status"] == "Succeeded"
    assert result_of("2025-10-02-preview", r) == expected


def test_pretty_text_plain_for_objects(http, identifier):
    r = execute(http, "2025-10-02-preview", identifier, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
    text = result_of("2025-10-02-preview", r)
    assert text.splitlines() == ["   a  b", "0  1  3", "1  2  4"]


def test_jupyter_format_returns_repr_of_strings(http, identifier):
    r = execute(http, "2025-10-02-preview", identifier, "'nan'", returnJupyterFormatExecutionResult=True)
    assert result_of("2025-10-02-preview", r) == "'nan'"


def test_matplotlib_figure_is_an_image_result(http, identifier):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    r = execute(http, "2024-02-02-preview", identifier, code)
    img = result_of("2024-02-02-preview", r)
    assert set(img) == {"type", "format", "base64_data"} and img["type"] == "image" and img["format"] == "png"
    png = base64.b64decode(img["base64_data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


@pytest.mark.parametrize("version", ["2024-02-02-preview", "2025-10-02-preview"])
def test_exception_is_a_failure_with_traceback_on_stderr(http, identifier, version):
    r = execute(http, version, identifier, "def f():\n    return 1/0\nf()")
    body = r.json()
    if version in V_CODE:
        assert body["properties"]["status"] == "Failure"
        stderr = body["properties"]["stderr"]
    else:
        assert body["status"] == "Failed"
        stderr = body["result"]["stderr"]
        assert body["error"]["error"]["code"] == "ZeroDivisionError"
    assert "ZeroDivisionError" in stderr and "\x1b[" not in stderr


def test_output_streams_max_length(http, identifier):
    code = "print('x' * 10000)"
    assert len(execute(http, "2025-10-02-preview", identifier, code).json()["result"]["stdout"]) == 4096
    r = execute(http, "2025-10-02-preview", identifier, code, outputStreamsMaxLength=100)
    assert r.json()["result"]["stdout"] == "x" * 100
    # Versions without the field return the whole stream.
    assert len(execute(http, "2025-02-02-preview", identifier, code).json()["result"]["stdout"]) == 10001


def test_body_variants_are_accepted(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    wrapped = {"properties": {"codeInputType": "INLINE", "executionType": "synchronous", "timeoutInSeconds": 60, "code": "1 + 1"}}
    assert http.post("/executions", params=q, json=wrapped).json()["result"]["executionResult"] == 2
    flat_b64 = {"codeInputType": "InlineBase64", "code": base64.b64encode(b"2 + 2").decode(), "timeoutInSeconds": 5}
    assert http.post("/executions", params=q, json=flat_b64).json()["result"]["executionResult"] == 4
    legacy = {"properties": {"pythonCode": "3 + 3"}}
    assert http.post("/code/execute", params={**q, "api-version": "2024-02-02-preview"}, json=legacy).json()["properties"]["result"] == 6
    capped = {"code": "4 + 4", "timeoutInSeconds": 600}  # over Azure's 220 s cap: capped, not refused
    assert http.post("/executions", params=q, json=capped).json()["result"]["executionResult"] == 8


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"codeInputType": "Inline"}', "'code' is required"),
        (b'{"code": 5}', "'code' must be a string"),
        (b'{"code": "1", "timeoutInSeconds": "soon"}', "timeoutInSeconds"),
        (b'{"code": "1", "timeoutInSeconds": -1}', "timeoutInSeconds"),
        (b'{"code": "1", "executionType": "Later"}', "executionType"),
        (b'{"code": "1", "codeInputType": "InlineBase64"}', "base64"),
        (b'{"properties": "x"}', "properties"),
        (b'{"shellCommand": "ls"}', "Shell"),
    ],
)
def test_bad_execute_bodies_are_400(http, identifier, raw, fragment):
    r = http.post("/executions", params={"api-version": "2025-10-02-preview", "identifier": identifier}, content=raw, headers={"Content-Type": "application/json"})
    err = assert_envelope(r, 400)
    assert fragment in err["message"]


@pytest.mark.parametrize(
    "version, ident, ok",
    [
        ("2024-10-02-preview", "a" * 256, True),
        ("2024-10-02-preview", "a" * 257, False),
        ("2024-10-02-preview", "has space", False),
        ("2024-10-02-preview", "a/b", False),
        ("2024-10-02-preview", "x", True),
        ("2025-10-02-preview", "abc", False),  # 4..128 from 2025-10-02-preview
        ("2025-10-02-preview", "a|b{c}[d];<e>", True),
        ("2025-10-02-preview", "a" * 129, False),
        ("2025-10-02-preview", "", False),
    ],
)
def test_identifier_rules(http, version, ident, ok):
    r = execute(http, version, ident, "1")
    if ok:
        assert r.status_code in (200, 202), r.text
        assert http.delete("/session", params={"api-version": "2025-10-02-preview" if version == "2025-10-02-preview" else "2025-02-02-preview", "identifier": ident}).status_code == 204
    else:
        assert_envelope(r, 400)


def test_asynchronous_execution_and_polling(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    r = http.post("/executions", params=q, json={"code": "import time; time.sleep(0.5); 21 * 2", "executionType": "Asynchronous", "timeoutInSeconds": 30})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "Running" and body["executionType"] == "Asynchronous"
    location = r.headers["operation-location"]
    deadline = time.monotonic() + 30
    while True:
        p = http.get(location)
        if p.json()["status"] != "Running":
            break
        assert p.status_code == 202
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert p.status_code == 200 and p.json()["status"] == "Succeeded" and p.json()["result"]["executionResult"] == 42
    assert_envelope(http.get("/executions/nope", params=q), 404, "ExecutionNotFound")


# ---------------------------------------------------------------- state and isolation


def test_state_persists_and_sessions_are_separate(http, identifier):
    other = identifier + "-other"
    execute(http, "2025-10-02-preview", identifier, "secret = 'mine'\nopen('/mnt/data/mine.txt', 'w').write('x')")
    assert result_of("2025-10-02-preview", execute(http, "2025-10-02-preview", identifier, "secret")) == "mine"
    r = execute(http, "2025-10-02-preview", other, "import os\n('secret' in globals(), os.listdir('/mnt/data'), os.getcwd())")
    assert result_of("2025-10-02-preview", r) == "(False, [], '/mnt/data')"
    listed = http.get("/files", params={"api-version": "2025-10-02-preview", "identifier": other}).json()
    assert listed == {"value": [], "nextLink": None}


# ---------------------------------------------------------------- files (reference §5)


def upload(http, version, ident, name, data, path=None):
    route = "/files/upload" if version in V_CODE else "/files"
    params = {"api-version": version, "identifier": ident}
    if path is not None:
        params["path"] = path
    return http.post(route, params=params, files={"file": (name, data, "application/octet-stream")})


@pytest.mark.parametrize("version", V_CODE)
def test_files_code_execute_generation(http, identifier, version):
    r = upload(http, version, identifier, "data.csv", b"a,b\n1,2\n")
    assert r.status_code == 200
    body = r.json()
    # §5.1: {"$id":"1","value":[{"$id":"2","properties":{"$id":"3","filename","size","lastModifiedTime"}}]}
    assert body["$id"] == "1" and body["value"][0]["$id"] == "2"
    props = body["value"][0]["properties"]
    assert props["$id"] == "3" and props["filename"] == "data.csv" and props["size"] == 8
    assert props["lastModifiedTime"].endswith("Z")
    listed = http.get("/files", params={"api-version": version, "identifier": identifier}).json()
    assert [v["properties"]["filename"] for v in listed["value"]] == ["data.csv"]
    content = http.get("/files/content/data.csv", params={"api-version": version, "identifier": identifier})
    assert content.status_code == 200 and content.content == b"a,b\n1,2\n"
    # Sub-folders travel in the route in this generation.
    assert upload(http, version, identifier, "/mnt/data/sub/x.txt", b"sub").status_code == 200
    assert http.get("/files/content/sub/x.txt", params={"api-version": version, "identifier": identifier}).content == b"sub"
    assert result_of(version, execute(http, version, identifier, "open('data.csv').read()")) == "a,b\n1,2\n"


@pytest.mark.parametrize("version", V_EXEC)
def test_files_executions_generation(http, identifier, version):
    q = {"api-version": version, "identifier": identifier}
    r = upload(http, version, identifier, "README2.md", b"# hello\n")
    assert r.status_code == 200
    f = r.json()
    # §5.3: {"name","sizeInBytes","lastModifiedAt","contentType","type":"File"} (+ "directory" from 2025-10)
    assert f["name"] == "README2.md" and f["sizeInBytes"] == 8 and f["type"] == "File"
    assert f["contentType"].startswith("text/markdown")
    assert f["lastModifiedAt"].endswith("Z")
    assert ("directory" in f) == (version == "2025-10-02-preview")
    assert upload(http, version, identifier, "deep.txt", b"deep", path="test-directory/level2").status_code == 200
    listed = http.get("/files", params=q).json()
    assert listed["nextLink"] is None
    assert sorted((x["name"], x["type"]) for x in listed["value"]) == [("README2.md", "File"), ("test-directory", "directory")]
    assert http.get("/files/README2.md", params=q).json()["sizeInBytes"] == 8
    assert http.get("/files/README2.md/content", params=q).content == b"# hello\n"
    assert http.get("/files/deep.txt/content", params={**q, "path": "/mnt/data/test-directory/level2"}).content == b"deep"
    if version == "2025-10-02-preview":
        rec = http.get("/files", params={**q, "recursive": "true"}).json()["value"]
        assert ("deep.txt", "test-directory/level2") in [(x["name"], x["directory"]) for x in rec]
    assert http.delete("/files/README2.md", params=q).status_code == 204
    assert_envelope(http.get("/files/README2.md", params=q), 404)
    # The session sees the uploaded files under /mnt/data.
    assert result_of(version, execute(http, version, identifier, "open('/mnt/data/test-directory/level2/deep.txt').read()")) == "deep"


@pytest.mark.parametrize(
    "name, path",
    [("../x", None), ("/etc/passwd", None), ("ok.txt", "../.."), ("ok.txt", "/etc"), ("a/../../b", None), ("..", None)],
)
def test_upload_traversal_is_refused(http, identifier, name, path):
    r = upload(http, "2025-10-02-preview", identifier, name, b"evil", path=path)
    assert_envelope(r, 400)


def test_encoded_slash_and_dots_in_file_routes(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    assert_envelope(http.get("/files/..%2F..%2Fetc%2Fpasswd/content", params=q), 400)
    assert_envelope(http.get("/files/%2E%2E/content", params=q), 400)
    assert_envelope(http.get("/files/x/content", params={**q, "path": "../../etc"}), 400)


def test_symlink_planted_by_the_session_never_serves_host_files(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    execute(http, "2025-10-02-preview", identifier, "import os\nos.symlink('/etc/hostname', '/mnt/data/link')\nos.symlink('/', '/mnt/data/rootdir')")
    r = http.get("/files/link/content", params=q)
    assert 400 <= r.status_code < 500 and "symbolic link" in r.json()["error"]["message"]
    r = http.get("/files/hostname/content", params={**q, "path": "rootdir/etc"})
    assert 400 <= r.status_code < 500
    assert upload(http, "2025-10-02-preview", identifier, "x", b"y", path="rootdir/tmp").status_code in (400, 404)


def test_oversize_upload_is_413(http, identifier):
    size = 128 * 1024 * 1024 + 1
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    # Declared size over the limit: refused without storing anything; the client still reads the 413.
    r = http.post("/files", params=q, content=b"\0" * (size + 100_000), headers={"Content-Type": "multipart/form-data; boundary=x"})
    err = assert_envelope(r, 413, "FileTooLarge")
    assert "128 MB" in err["message"]

    # Streamed without a length: refused when the limit passes, nothing stored.
    def body():
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk) + 1):
            yield chunk
        yield b"\r\n--x--\r\n"

    r = http.post("/files", params=q, content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert_envelope(r, 413, "FileTooLarge")
    assert http.get("/files", params=q).json()["value"] == []


def test_malformed_multipart_is_400(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    r = http.post("/files", params=q, content=b"\0" * 100, headers={"Content-Type": "multipart/form-data; boundary=x"})
    err = assert_envelope(r, 400)
    assert "multipart" in err["message"]


def test_missing_file_and_bad_multipart(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    assert_envelope(http.get("/files/none.txt/content", params=q), 404)
    assert_envelope(http.post("/files", params=q, json={"file": "x"}), 400)
    r = http.post("/files", params=q, files={"other": ("a.txt", b"x")})
    assert_envelope(r, 400)


# ---------------------------------------------------------------- sessions and metadata (reference §6)


@pytest.mark.parametrize("version", V_MGMT)
def test_session_routes(http, identifier, version):
    q = {"api-version": version, "identifier": identifier}
    execute(http, version, identifier, "1")
    s = http.get("/session", params=q).json()
    assert set(s) == {"identifier", "createdAt", "lastAccessedAt", "expireAt", "etag"}
    assert s["identifier"] == identifier and s["expireAt"] > s["lastAccessedAt"]
    listed = http.get("/listSessions", params={"api-version": version}).json()
    assert identifier in [x["identifier"] for x in listed["sessions"]]
    view = http.post("/.management/getSession", params=q).json()
    assert view["expiresAt"] == s["expireAt"] or view["expiresAt"] >= s["expireAt"]
    assert http.delete("/session", params=q).status_code == 204
    assert_envelope(http.get("/session", params=q), 404, "SessionWithIdentifierNotFound")
    assert_envelope(http.delete("/session", params=q), 404, "SessionWithIdentifierNotFound")
    # The same identifier starts afresh.
    assert result_of(version, execute(http, version, identifier, "'x' in globals()")) is False


def test_management_stop_session(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    execute(http, "2025-10-02-preview", identifier, "x = 1")
    r = http.post("/.management/stopSession", params=q)
    # MS-CUSTOM: 200 text/plain "Session <id> in session pool <pool> stopped."
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == f"Session {identifier} in session pool local stopped."
    assert_envelope(http.post("/.management/stopSession", params=q), 404, "SessionWithIdentifierNotFound")
    listed = http.post("/.management/listSessions", params={"api-version": "2025-10-02-preview"}).json()
    assert identifier not in [x["identifier"] for x in listed["value"]] and listed["count"] == len(listed["value"])


def test_metadata(http):
    m = http.get("/metadata", params={"api-version": "2025-10-02-preview"}).json()
    assert m["runtimes"][0]["name"] == "python" and m["runtimes"][0]["version"].startswith("3.")
    names = {p["name"].lower() for p in m["preInstalledPackages"]}
    assert {"numpy", "pandas", "matplotlib", "scikit-learn", "ipykernel"} <= names
    assert m["jupyterKernel"]["name"] == "python3"
    assert {"stream", "jupyter-cells", "interrupt", "complete", "inspect"} <= set(m["localPool"]["extensions"])
    assert m["localPool"]["isolation"]["level"]


def test_pkg_resources_lists_packages_like_azure_docs(http, identifier):
    code = "import pkg_resources\nsorted(d.project_name.lower() for d in pkg_resources.working_set)"
    text = result_of("2025-10-02-preview", execute(http, "2025-10-02-preview", identifier, code))
    assert "'numpy'" in text and "'pandas'" in text


# ---------------------------------------------------------------- local extensions


def test_stream_extension_relays_ordered_jupyter_outputs(http, identifier):
    code = "print('a')\nfrom IPython.display import display, HTML\ndisplay(HTML('<b>b</b>'))\nimport sys; print('c', file=sys.stderr)\n7"
    with http.stream("POST", "/.local/executions/stream", params={"api-version": "2025-10-02-preview", "identifier": identifier}, json={"code": code, "timeoutInSeconds": 30}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in r.iter_lines() if line]
    kinds = [(e["type"], e.get("msg_type")) for e in events]
    assert kinds == [("iopub", "stream"), ("iopub", "display_data"), ("iopub", "stream"), ("iopub", "execute_result"), ("done", None)]
    assert events[1]["content"]["data"]["text/html"] == "<b>b</b>"
    assert events[3]["content"]["data"]["text/plain"] == "7"
    assert events[-1]["status"] == "ok" and events[-1]["execution"]["result"]["executionResult"] == 7



STREAM = "/.local/executions/stream"


def stream_lines(http: httpx.Client, identifier: str, body: dict, headers: dict | None = None) -> list[dict]:
    with http.stream("POST", STREAM, params={"api-version": "2025-10-02-preview", "identifier": identifier}, json=body, headers=headers) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line) for line in r.iter_lines() if line]


def test_a_jupyter_cell_runs_under_its_count_and_returns_the_kernels_reply(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    cell = {"executionCount": 7, "silent": False, "storeHistory": True, "userExpressions": {"twice": "n * 2"}}
    events = stream_lines(http, identifier, {"code": "n = 21\nn", "jupyter": cell})
    assert [(e["type"], e.get("msg_type")) for e in events] == [("iopub", "execute_result"), ("done", None)]
    assert events[0]["content"]["execution_count"] == 7
    done = events[-1]
    assert done["etag"] == http.get("/session", params=q).json()["etag"]
    reply = done["reply"]
    assert set(reply) == {"status", "execution_count", "payload", "user_expressions"}
    assert (reply["status"], reply["execution_count"]) == ("ok", 7)
    assert reply["user_expressions"]["twice"]["data"]["text/plain"] == "42"

    # The cell's count is the session's: Out[7], and a failing cell's traceback says Cell In[8].
    events = stream_lines(http, identifier, {"code": "assert Out[7] == 21\nundefined_name", "jupyter": {"executionCount": 8}})
    reply = events[-1]["reply"]
    assert (reply["status"], reply["ename"]) == ("error", "NameError")
    assert "Cell In[8]" in re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply["traceback"]))
    assert [e["msg_type"] for e in events[:-1]] == ["error"]


def test_a_silent_jupyter_cell_shows_nothing_and_keeps_the_count(http, identifier):
    stream_lines(http, identifier, {"code": "1", "jupyter": {"executionCount": 3}})
    events = stream_lines(http, identifier, {"code": "print('hidden?'); 5", "jupyter": {"silent": True, "storeHistory": False}})
    assert [e["type"] for e in events] == ["iopub", "done"]  # a silent cell's prints still show; its result does not
    assert events[0]["content"]["text"] == "hidden?\n"
    events = stream_lines(http, identifier, {"code": "Out.get(3), 4", "jupyter": {"executionCount": 4}})
    assert events[0]["content"]["data"]["text/plain"] == "(1, 4)"


@pytest.mark.parametrize(
    "jupyter, message",
    [([], "'jupyter' must be a JSON object"), ({"executionCount": "x"}, "jupyter.executionCount"), ({"executionCount": -1}, "jupyter.executionCount"),
     ({"silent": "maybe"}, "jupyter.silent"), ({"userExpressions": {"a": 1}}, "userExpressions")],
)
def test_a_bad_jupyter_member_is_refused_before_anything_runs(http, identifier, jupyter, message):
    r = http.post(STREAM, params={"api-version": "2025-10-02-preview", "identifier": identifier}, json={"code": "1", "jupyter": jupyter})
    assert message in assert_envelope(r, 400, "SessionRequestValidationFailed")["message"]
    assert_envelope(http.get("/session", params={"api-version": "2025-10-02-preview", "identifier": identifier}), 404)


def test_if_match_runs_code_only_in_the_session_it_names(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    # No session yet: If-Match never creates one.
    for tag in ['"0123abcd"', "*"]:
        r = http.post(STREAM, params=q, json={"code": "created = True"}, headers={"If-Match": tag})
        assert "no longer exists" in assert_envelope(r, 404, "SessionWithIdentifierNotFound")["message"]
    assert_envelope(http.get("/session", params=q), 404)

    etag = stream_lines(http, identifier, {"code": "state = 'kept'"})[-1]["etag"]
    events = stream_lines(http, identifier, {"code": "state"}, headers={"If-Match": f'"{etag}"'})
    assert events[0]["content"]["data"]["text/plain"] == "'kept'"
    assert stream_lines(http, identifier, {"code": "state"}, headers={"If-Match": "*"})[-1]["status"] == "ok"

    # The session ends and the identifier gets a new one: the old etag no longer runs anything there.
    assert http.delete("/session", params=q).status_code == 204
    new_etag = stream_lines(http, identifier, {"code": "fresh = 1"})[-1]["etag"]
    assert new_etag != etag
    r = http.post(STREAM, params=q, json={"code": "ran_in_the_wrong_session = 1"}, headers={"If-Match": f'"{etag}"'})
    assert_envelope(r, 404, "SessionWithIdentifierNotFound")
    names = stream_lines(http, identifier, {"code": "sorted(k for k in globals() if not k.startswith('_'))"}, headers={"If-Match": f'W/"{new_etag}"'})
    assert "ran_in_the_wrong_session" not in names[0]["content"]["data"]["text/plain"]

def test_stream_delivers_output_while_running(http, identifier):
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)"
    arrivals = []
    with http.stream("POST", "/.local/executions/stream", params={"api-version": "2025-10-02-preview", "identifier": identifier}, json={"code": code}) as r:
        start = time.monotonic()
        for line in r.iter_lines():
            if line:
                arrivals.append((time.monotonic() - start, json.loads(line)))
    stream_times = [t for t, e in arrivals if e.get("msg_type") == "stream"]
    assert len(stream_times) == 3
    # Each line arrived before the cell ended (0.8 s of sleeping after the first).
    assert stream_times[0] < arrivals[-1][0] - 0.5


def test_interrupt_extension_keeps_state(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    execute(http, "2025-10-02-preview", identifier, "kept = 5")
    import threading

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", execute(http, "2025-10-02-preview", identifier, "while True: pass")))
    t.start()
    time.sleep(1.0)
    started = time.monotonic()
    assert http.post("/.local/executions/interrupt", params=q).status_code == 204
    t.join(10)
    assert time.monotonic() - started < 1.5
    body = out["r"].json()
    assert body["status"] == "Failed" and "KeyboardInterrupt" in body["result"]["stderr"]
    assert result_of("2025-10-02-preview", execute(http, "2025-10-02-preview", identifier, "kept")) == 5


def test_complete_and_inspect_extensions(http, identifier):
    q = {"api-version": "2025-10-02-preview", "identifier": identifier}
    execute(http, "2025-10-02-preview", identifier, "def remote_function_xyz():\n    'Docstring from the session.'\n")
    c = http.post("/.local/complete", params=q, json={"code": "remote_func", "cursor_pos": 11}).json()
    assert "remote_function_xyz" in c["matches"]
    i = http.post("/.local/inspect", params=q, json={"code": "remote_function_xyz", "cursor_pos": 5}).json()
    assert i["found"] and "Docstring from the session." in i["data"]["text/plain"]
    assert_envelope(http.post("/.local/complete", params=q, json={"code": "x", "cursor_pos": 9}), 400)


def test_strict_pool_has_no_extensions(strict_pool, identifier):
    with httpx.Client(base_url=strict_pool.endpoint, headers=strict_pool.headers, timeout=60) as http:
        q = {"api-version": "2025-10-02-preview", "identifier": identifier}
        for route in ["/.local/executions/stream", "/.local/executions/interrupt", "/.local/complete", "/.local/inspect"]:
            assert_envelope(http.post(route, params=q, json={"code": "1"}), 404)
        assert "localPool" not in http.get("/metadata", params={"api-version": "2025-10-02-preview"}).json()
        assert execute(http, "2025-10-02-preview", identifier, "1 + 1").json()["result"]["executionResult"] == 2


# ---------------------------------------------------------------- limits and lifecycle


def test_execution_timeout_interrupts_and_keeps_state(http, identifier):
    execute(http, "2025-10-02-preview", identifier, "kept = 1")
    start = time.monotonic()
    r = execute(http, "2025-10-02-preview", identifier, "import time; time.sleep(30)", timeoutInSeconds=2)
    elapsed = time.monotonic() - start
    body = r.json()
    assert body["status"] == "Failed" and body["error"]["error"]["code"] == "Timeout"
    assert 2 <= elapsed < 3.5
    assert result_of("2025-10-02-preview", execute(http, "2025-10-02-preview", identifier, "kept")) == 1


def test_timeout_when_code_ignores_sigint_ends_the_session(http, identifier):
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    start = time.monotonic()
    body = execute(http, "2025-10-02-preview", identifier, code, timeoutInSeconds=1).json()
    # 1 s timeout + 2 s grace + ending the sandbox; the margin is for a loaded machine, the bound for "not forever".
    assert time.monotonic() - start < 10
    assert body["status"] == "Failed" and "session was ended" in body["error"]["error"]["message"]
    assert_envelope(http.get("/session", params={"api-version": "2025-10-02-preview", "identifier": identifier}), 404)
    assert result_of("2025-10-02-preview", execute(http, "2025-10-02-preview", identifier, "1")) == 1


def test_interpreter_crash_is_reported_and_next_call_is_fresh(http, identifier):
    execute(http, "2025-10-02-preview", identifier, "x = 1")
    body = execute(http, "2025-10-02-preview", identifier, "import os; os._exit(3)").json()
    assert body["status"] == "Failed" and body["error"]["error"]["code"] == "SessionCrashed"
    assert "died" in body["error"]["error"]["message"]
    assert result_of("2025-10-02-preview", execute(http, "2025-10-02-preview", identifier, "'x' in globals()")) is False


def test_idle_cooldown_and_max_sessions(start_pool):
    pool = start_pool("--cooldown", "2", "--allow-short-cooldown", "--max-sessions", "1", ready=0)
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=60) as http:
        assert execute(http, "2025-10-02-preview", "first", "y = 2").status_code == 200
        r = execute(http, "2025-10-02-preview", "second", "1")
        assert_envelope(r, 429, "SessionPoolFull")
        assert int(r.headers["retry-after"]) > 0
        time.sleep(3.5)
        assert_envelope(http.get("/session", params={"api-version": "2025-10-02-preview", "identifier": "first"}), 404)
        assert execute(http, "2025-10-02-preview", "second", "1").status_code == 200


def test_cooldown_outside_azure_range_is_refused():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "serve", "--cooldown", "10"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "between 300 and 3600" in r.stderr
