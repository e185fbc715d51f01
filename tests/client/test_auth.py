"""Bearer tokens: static, from a credential (cached, refreshed early), never leaked."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from azure_sessions_kernel.client import (
    AsyncSessionsClient,
    AuthenticationError,
    ConfigurationError,
    RetryPolicy,
    SessionsClient,
    SessionsError,
)

from .helpers import ENDPOINT, SESSION, TOKEN, Recorder

SCOPE = "https://dynamicsessions.io/.default"
OK_LIST = httpx.Response(200, json={"value": [], "nextLink": None})


class FakeCredential:
    """A TokenCredential (or AsyncTokenCredential) handing out tok-1, tok-2, ..."""

    def __init__(self, lifetime: float, *, asynchronous: bool = False, error: Exception | None = None) -> None:
        self.lifetime = lifetime
        self.asynchronous = asynchronous
        self.error = error
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    def _next(self, *scopes: str) -> AccessToken:
        self.scopes.append(scopes)
        if self.error:
            raise self.error
        return AccessToken(f"cred-token-{len(self.scopes)}", int(time.time() + self.lifetime))

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        if self.asynchronous:

            async def later() -> AccessToken:
                return self._next(*scopes)

            return later()  # type: ignore[return-value]
        return self._next(*scopes)

    def close(self) -> object:
        self.closed = True
        if self.asynchronous:

            async def done() -> None:
                return None

            return done()
        return None


@pytest.fixture
def credential_for(kind):
    return lambda lifetime, **kw: FakeCredential(lifetime, asynchronous=kind == "async", **kw)


def bearer(request: httpx.Request) -> str:
    return request.headers["authorization"]


def test_static_token(make_client):
    rec = Recorder(OK_LIST)
    make_client(rec).list_files(SESSION)
    assert bearer(rec.last) == f"Bearer {TOKEN}"


def test_credential_token_is_cached_for_its_lifetime(make_client, credential_for):
    credential = credential_for(3600)
    rec = Recorder(OK_LIST)
    client = make_client(rec, credential=credential)
    client.list_files(SESSION)
    client.list_files(SESSION)
    assert credential.scopes == [(SCOPE,)]
    assert [bearer(r) for r in rec.requests] == ["Bearer cred-token-1"] * 2


def test_token_is_refreshed_five_minutes_before_expiry(make_client, credential_for):
    credential = credential_for(299)  # already inside the refresh margin
    rec = Recorder(OK_LIST)
    client = make_client(rec, credential=credential)
    client.list_files(SESSION)
    client.list_files(SESSION)
    assert [bearer(r) for r in rec.requests] == ["Bearer cred-token-1", "Bearer cred-token-2"]


def test_a_401_gets_one_fresh_token(make_client, credential_for):
    credential = credential_for(3600)
    unauthorized = httpx.Response(401, json={"error": {"code": "InvalidAuthenticationToken", "message": "Token expired"}})
    rec = Recorder(unauthorized, OK_LIST)
    client = make_client(rec, credential=credential)
    client.list_files(SESSION)
    assert [bearer(r) for r in rec.requests] == ["Bearer cred-token-1", "Bearer cred-token-2"]

    rec.responses = [unauthorized]
    with pytest.raises(AuthenticationError, match="must be issued for https://dynamicsessions.io"):
        client.execute(SESSION, "1")
    assert len(rec.requests) == 4  # one retry, then the error


def test_a_static_token_is_not_retried_on_401(make_client):
    rec = Recorder(httpx.Response(401))
    with pytest.raises(AuthenticationError):
        make_client(rec).list_files(SESSION)
    assert len(rec.requests) == 1


def test_credential_failure_is_an_authentication_error(make_client, credential_for):
    credential = credential_for(3600, error=ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token"))
    rec = Recorder(OK_LIST)
    with pytest.raises(AuthenticationError, match=f"Could not get a token for {SCOPE} from credential FakeCredential") as caught:
        make_client(rec, credential=credential).list_files(SESSION)
    assert caught.value.status_code is None and rec.requests == []


def test_default_credential_is_created_lazily_and_closed(make_client, kind, monkeypatch):
    # Both clients default to the *sync* DefaultAzureCredential: azure.identity.aio
    # needs aiohttp, which is not a dependency (the async client runs it in a thread).
    created: list[FakeCredential] = []

    def factory() -> FakeCredential:
        created.append(FakeCredential(3600))
        return created[-1]

    monkeypatch.setattr("azure.identity.DefaultAzureCredential", factory)
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", lambda: pytest.fail("the aio credential needs aiohttp"))
    rec = Recorder(OK_LIST)
    client = make_client(rec, token=None)
    assert created == [] and "not yet created" in repr(client)

    client.list_files(SESSION)
    assert len(created) == 1 and bearer(rec.last) == "Bearer cred-token-1"
    client.close()
    assert created[0].closed


def test_the_sync_client_refuses_an_async_credential():
    client = SessionsClient(ENDPOINT, credential=FakeCredential(3600, asynchronous=True), transport=httpx.MockTransport(Recorder(OK_LIST)))
    with pytest.raises(ConfigurationError, match="use AsyncSessionsClient"):
        client.list_files(SESSION)


def test_the_async_client_accepts_a_sync_credential():
    rec = Recorder(OK_LIST)

    async def list_files() -> None:
        async with AsyncSessionsClient(ENDPOINT, credential=FakeCredential(3600), transport=httpx.MockTransport(rec)) as client:
            await client.list_files(SESSION)

    asyncio.run(list_files())
    assert bearer(rec.last) == "Bearer cred-token-1"


@pytest.mark.parametrize("kwargs", [{"token": "t", "credential": FakeCredential(1)}, {"token": ""}, {"credential": object()}])
def test_invalid_auth_arguments(kwargs):
    with pytest.raises(ConfigurationError):
        SessionsClient(ENDPOINT, **kwargs)


def test_tokens_never_reach_reprs_messages_or_logs(make_client, credential_for, caplog):
    caplog.set_level(logging.DEBUG)
    echo = httpx.Response(500, text=f"upstream said: Authorization: Bearer {TOKEN}")
    failures = [
        httpx.Response(401),
        httpx.Response(403, json={"error": {"code": "AuthorizationFailed", "message": f"Bearer {TOKEN} lacks a role"}}),
        echo,
        httpx.ConnectError,
        httpx.ReadTimeout,
        httpx.Response(200, text="not json"),
    ]
    seen: list[str] = []
    for auth in ({}, {"credential": credential_for(3600)}):
        for failure in failures:
            client = make_client(Recorder(failure), retry=RetryPolicy(max_attempts=1), **auth)
            seen.append(repr(client))
            with pytest.raises(SessionsError) as caught:
                client.execute(SESSION, "1")
            seen += [str(caught.value), repr(caught.value)]
    seen += [record.getMessage() for record in caplog.records]
    assert any("HTTP 500" in text for text in seen)  # the failures did happen
    secrets = (TOKEN, "cred-token-")
    assert [text for text in seen if any(secret in text for secret in secrets)] == []
    ours = [r.getMessage() for r in caplog.records if r.name == "azure_sessions_kernel.client"]
    assert ours and not any(SESSION in text for text in ours)  # identifiers are secrets too (§7)
