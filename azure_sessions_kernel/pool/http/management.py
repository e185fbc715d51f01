"""Session management (2025-02-02-preview and later): ``session``, ``listSessions``,
``metadata`` and the ``.management`` routes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ... import wire
from . import openapi as doc
from .common import SESSIONS_SINCE, existing_session, identifier_of, manager_of, no_such_session, version_of

router = APIRouter(tags=["sessions"], default_response_class=Response)


@router.get(
    "/session",
    operation_id="sessionGet",
    summary="Get a session",
    openapi_extra=doc.operation(wire.SessionQuery),
    responses=doc.responses({200: ("The session.", (wire.SessionResource,))}),
)
async def get_session(request: Request) -> Response:
    return _session(request, "GET session")


@router.delete(
    "/session",
    status_code=204,
    operation_id="sessionDelete",
    summary="Delete a session and everything it holds",
    openapi_extra=doc.operation(wire.SessionQuery),
    responses=doc.responses({204: ("Deleted.", ())}),
)
async def delete_session(request: Request) -> Response:
    await _end_session(request, "DELETE session")
    return Response(status_code=204)


@router.get(
    "/listSessions",
    operation_id="sessionsList",
    summary="List sessions",
    openapi_extra=doc.operation(wire.VersionQuery),
    responses=doc.responses({200: ("Every live session.", (wire.SessionList,))}),
)
async def list_sessions(request: Request) -> Response:
    return _sessions(request, "GET listSessions")


@router.get(
    "/metadata",
    operation_id="metadataGet",
    summary="Pool metadata: runtime and pre-installed packages",
    openapi_extra=doc.operation(wire.VersionQuery),
    responses=doc.responses({200: ("The pool's runtime.", (wire.Metadata,))}),
)
async def get_metadata(request: Request) -> Response:
    version_of(request, SESSIONS_SINCE, "GET metadata")
    return JSONResponse(wire.render_metadata(request.app.state.metadata()))


@router.post(
    "/.management/stopSession",
    operation_id="managementStopSession",
    summary="Stop a session",
    openapi_extra=doc.operation(wire.SessionQuery),
    responses=doc.responses({}, **{"200": {"description": "Stopped.", "content": {"text/plain": {"schema": {"type": "string"}}}}}),
)
async def stop_session(request: Request) -> Response:
    identifier = await _end_session(request, "POST .management/stopSession")
    return Response(f"Session {identifier} in session pool local stopped.", media_type="text/plain")


@router.post(
    "/.management/getSession",
    operation_id="managementGetSession",
    summary="Get a session (management view)",
    openapi_extra=doc.operation(wire.SessionQuery),
    responses=doc.responses({200: ("The session.", (wire.SessionView,))}),
)
async def management_get_session(request: Request) -> Response:
    return _session(request, "POST .management/getSession", view=True)


@router.post(
    "/.management/listSessions",
    operation_id="managementListSessions",
    summary="List sessions (management view)",
    openapi_extra=doc.operation(wire.VersionQuery),
    responses=doc.responses({200: ("Every live session.", (wire.SessionViewList,))}),
)
async def management_list_sessions(request: Request) -> Response:
    return _sessions(request, "POST .management/listSessions", view=True)


async def _end_session(request: Request, route: str) -> str:
    """Delete the session the request names (DELETE session, stopSession); its identifier."""
    identifier = identifier_of(request, version_of(request, SESSIONS_SINCE, route))
    if not await manager_of(request).delete(identifier):
        raise no_such_session(identifier)
    return identifier


def _session(request: Request, route: str, *, view: bool = False) -> Response:
    """One session, as ``GET session`` (``view``: as the ``.management`` route) shows it."""
    session = existing_session(request, version_of(request, SESSIONS_SINCE, route))
    return JSONResponse(wire.render_session(session.info(manager_of(request).config.cooldown), view=view))


def _sessions(request: Request, route: str, *, view: bool = False) -> Response:
    """Every live session, as ``GET listSessions`` (``view``: as the ``.management`` route) lists them."""
    version_of(request, SESSIONS_SINCE, route)
    manager = manager_of(request)
    live = [s.info(manager.config.cooldown) for s in list(manager.sessions.values()) if not s.closed]
    return JSONResponse(wire.render_session_list(live, view=view))
