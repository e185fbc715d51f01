"""Retries, backoff, Retry-After and timeouts, for both clients.

The rule under test: reads are re-sent after transient failures; a request
that runs code is re-sent only when it cannot have reached the pool.
"""

from __future__ import annotations

import email.utils
import io
import json
import time

import httpx
import pytest

from azure_sessions_kernel.client import (
    ConfigurationError,
    ConnectError,
    ExecutionStatus,
    ExecutionTimeoutError,
    PoolFullError,
    RetryPolicy,
    ServerError,
    Timeouts,
)
from azure_sessions_kernel.client._config import parse_retry_after

from .helpers import SESSION, Recorder

OK_LIST = httpx.Response(200, json={"value": [], "nextLink": None})
OK_EXEC = httpx.Response(200, json={"id": "e", "identifier": SESSION, "executionType": "Synchronous", "status": "Succeeded", "result": {"stdout": "", "stderr": "", "executionResult": 1}})
BUSY = httpx.Response(503, json={"error": {"code": "SessionCreationFailed", "message": "No session could be started"}})


def test_429_with_retry_after_seconds_then_success(make_client):
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "2"}), OK_LIST)
    client = make_client(rec)
    assert client.list_files(SESSION) == []
    assert len(rec.requests) == 2 and client.sleeps == [2.0]


def test_retry_after_as_an_http_date(make_client):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    rec = Recorder(httpx.Response(503, headers={"Retry-After": when}), OK_LIST)
    client = make_client(rec)
    client.list_files(SESSION)
    assert 27 <= client.sleeps[0] <= 30


def test_503_twice_backs_off_exponentially_with_jitter(make_client):
    rec = Recorder(BUSY, BUSY, OK_LIST)
    client = make_client(rec, retry=RetryPolicy(backoff=0.5))
    client.list_files(SESSION)
    assert len(rec.requests) == 3
    first, second = client.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0


def test_gives_up_after_max_attempts(make_client):
    rec = Recorder(BUSY)
    client = make_client(rec, retry=RetryPolicy(max_attempts=3, jitter=False))
    with pytest.raises(ServerError, match="SessionCreationFailed"):
        client.get_file(SESSION, "a.txt")
    assert len(rec.requests) == 3 and client.sleeps == [0.5, 1.0]


def test_a_retry_after_beyond_the_limit_is_raised_not_waited(make_client):
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "3600"}))
    client = make_client(rec)
    with pytest.raises(PoolFullError) as caught:
        client.list_files(SESSION)
    assert caught.value.retry_after == 3600 and client.sleeps == [] and len(rec.requests) == 1


def test_idempotent_reads_are_retried_after_a_read_timeout(make_client):
    rec = Recorder(httpx.ReadTimeout, OK_LIST)
    assert make_client(rec).list_files(SESSION) == []
    assert len(rec.requests) == 2


def test_execution_is_not_resent_after_a_read_timeout(make_client):
    rec = Recorder(httpx.ReadTimeout, OK_EXEC)
    client = make_client(rec, timeout=Timeouts(execution=30, margin=5))
    with pytest.raises(ExecutionTimeoutError, match="no answer within 35 s.*may still be running"):
        client.execute(SESSION, "import time; time.sleep(60)")
    assert len(rec.requests) == 1 and client.sleeps == []


@pytest.mark.parametrize("failure", [BUSY, httpx.Response(429, headers={"Retry-After": "1"})])
def test_execution_is_not_resent_after_a_retryable_status(make_client, failure):
    rec = Recorder(failure, OK_EXEC)
    with pytest.raises((ServerError, PoolFullError)) as caught:
        make_client(rec).execute(SESSION, "counter += 1")
    assert len(rec.requests) == 1
    assert caught.value.retry_after == (1 if caught.value.status_code == 429 else None)


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_execution_is_resent_when_nothing_reached_the_pool(make_client, failure):
    rec = Recorder(failure, OK_EXEC)
    execution = make_client(rec).execute(SESSION, "counter += 1")
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert len(rec.requests) == 2 and rec.requests[0].content == rec.requests[1].content


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, BUSY, httpx.Response(429, headers={"Retry-After": "1"})])
def test_an_execution_declared_safe_to_repeat_is_resent_like_a_read(make_client, failure):
    """The kernel's long-poll calls (``resend=True``) are idempotent: a lost answer is asked for again."""
    rec = Recorder(failure, OK_EXEC)
    assert make_client(rec).execute(SESSION, "poll()", resend=True).result == 1
    assert len(rec.requests) == 2


