"""Every error answer in Azure's envelope: ``{"error": {"code", "message"}}`` plus ``x-ms-error-code``.

One handler (:func:`envelope`) serves :class:`~azure_sessions_kernel.pool.errors.PoolError`
(and so every ``FileOpError``) and :class:`azure_sessions_kernel.wire.ContractError`;
routing and validation errors are mapped to the same envelope. :class:`KeepAlive`
keeps the client's connection usable after an unexpected error.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ... import wire
from ..errors import PoolError

log = logging.getLogger("azure_sessions_kernel.pool")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An Azure error envelope with ``x-ms-error-code``."""
    return JSONResponse(wire.render_error(code, message), status_code=status, headers={wire.ERROR_CODE_HEADER: code, **(headers or {})})


async def envelope(_: Request, exc: Exception) -> JSONResponse:
    """The one handler of the pool's own errors and of the contract's."""
    assert isinstance(exc, (PoolError, wire.ContractError))
    retry_after = getattr(exc, "retry_after", None)
    return error_response(exc.status, exc.code, exc.message, {"Retry-After": str(retry_after)} if retry_after else None)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(400, "SessionRequestValidationFailed", f"Invalid request: {where}: {first.get('msg', 'invalid value')}.")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(404, "NotFound", f"No route {request.method} {request.url.path} in this pool.")
    if exc.status_code == 405:
        allowed = ", ".join(sorted(_allowed_methods(request)))
        return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}.", {"Allow": allowed})
    return error_response(exc.status_code, "HttpError", str(exc.detail), dict(exc.headers or {}))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "InternalServerError", f"The pool failed unexpectedly: {type(exc).__name__}.")


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's)."""
    routes = request.app.router.routes
    return {
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    }


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``. Called once by :func:`~azure_sessions_kernel.pool.http.create_app`."""
    app.add_exception_handler(PoolError, envelope)
    app.add_exception_handler(wire.ContractError, envelope)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class KeepAlive:
    """ASGI middleware: an unexpected error ends its request, not the client's connection.

    Starlette answers an unhandled exception with the 500 envelope and then
    re-raises it, and uvicorn closes a connection whose app raised. Here the
    exception stops once that answer is complete, so the next request on the
    same keep-alive connection is served. A response cut off mid-body still
    ends the connection (uvicorn closes an incomplete one), as it must.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                return  # answered already (the 500 envelope), or cut off: uvicorn decides
            log.error("unhandled error", exc_info=exc)
            await error_response(500, "InternalServerError", f"The pool failed unexpectedly: {type(exc).__name__}.")(scope, receive, send)
