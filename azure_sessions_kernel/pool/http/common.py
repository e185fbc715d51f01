"""What every route module shares: reading a request's api-version,
identifier, session and JSON body, and writing an execution.

Handlers are module-level functions; they find the pool's
:class:`~azure_sessions_kernel.pool.sessions.SessionManager` as
``request.app.state.manager``.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote

from fastapi import Request
from fastapi.responses import JSONResponse

from ... import wire
from .. import files as session_files
from ..errors import PoolError, RouteNotFound, SessionNotFound
from ..sessions import PoolSession, SessionManager

#: Largest JSON body accepted (an execute body carries the code).
MAX_JSON_BODY = 16 * 1024 * 1024

EXECUTIONS_SINCE = "2024-10-02-preview"
SESSIONS_SINCE = "2025-02-02-preview"


class BodyTooLarge(PoolError):
    code, status = "RequestBodyTooLarge", 413


def manager_of(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.manager
    return manager


def version_of(request: Request, since: str | None = None, route: str = "") -> wire.ApiVersion:
    """The request's api-version; 404 when ``route`` exists only from ``since`` on."""
    name = request.query_params.get("api-version")
    if not name:
        raise wire.ContractError("The 'api-version' query parameter is required.", code="MissingApiVersion")
    version = wire.api_version(name)
    if since is not None and wire.API_VERSIONS.index(version.name) < wire.API_VERSIONS.index(since):
        raise RouteNotFound(f"{route} does not exist in api-version {version.name}; it exists from {since} on.")
    return version


def identifier_of(request: Request, version: wire.ApiVersion) -> str:
    return wire.validate_identifier(version, request.query_params.get("identifier"))


async def session_of(request: Request, version: wire.ApiVersion) -> PoolSession:
    """The identifier's session, created when new (as every Azure data-plane route does)."""
    return await manager_of(request).get_or_create(identifier_of(request, version))


def no_such_session(identifier: str) -> SessionNotFound:
    return SessionNotFound(f"No session with identifier '{identifier}' exists in this pool.")


def existing_session(request: Request, version: wire.ApiVersion) -> PoolSession:
    """The identifier's live session; never creates one."""
    identifier = identifier_of(request, version)
    session = manager_of(request).find(identifier)
    if session is None:
        raise no_such_session(identifier)
    session.touch()
    return session


async def json_body(request: Request) -> Any:
    """The request body as JSON, within :data:`MAX_JSON_BODY`; 400 names what is wrong with it."""
    declared = request.headers.get("content-length")
    too_large = f"The request body is larger than {MAX_JSON_BODY // 2**20} MiB."
    if declared and declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise BodyTooLarge(too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise BodyTooLarge(too_large)
    if not body.strip():
        raise wire.ContractError("The request body is empty; a JSON object is required.", code="SessionRequestValidationFailed")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise wire.ContractError(f"The request body is not valid JSON: {exc}.", code="SessionRequestValidationFailed") from None
    except RecursionError:
        raise wire.ContractError(
            "The request body is nested too deeply to read; no request of this API nests more than a few levels.",
            code="SessionRequestValidationFailed",
        ) from None


def files_of(session: PoolSession) -> session_files.SessionFiles:
    # As root, what the pool writes must belong to the session's own uid so its code can change it.
    uid, gid = getattr(session.sandbox, "uid", None), getattr(session.sandbox, "gid", None)
    owner = (uid, gid) if os.geteuid() == 0 and uid is not None and uid != 0 else None
    return session_files.SessionFiles(session.sandbox.data_dir, owner=owner)


def execution_response(version: wire.ApiVersion, execution: wire.Execution, status: int | None = None) -> JSONResponse:
    code, body, headers = wire.render_execution(version, execution)
    return JSONResponse(body, status_code=status or code, headers=headers)


def raw_segments(request: Request, prefix_segments: int) -> list[str]:
    """The path's segments after the first ``prefix_segments``, each percent-decoded on its own.

    Splits the *raw* path so that an encoded ``/`` (``%2F``) stays inside its
    segment; a segment that is not UTF-8 once decoded is a 400.
    """
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.decode("latin-1").split("?", 1)[0].split("/")[1:]
    try:
        return [unquote(p, encoding="utf-8", errors="strict") for p in parts[prefix_segments:]]
    except UnicodeDecodeError:
        raise wire.ContractError("The path is not valid UTF-8 once percent-decoded.", code="InvalidFileName") from None