def test_connect_errors_exhaust_into_connect_error(make_client):
    rec = Recorder(httpx.ConnectError)
    client = make_client(rec, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(ConnectError, match="could not connect to eastus.dynamicsessions.io"):
        client.metadata()
    assert len(rec.requests) == 2


def test_a_seekable_upload_is_rewound_and_resent(make_client):
    rec = Recorder(BUSY, httpx.Response(200, json={"name": "a.bin", "type": "File", "sizeInBytes": 5}))
    source = io.BytesIO(b"skip:hello")
    source.seek(5)  # uploads start at the file object's position
    make_client(rec).upload(SESSION, source, "a.bin")
    assert len(rec.requests) == 2
    assert rec.requests[0].content == rec.requests[1].content and b"\r\n\r\nhello\r\n" in rec.requests[1].content


def test_an_unrewindable_upload_is_not_resent(make_client):
    class Pipe(io.RawIOBase):  # a non-seekable stream, like a socket or pipe
        def __init__(self) -> None:
            self.data = io.BytesIO(b"hello")

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.data.read(n)

    rec = Recorder(BUSY, OK_LIST)
    with pytest.raises(ServerError):
        make_client(rec).upload(SESSION, Pipe(), "a.bin")
    assert len(rec.requests) == 1 and "content-length" not in rec.requests[0].headers


def test_read_timeout_follows_the_execution_deadline(make_client):
    rec = Recorder(OK_EXEC, OK_EXEC, OK_LIST)
    client = make_client(rec, timeout=Timeouts(connect=3, read=40, margin=15))
    client.execute(SESSION, "1", timeout=30)
    client.execute(SESSION, "1")
    client.list_files(SESSION)
    timeouts = [r.extensions["timeout"] for r in rec.requests]
    assert timeouts[0] == {"connect": 3, "read": 45, "write": 45, "pool": 3}
    assert json.loads(rec.requests[1].content)["timeoutInSeconds"] == 220 and timeouts[1]["read"] == 235
    assert timeouts[2] == {"connect": 3, "read": 40, "write": 40, "pool": 3}


@pytest.mark.parametrize("deadline", [0, -1, 221, float("nan")])
def test_execution_timeouts_beyond_azures_cap_are_refused(make_client, deadline):
    rec = Recorder(OK_EXEC)
    with pytest.raises(ConfigurationError, match="execution timeout"):
        make_client(rec).execute(SESSION, "1", timeout=deadline)
    with pytest.raises(ConfigurationError, match="220"):
        Timeouts(execution=300)
    assert rec.requests == []


def test_wait_execution_gives_up_at_its_deadline(make_client):
    running = httpx.Response(200, json={"id": "e1", "identifier": SESSION, "status": "Running"})
    rec = Recorder(running)
    client = make_client(rec)
    with pytest.raises(ExecutionTimeoutError, match="still Running after 5 s"):
        client.wait_execution(SESSION, "e1", poll_interval=2, deadline=5)
    assert client.sleeps == [2, 2, 1] and len(rec.requests) == 4


def test_retry_policy_delays():
    policy = RetryPolicy(max_attempts=5, backoff=1, max_backoff=3, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 3, 3, None]
    assert policy.delay(1, retry_after=7) == 7 and policy.delay(1, retry_after=61) is None
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)


def test_parse_retry_after_forms():
    assert parse_retry_after(httpx.Headers({"Retry-After": "5"})) == 5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert parse_retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), now=1445412470) == 10
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None
