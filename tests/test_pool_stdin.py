"""The local pool's `stdin` extension and long native cells, over raw HTTP.

A cell streamed with ``"jupyter": {"allowStdin": true}`` that calls ``input()``
sends a ``stdin`` line with the ``input_request``; ``POST .local/executions/input``
answers it. Native cells take their own timeout (``jupyter.timeout``), not
capped at Azure's 220 s, and quiet streams send keepalive lines. The Azure
contract routes keep the cap, and an Azure-strict pool has none of this.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

VERSION = "2025-10-02-preview"
STREAM = "/.local/executions/stream"
INPUT = "/.local/executions/input"


@pytest.fixture(scope="module")
def http(local_pool):
    with httpx.Client(base_url=local_pool.endpoint, headers=local_pool.headers, timeout=60) as c:
        yield c


def params(identifier: str) -> dict[str, str]:
    return {"api-version": VERSION, "identifier": identifier}


def assert_envelope(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert r.headers["x-ms-error-code"] == body["error"]["code"] and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def test_metadata_names_the_stdin_extension(http):
    extensions = http.get("/metadata", params={"api-version": VERSION}).json()["localPool"]["extensions"]
    assert "stdin" in extensions


def test_input_is_relayed_and_answered(http, local_pool, identifier):
    body = {"code": "name = input('Your name? ')\nprint('hello', name)\nname", "jupyter": {"allowStdin": True, "executionCount": 2}}
    lines = []
    with http.stream("POST", STREAM, params=params(identifier), json=body) as r:
        assert r.status_code == 200
        for raw in r.iter_lines():
            line = json.loads(raw)
            lines.append(line)
            if line["type"] == "stdin":
                # A second connection answers while the stream waits, as the kernel does.
                with httpx.Client(base_url=local_pool.endpoint, headers=local_pool.headers) as other:
                    assert other.post(INPUT, params=params(identifier), json={"value": "Ada"}).status_code == 204
    assert lines[0] == {"type": "stdin", "msg_type": "input_request", "content": {"prompt": "Your name? ", "password": False}}
    done = lines[-1]
    assert done["type"] == "done" and done["reply"]["status"] == "ok"
    texts = [line["content"].get("text") for line in lines if line["type"] == "iopub" and line["msg_type"] == "stream"]
    assert "".join(texts) == "hello Ada\n"


def test_without_allow_stdin_input_fails_at_once(http, identifier):
    with http.stream("POST", STREAM, params=params(identifier), json={"code": "input('x')", "jupyter": {}}) as r:
        lines = [json.loads(raw) for raw in r.iter_lines()]
    assert lines[-1]["reply"]["ename"] == "StdinNotImplementedError"
    assert not any(line["type"] == "stdin" for line in lines)


@pytest.mark.parametrize("body", [None, {}, {"value": 3}, {"value": "x" * ((1 << 20) + 1)}, [1]])
def test_bad_input_answers_are_refused(http, identifier, body):
    http.post("/executions", params=params(identifier), json={"code": "1", "timeoutInSeconds": 10})
    r = http.post(INPUT, params=params(identifier), content=b"" if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert_envelope(r, 400)


def test_an_answer_nobody_waits_for_is_a_conflict_and_an_unknown_session_not_found(http, identifier):
    http.post("/executions", params=params(identifier), json={"code": "1", "timeoutInSeconds": 10})
    assert_envelope(http.post(INPUT, params=params(identifier), json={"value": "x"}), 409, "NoInputRequested")
    assert_envelope(http.post(INPUT, params=params(identifier + "-none"), json={"value": "x"}), 404)


def test_an_interrupt_ends_a_cell_waiting_for_input(http, local_pool, identifier):
    def interrupt_when_asked() -> None:
        with httpx.Client(base_url=local_pool.endpoint, headers=local_pool.headers) as other:
            time.sleep(1.0)
            other.post("/.local/executions/interrupt", params=params(identifier))

    body = {"code": "kept = 1\nvalue = input()", "jupyter": {"allowStdin": True}}
    threading.Thread(target=interrupt_when_asked).start()
    with http.stream("POST", STREAM, params=params(identifier), json=body) as r:
        lines = [json.loads(raw) for raw in r.iter_lines()]
    assert lines[-1]["reply"]["ename"] == "KeyboardInterrupt"


def test_native_cells_take_their_own_timeout_beyond_220_s_and_keep_quiet_streams_alive(http, identifier):
    body = {"code": "import time\ntime.sleep(11)\n'slept'", "timeoutInSeconds": 220, "jupyter": {"timeout": 0}}
    with http.stream("POST", STREAM, params=params(identifier), json=body, timeout=60) as r:
        lines = [json.loads(raw) for raw in r.iter_lines()]
    assert {"type": "keepalive"} in lines and lines[-1]["status"] == "ok"
    with http.stream("POST", STREAM, params=params(identifier), json={"code": "1", "jupyter": {"timeout": 3600}}) as r:
        assert json.loads(list(r.iter_lines())[-1])["status"] == "ok"
    with http.stream("POST", STREAM, params=params(identifier), json={"code": "import time\ntime.sleep(5)", "jupyter": {"timeout": 1}}) as r:
        done = json.loads(list(r.iter_lines())[-1])
    assert done["status"] == "timeout" and "timeout of 1 s" in done["execution"]["result"]["stderr"]


@pytest.mark.parametrize("timeout", [-1, "soon", True, 1e12])
def test_a_bad_cell_timeout_is_refused(http, identifier, timeout):
    r = http.post(STREAM, params=params(identifier), json={"code": "1", "jupyter": {"timeout": timeout}})
    assert_envelope(r, 400, "SessionRequestValidationFailed")


def test_the_azure_routes_keep_the_220_s_cap_and_strict_pools_have_no_input_route(http, strict_pool, identifier):
    r = http.post("/executions", params=params(identifier), json={"code": "1", "timeoutInSeconds": 100000})
    assert r.status_code == 200  # accepted, and capped, as Azure documents 220 s per execution
    with httpx.Client(base_url=strict_pool.endpoint, headers=strict_pool.headers) as strict:
        assert_envelope(strict.post(INPUT, params=params(identifier), json={"value": "x"}), 404)
        extensions = strict.get("/metadata", params={"api-version": VERSION}).json().get("localPool")
        assert extensions is None
