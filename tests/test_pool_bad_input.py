"""Bad input never gets a 5xx, and never costs the client its connection (issue 12, item 4).

Each test speaks raw HTTP/1.1 (h11 over one socket) so that it can tell
whether the server kept the keep-alive connection: after every refused
request, a good request on the *same* connection must succeed. Both a
normal and an Azure-strict pool, except for the extension-only race.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

import h11
import pytest

pytestmark = pytest.mark.slow

V = "2025-10-02-preview"


class Connection:
    """One keep-alive HTTP/1.1 connection; fails the test if the server closes it."""

    def __init__(self, pool) -> None:
        url = urlsplit(pool.endpoint)
        self.host = url.netloc
        self.sock = socket.create_connection((url.hostname, url.port), timeout=60)
        self.conn = h11.Connection(h11.CLIENT)
        self.auth = f"Bearer {pool.token}"

    def request(self, method: str, path: str, query: dict | None = None, body: bytes = b"", headers: dict | None = None):
        target = path + ("?" + urlencode(query) if query else "")
        hdrs = {"Host": self.host, "Authorization": self.auth, "Content-Length": str(len(body)), **(headers or {})}
        self.sock.sendall(self.conn.send(h11.Request(method=method, target=target, headers=list(hdrs.items()))))
        if body:
            self.sock.sendall(self.conn.send(h11.Data(data=body)))
        self.sock.sendall(self.conn.send(h11.EndOfMessage()))
        response, data = None, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                chunk = self.sock.recv(1 << 16)
                assert chunk, "the server closed the connection"
                self.conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("the server closed the connection")
        headers_out = {k.decode().lower(): v.decode() for k, v in response.headers}
        assert headers_out.get("connection", "").lower() != "close", "the server is closing the connection"
        self.conn.start_next_cycle()
        return response.status_code, headers_out, bytes(data)

    def close(self) -> None:
        self.sock.close()


def assert_envelope(status: int, headers: dict, body: bytes, expected: int, code: str | None = None) -> dict:
    assert status == expected, body
    error = json.loads(body)["error"]
    assert headers["x-ms-error-code"] == error["code"] and error["message"].strip()
    if code is not None:
        assert error["code"] == code, error
    return error


def execute_body(code: str) -> bytes:
    return json.dumps({"code": code, "codeInputType": "Inline", "executionType": "Synchronous", "timeoutInSeconds": 60}).encode()


def assert_still_usable(c: Connection, identifier: str) -> None:
    status, _, body = c.request("POST", "/executions", {"api-version": V, "identifier": identifier}, execute_body("6 * 7"))
    assert status == 200 and json.loads(body)["result"]["executionResult"] == 42, body


@pytest.fixture(params=["local", "strict"])
def pool(request):
    return request.getfixturevalue("local_pool" if request.param == "local" else "strict_pool")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"code": "1", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"code": "1", "extra": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    ],
    ids=["array", "in-an-execute-body", "objects"],
)
def test_deeply_nested_json_is_a_400_and_the_connection_stays(pool, identifier, body):
    c = Connection(pool)
    try:
        status, headers, answer = c.request("POST", "/executions", {"api-version": V, "identifier": identifier}, body, {"Content-Type": "application/json"})
        error = assert_envelope(status, headers, answer, 400, "SessionRequestValidationFailed")
        assert "nested too deeply" in error["message"]
        assert_still_usable(c, identifier)
    finally:
        c.close()


@pytest.mark.parametrize(
    "version,path",
    [
        (V, "/files/%FF%FE.txt"),
        (V, "/files/%FF%FE.txt/content"),
        ("2024-08-02-preview", "/files/content/%C3%28/name.txt"),
        ("2024-08-02-preview", "/files/%ED%A0%80"),  # an encoded UTF-16 surrogate is not UTF-8 either
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_file_path_that_is_not_utf8_is_a_400_and_the_connection_stays(pool, identifier, version, path, method):
    c = Connection(pool)
    try:
        status, headers, answer = c.request(method, path, {"api-version": version, "identifier": identifier})
        error = assert_envelope(status, headers, answer, 400, "InvalidFileName")
        assert "UTF-8" in error["message"]
        assert_still_usable(c, identifier)
    finally:
        c.close()


MULTIPART_HEAD = b'--x\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'


@pytest.mark.parametrize(
    "body",
    [
        MULTIPART_HEAD + b"A" * 100_000,  # cut off inside the file
        MULTIPART_HEAD + b"A" * 100_000 + b"\r\n--x",  # the part ended, the closing '--' never came
        MULTIPART_HEAD + b"A" * 100_000 + b"\r\n--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nz",
    ],
    ids=["inside-the-file", "no-closing-dashes", "inside-a-later-part"],
)
def test_a_truncated_multipart_upload_is_refused_and_nothing_is_stored(pool, identifier, body):
    c = Connection(pool)
    q = {"api-version": V, "identifier": identifier}
    try:
        status, headers, answer = c.request("POST", "/files", q, body, {"Content-Type": "multipart/form-data; boundary=x"})
        error = assert_envelope(status, headers, answer, 400, "InvalidUpload")
        assert "cut off" in error["message"] and "nothing was stored" in error["message"]
        status, _, listing = c.request("GET", "/files", q)
        assert status == 200 and json.loads(listing)["value"] == []
        # The same upload, complete, is stored whole: the refusal was about the framing only.
        status, _, stored = c.request("POST", "/files", q, MULTIPART_HEAD + b"B" * 100_000 + b"\r\n--x--\r\n", {"Content-Type": "multipart/form-data; boundary=x"})
        assert status == 200 and json.loads(stored)["sizeInBytes"] == 100_000, stored
    finally:
        c.close()


def test_a_completion_racing_delete_session_is_a_404_and_the_connection_stays(local_pool, identifier):
    q = {"api-version": V, "identifier": identifier}
    outcomes = []
    for attempt in range(4):
        ident = f"{identifier}-{attempt}"
        q = {"api-version": V, "identifier": ident}
        c, d = Connection(local_pool), Connection(local_pool)
        try:
            assert_still_usable(c, ident)
            # A busy session holds the completion at the session lock; DELETE lands meanwhile.
            runner = Connection(local_pool)
            busy = threading.Thread(target=lambda: outcomes.append(("run", *runner.request("POST", "/executions", q, execute_body("import time; time.sleep(1.5)"))[::2])))
            busy.start()
            time.sleep(0.3 + 0.1 * attempt)
            got: list = []
            completing = threading.Thread(target=lambda: got.append(c.request("POST", "/.local/complete", q, b'{"code": "pri", "cursor_pos": 3}')))
            completing.start()
            time.sleep(0.2)
            status, _, _ = d.request("DELETE", "/session", q)
            assert status == 204
            completing.join(30)
            busy.join(30)
            runner.close()
            status, headers, answer = got[0]
            if status != 200:
                assert_envelope(status, headers, answer, 404, "SessionWithIdentifierNotFound")
            outcomes.append(("complete", status))
            assert_still_usable(c, ident)
        finally:
            c.close()
            d.close()
    assert all(status < 500 for _, status, *_ in outcomes), outcomes
    assert ("complete", 404) in outcomes, outcomes  # the race was actually run


def test_an_execution_racing_delete_session_is_not_a_5xx(pool, identifier):
    q = {"api-version": V, "identifier": identifier}
    c, d = Connection(pool), Connection(pool)
    try:
        assert_still_usable(c, identifier)
        got: list = []
        running = threading.Thread(target=lambda: got.append(c.request("POST", "/executions", q, execute_body("import time; time.sleep(3)"))))
        running.start()
        time.sleep(1.0)
        assert d.request("DELETE", "/session", q)[0] == 204
        running.join(30)
        status, _, answer = got[0]
        assert status < 500, answer
        assert_still_usable(c, identifier)
    finally:
        c.close()
        d.close()


def test_405_names_every_allowed_method(pool, identifier):
    c = Connection(pool)
    try:
        status, headers, answer = c.request("PUT", "/files/x.txt", {"api-version": V, "identifier": identifier})
        assert_envelope(status, headers, answer, 405, "MethodNotAllowed")
        assert {m.strip() for m in headers["allow"].split(",")} >= {"GET", "DELETE"}
        assert_still_usable(c, identifier)
    finally:
        c.close()
