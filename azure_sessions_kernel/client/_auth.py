"""Bearer-token authentication as ``httpx.Auth`` flows.

Two sources of tokens (reference §3):

* a static token (the local pool, or a token obtained elsewhere);
* an azure-identity credential asked for ``https://dynamicsessions.io/.default``;
  the token is cached and refreshed five minutes before it expires. With no
  credential given, ``DefaultAzureCredential`` is created on the first
  request, so a client that is never used (or talks to the local pool with
  a static token) never touches Azure.

Tokens live only in the ``Authorization`` header of outgoing requests: the
flows' reprs describe the source, never the value.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from .. import wire
from ._exceptions import AuthenticationError, ConfigurationError, scrub

#: Refresh this long before expiry, as LangChain and LlamaIndex do (reference §3).
REFRESH_MARGIN_SECONDS = 300.0


class BearerAuth(httpx.Auth, abc.ABC):
    """Base of the token flows; ``invalidate`` forgets a cached token after a 401."""

    #: Whether a fresh token may fix a 401 (not for a static token).
    refreshable = False

    def invalidate(self) -> None:
        """Drop any cached token so the next request asks for a new one."""

    def close(self) -> None:
        """Release what the flow created itself (a sync default credential)."""

    async def aclose(self) -> None:
        """Release what the flow created itself (an async default credential)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The token source for reprs and messages, never the token."""


class StaticTokenAuth(BearerAuth):
    """A fixed bearer token, e.g. the local pool's ``--token``."""

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigurationError("token must be a non-empty string.")
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def describe(self) -> str:
        return "static token"

    def __repr__(self) -> str:
        return "StaticTokenAuth(<hidden>)"


class CredentialAuth(BearerAuth):
    """Tokens from an azure-identity credential, cached until 5 minutes before expiry.

    ``credential`` is a ``TokenCredential`` for the sync client and an
    ``AsyncTokenCredential`` (or, blocking the loop while it works, a sync
    one) for the async client; ``None`` creates ``DefaultAzureCredential``
    of the right kind on first use and closes it with the client.
    """

    refreshable = True

    def __init__(self, credential: Any | None, *, scope: str = wire.TOKEN_SCOPE) -> None:
        if credential is not None and not callable(getattr(credential, "get_token", None)):
            raise ConfigurationError(f"credential must have a get_token method (an azure-identity credential), got {type(credential).__name__}.")
        self._credential = credential
        self._owned: Any | None = None
        self._scope = scope
        self._token: Any | None = None  # azure.core.credentials.AccessToken
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    # -- token cache, shared by both flows -------------------------------------

    def _cached_header(self) -> str | None:
        token = self._token
        if token is not None and token.expires_on - REFRESH_MARGIN_SECONDS > time.time():
            return f"Bearer {token.token}"
        return None

    def _store(self, token: Any) -> str:
        if not getattr(token, "token", None):
            raise AuthenticationError(f"{self.describe()} returned an empty token for {self._scope}.", code="EmptyToken")
        self._token = token
        return f"Bearer {token.token}"

    def _failure(self, exc: Exception) -> AuthenticationError:
        return AuthenticationError(
            f"Could not get a token for {self._scope} from {self.describe()}: {scrub(str(exc))}",
            code="CredentialUnavailable",
            server_message=scrub(str(exc)),
        )

    def invalidate(self) -> None:
        self._token = None

    def describe(self) -> str:
        cred = self._credential or self._owned
        return f"credential {type(cred).__name__}" if cred is not None else "credential DefaultAzureCredential (not yet created)"

    def __repr__(self) -> str:
        return f"CredentialAuth({self.describe()})"

    # -- sync flow ---------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._sync_header()
        yield request

    def _sync_header(self) -> str:
        header = self._cached_header()
        if header:
            return header
        with self._thread_lock:
            header = self._cached_header()
            if header:  # another thread refreshed it while we waited
                return header
            credential = self._credential or self._default_sync()
            try:
                token = credential.get_token(self._scope)
            except Exception as exc:
                failure = self._as_auth_failure(exc)
                if failure is None:
                    raise
                raise failure from exc
            if inspect.isawaitable(token):
                getattr(token, "close", lambda: None)()  # silence "never awaited"
                raise ConfigurationError(
                    f"{type(credential).__name__} is an async credential; use AsyncSessionsClient, "
                    "or pass a sync credential (azure.identity, not azure.identity.aio)."
                )
            return self._store(token)

    def _default_sync(self) -> Any:
        if self._owned is None:
            from azure.identity import DefaultAzureCredential

            self._owned = DefaultAzureCredential()
        return self._owned

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    # -- async flow --------------------------------------------------------------

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = await self._async_header()
        yield request

    async def _async_header(self) -> str:
        header = self._cached_header()
        if header:
            return header
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            header = self._cached_header()
            if header:
                return header
            # The default is the *sync* DefaultAzureCredential: azure.identity.aio needs
            # aiohttp, which this package does not depend on. Sync credentials (ours or
            # the caller's) run in a thread so that fetching a token never blocks the loop.
            credential = self._credential or self._default_sync()
            try:
                if inspect.iscoroutinefunction(credential.get_token):
                    token = await credential.get_token(self._scope)
                else:
                    token = await asyncio.to_thread(credential.get_token, self._scope)
                    if inspect.isawaitable(token):
                        token = await token
            except Exception as exc:
                failure = self._as_auth_failure(exc)
                if failure is None:
                    raise
                raise failure from exc
            return self._store(token)

    async def aclose(self) -> None:
        if self._owned is not None:
            await asyncio.to_thread(self._owned.close)
            self._owned = None

    def _as_auth_failure(self, exc: Exception) -> AuthenticationError | None:
        """azure-core's ClientAuthenticationError becomes ours; other errors (bugs) stay as they are."""
        from azure.core.exceptions import ClientAuthenticationError

        return self._failure(exc) if isinstance(exc, ClientAuthenticationError) else None


def make_auth(token: str | None, credential: Any | None) -> BearerAuth:
    """The flow for a client's ``token``/``credential`` arguments (at most one)."""
    if token is not None and credential is not None:
        raise ConfigurationError("Pass either token (a static bearer token) or credential, not both.")
    if token is not None:
        return StaticTokenAuth(token)
    return CredentialAuth(credential)
