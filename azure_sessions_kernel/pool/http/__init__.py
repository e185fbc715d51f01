"""The local pool's HTTP surface: Azure's data-plane routes for every api-version.

Built with FastAPI (routing, the OpenAPI document) on Starlette. One router
per resource (:mod:`.executions`, :mod:`.files`, :mod:`.management`, and
:mod:`.local` for the extensions, left out of an Azure-strict pool); the
handlers are module-level and find the pool's session manager as
``request.app.state.manager``. Every shape comes from
:mod:`azure_sessions_kernel.wire`, every session operation goes to the
:class:`~azure_sessions_kernel.pool.sessions.SessionManager`, every file
operation to :mod:`azure_sessions_kernel.pool.files`. Errors always use the
Azure envelope (:mod:`.errors`).

Routes are dispatched by path *and* api-version (reference §12.1): a path
that does not exist in the requested version answers 404 naming the versions
that have it, rather than guessing a shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from ... import wire
from ..sessions import SessionManager
from . import errors, executions, files, local, management, openapi

__all__ = ["BearerAuth", "create_app"]

TITLE = "azure-sessions-kernel local session pool"
DESCRIPTION = "Azure Container Apps dynamic sessions data-plane API (code interpreter), served locally."


class BearerAuth:
    """ASGI middleware: every route requires ``Authorization: Bearer <token>``.

    Runs before routing so that unknown routes do not reveal themselves to
    unauthenticated callers; compares in constant time.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        if not hmac.compare_digest(given, self._expected):
            message = (
                "The Authorization header is missing; send 'Authorization: Bearer <token>' with the pool's token."
                if not given
                else "The bearer token is not valid for this pool."
            )
            response = errors.error_response(401, "Unauthorized", message, {"WWW-Authenticate": 'Bearer realm="azure-sessions-kernel"'})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(
    manager: SessionManager,
    *,
    token: str,
    strict: bool = False,
    metadata: Callable[[], wire.PoolMetadata],
) -> Any:
    """Build the ASGI app. Called once by the server (and by tests).

    ``strict`` (Azure-strict) removes every extension: the ``.local/`` routes
    answer 404 and ``/metadata`` carries no ``localPool`` block.
    """
    app = FastAPI(title=TITLE, description=DESCRIPTION, version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager
    app.state.metadata = metadata
    errors.install(app)
    for router in (executions.router, files.router, management.router):
        app.include_router(router)
    if not strict:
        app.include_router(local.router)

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.finish(get_openapi(title=TITLE, version=app.version, description=DESCRIPTION, routes=app.routes))
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json(_: Request) -> JSONResponse:
        return JSONResponse(document())

    @app.get("/docs", include_in_schema=False)
    async def docs(_: Request) -> HTMLResponse:
        return HTMLResponse(openapi.docs_page(document()))

    return errors.KeepAlive(BearerAuth(app, token))
