"""Exceptions raised by the sessions clients.

The tree (httpx-style; every class is importable from
:mod:`azure_sessions_kernel.client`)::

    SessionsError
    ├── ConfigurationError          (also ValueError) bad endpoint, option or argument
    │   └── UnsupportedOperationError   the api-version has no such route
    ├── TransportError              no usable HTTP response
    │   ├── ConnectError            could not connect (nothing was sent)
    │   └── RequestTimeout          (also TimeoutError) connect/read/write timed out
    ├── ExecutionTimeoutError       (also TimeoutError) the execution deadline passed
    ├── ResponseFormatError         a response body does not fit the contract
    └── ApiError                    the pool answered with an error status
        ├── BadRequestError             400
        ├── AuthenticationError         401, or no token could be obtained
        ├── AuthorizationError          403: the Session Executor role is missing
        ├── NotFoundError               404
        │   └── SessionNotFoundError    SessionWithIdentifierNotFound / SessionNotFound (404 or 400)
        ├── PoolFullError               429, or the documented 404 "no more sessions"
        ├── UploadTooLargeError         413, or refused before sending (> 128 MB)
        ├── ExtensionUnavailableError   a local-pool ``.local/`` route the pool lacks
        └── ServerError                 5xx

Messages are one sentence that includes the server's error code and
message; they never contain bearer tokens or session identifiers the client
added itself (identifiers are secrets, reference §7).
"""

from __future__ import annotations

import re

__all__ = [
    "ApiError",
    "AuthenticationError",
    "AuthorizationError",
    "BadRequestError",
    "ConfigurationError",
    "ConnectError",
    "ExecutionTimeoutError",
    "ExtensionUnavailableError",
    "NotFoundError",
    "PoolFullError",
    "RequestTimeout",
    "ResponseFormatError",
    "ServerError",
    "SessionNotFoundError",
    "SessionsError",
    "TransportError",
    "UnsupportedOperationError",
    "UploadTooLargeError",
]

# Servers sometimes echo request headers in error text; never pass a token on.
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


def scrub(text: str, limit: int = 600) -> str:
    """Remove bearer tokens from server-provided text and cap its length."""
    text = _BEARER.sub(r"\1***", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SessionsError(Exception):
    """Base class of every error the sessions clients raise."""


class ConfigurationError(SessionsError, ValueError):
    """An invalid endpoint, option or argument; raised before anything is sent."""


class UnsupportedOperationError(ConfigurationError):
    """The configured api-version has no route for the operation.

    The message names the first api-version that has it.
    """


class TransportError(SessionsError):
    """No usable HTTP response arrived (connection failed, reset or timed out)."""


class ConnectError(TransportError):
    """The pool could not be reached; nothing was sent."""


class RequestTimeout(TransportError, TimeoutError):
    """Connecting, sending or reading a non-execution request timed out."""


class ExecutionTimeoutError(SessionsError, TimeoutError):
    """An execution did not finish within its deadline.

    The code may still be running in the session: the client stopped
    waiting, it did not stop the code.
    """


class ResponseFormatError(SessionsError):
    """A response body is not what the api-version's contract describes."""


class ApiError(SessionsError):
    """The pool answered with an HTTP error status.

    ``status_code`` is ``None`` only when the client refused a request
    itself for a reason the service would also refuse it for (an upload
    over 128 MB). ``retry_after`` is the server's ``Retry-After`` in
    seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str = "",
        server_message: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.server_message = server_message
        self.request_id = request_id
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, code={self.code!r}, request_id={self.request_id!r})"


class BadRequestError(ApiError):
    """HTTP 400: the pool refused the request as malformed."""


class AuthenticationError(ApiError):
    """HTTP 401 (wrong audience or expired token), or no token could be obtained."""


class AuthorizationError(ApiError):
    """HTTP 403: the caller lacks the "Azure ContainerApps Session Executor" role."""


class NotFoundError(ApiError):
    """HTTP 404: wrong endpoint, route, file or execution id."""


class SessionNotFoundError(NotFoundError):
    """The session does not exist (deleted, expired after its cooldown, never created).

    Azure answers ``SessionWithIdentifierNotFound`` with HTTP 400 on some
    routes (reference §8); ``status_code`` keeps what the server sent.
    """


class PoolFullError(ApiError):
    """The pool has no free session (HTTP 429, or Azure's documented 404)."""


class UploadTooLargeError(ApiError):
    """The upload exceeds Azure's 128 MB limit (HTTP 413 or refused before sending)."""


class ExtensionUnavailableError(ApiError):
    """The pool lacks a local-pool extension route (Azure, or a strict local pool)."""


class ServerError(ApiError):
    """HTTP 5xx: the pool failed."""


#: Error codes meaning "no such session" (reference §8).
SESSION_NOT_FOUND_CODES = frozenset({"SessionWithIdentifierNotFound", "SessionNotFound"})
#: Codes meaning "the pool has no free session" (the local pool's 429).
POOL_FULL_CODES = frozenset({"SessionPoolFull"})


def error_class(status: int, code: str, message: str, *, extension: bool = False) -> type[ApiError]:
    """The class for an error response; ``extension``: the route is a local-pool ``.local/`` one."""
    if code in SESSION_NOT_FOUND_CODES and status in (400, 404):
        return SessionNotFoundError
    if status == 404 and (code in POOL_FULL_CODES or "no more sessions" in message.lower()):
        return PoolFullError  # MS-POOL documents a 404 when max sessions are allocated
    if extension and status in (404, 405, 501):
        return ExtensionUnavailableError
    by_status: dict[int, type[ApiError]] = {
        400: BadRequestError,
        401: AuthenticationError,
        403: AuthorizationError,
        404: NotFoundError,
        413: UploadTooLargeError,
        429: PoolFullError,
    }
    if status in by_status:
        return by_status[status]
    return ServerError if status >= 500 else ApiError
