"""The pool's error base: every error the HTTP layer answers with an Azure error envelope.

Raised by the session manager (:mod:`.sessions`), the file area
(:mod:`.files`) and the routes (:mod:`.http`); one handler in
:mod:`.http.errors` turns any of them into ``{"error": {"code", "message"}}``
with ``x-ms-error-code``, as it does :class:`azure_sessions_kernel.wire.ContractError`.
"""

from __future__ import annotations


class PoolError(Exception):
    """An error with an Azure error code and HTTP status.

    Subclasses set ``code`` and ``status`` as class attributes (like
    starlette's ``HTTPException`` carries any status, but named per kind);
    a raise site may still override either. ``retry_after`` (seconds) adds
    a ``Retry-After`` header.
    """

    code = "InternalServerError"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.status = status or type(self).status
        self.retry_after = retry_after


class RouteNotFound(PoolError):
    """No such route in this pool, or not in the requested api-version (404)."""

    code, status = "NotFound", 404


class SessionNotFound(PoolError):
    """The identifier names no session of this pool, or not the one ``If-Match`` names (404)."""

    code, status = "SessionWithIdentifierNotFound", 404


class SessionPoolFull(PoolError):
    """``max_sessions`` sessions exist; a new identifier must wait (429, with ``Retry-After``)."""

    code, status = "SessionPoolFull", 429


class SessionCreationFailed(PoolError):
    """No sandbox could be started for a new session (503, with ``Retry-After``)."""

    code, status = "SessionCreationFailed", 503


class KernelTimeout(PoolError):
    """The session's kernel did not answer a completion or inspection in time (504)."""

    code, status = "KernelTimeout", 504


class NoInputRequested(PoolError):
    """An ``input()`` answer for a session whose cell does not wait for one (the ``stdin`` extension)."""

    code, status = "NoInputRequested", 409
