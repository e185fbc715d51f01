"""Error responses map onto the exception tree (reference §8), for both clients."""

from __future__ import annotations

import httpx
import pytest

from azure_sessions_kernel.client import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    ExtensionUnavailableError,
    NotFoundError,
    PoolFullError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
    SessionNotFoundError,
    SessionsError,
    UploadTooLargeError,
)

from .helpers import SESSION, Recorder

NO_RETRY = RetryPolicy(max_attempts=1)


def envelope(code: str, message: str) -> dict:
    """The Azure error envelope of every spec (§8)."""
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    "status, code, message, expected",
    [
        (400, "SessionRequestValidationFailed", "'code' is required", BadRequestError),
        (401, "InvalidAuthenticationToken", "The audience is invalid", AuthenticationError),
        (403, "AuthorizationFailed", "The client does not have authorization", AuthorizationError),
        (404, "ResourceNotFound", "No such route", NotFoundError),
        (404, "SessionNotFound", "Session not found", SessionNotFoundError),
        # Live Azure answers a missing session with 400 on getSession/delete (§8).
        (400, "SessionWithIdentifierNotFound", "Session with identifier was not found", SessionNotFoundError),
        # MS-POOL documents a 404 when the pool cannot allocate more sessions (§7).
        (404, "", "There are no more sessions being allocated", PoolFullError),
        (429, "TooManyRequests", "Too many sessions", PoolFullError),
        (413, "RequestEntityTooLarge", "File too large", UploadTooLargeError),
        (500, "InternalServerError", "Boom", ServerError),
        (409, "Conflict", "Busy", ApiError),
    ],
)
def test_status_and_code_select_the_exception(make_client, status, code, message, expected):
    rec = Recorder(httpx.Response(status, json=envelope(code, message), headers={"x-ms-request-id": "req-42"}))
    with pytest.raises(expected) as caught:
        make_client(rec, retry=NO_RETRY).get_file(SESSION, "a.txt")
    err = caught.value
    assert type(err) is expected
    assert (err.status_code, err.code, err.request_id) == (status, code, "req-42")
    assert str(err).startswith(f"GET files/a.txt failed with HTTP {status}")
    assert message in str(err) and (code in str(err))


def test_code_from_header_when_the_body_has_none(make_client):
    rec = Recorder(httpx.Response(400, text="`Code` field is required in the request", headers={"x-ms-error-code": "SessionWithIdentifierNotFound"}))
    with pytest.raises(SessionNotFoundError, match=r"HTTP 400 \(SessionWithIdentifierNotFound\): `Code` field is required in the request\.$"):
        make_client(rec).get_session(SESSION)


def test_nested_execution_error_and_trace_id(make_client):
    # DynamicApisNotAllowed carries a traceId (microsoft/azure-container-apps #1665, §8).
    body = {"error": {"code": "DynamicApisNotAllowed", "message": "Dynamic API calls are not allowed for session pool 'p'"}, "traceId": "trace-9"}
    rec = Recorder(httpx.Response(400, json=body))
    with pytest.raises(BadRequestError) as caught:
        make_client(rec).metadata()
    assert caught.value.request_id == "trace-9" and caught.value.code == "DynamicApisNotAllowed"


def test_forbidden_names_the_role_and_the_pool_scope(make_client):
    rec = Recorder(httpx.Response(403, json=envelope("AuthorizationFailed", "Forbidden")))
    with pytest.raises(AuthorizationError) as caught:
        make_client(rec).execute(SESSION, "1")
    text = str(caught.value)
    assert '"Azure ContainerApps Session Executor"' in text
    assert "--scope /subscriptions/S/resourceGroups/R/providers/Microsoft.App/sessionPools/P" in text


def test_server_errors_are_not_retried_unless_transient(make_client):
    rec = Recorder(httpx.Response(500, json=envelope("InternalServerError", "Boom")))
    with pytest.raises(ServerError):
        make_client(rec).list_files(SESSION)
    assert len(rec.requests) == 1


@pytest.mark.parametrize("status", [404, 405])
def test_missing_extension_route(make_client, status):
    rec = Recorder(httpx.Response(status, json=envelope("NotFound", "No route")))
    client = make_client(rec)
    with pytest.raises(ExtensionUnavailableError, match="does not offer the local-pool extensions"):
        client.complete(SESSION, "x", 1)
    with pytest.raises(ExtensionUnavailableError):
        list(client.execute_stream(SESSION, "x"))


def test_interrupting_a_missing_session_is_not_a_missing_extension(make_client):
    rec = Recorder(httpx.Response(404, json=envelope("SessionNotFound", "No such session")))
    with pytest.raises(SessionNotFoundError):
        make_client(rec).interrupt(SESSION)


@pytest.mark.parametrize(
    "response, message",
    [
        (httpx.Response(200, text="<html>proxy</html>", headers={"content-type": "text/html"}), "expected a JSON body"),
        (httpx.Response(200, json=[1, 2]), "Expected a JSON object for an execution"),
    ],
)
def test_malformed_bodies(make_client, response, message):
    with pytest.raises(ResponseFormatError, match=message):
        make_client(Recorder(response)).execute(SESSION, "1")


def test_every_error_is_a_sessions_error():
    for cls in (ApiError, ResponseFormatError, ExtensionUnavailableError, PoolFullError):
        assert issubclass(cls, SessionsError)
    assert issubclass(SessionNotFoundError, NotFoundError)
