"""Executions: ``POST code/execute`` (2024-02/08), ``POST executions`` and ``GET executions/{id}``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ... import wire
from ..errors import PoolError, RouteNotFound
from . import openapi as doc
from .common import EXECUTIONS_SINCE, execution_response, existing_session, json_body, manager_of, session_of, version_of

router = APIRouter(tags=["executions"], default_response_class=Response)


class ExecutionNotFound(PoolError):
    code, status = "ExecutionNotFound", 404


@router.post(
    "/code/execute",
    operation_id="codeExecute",
    summary="Execute code (2024-02-02-preview, 2024-08-02-preview)",
    openapi_extra=doc.operation(wire.SessionQuery, wire.LegacyExecuteBody, wire.ExecuteBody),
    responses=doc.responses({200: ("The execution's outcome.", (wire.LegacyExecution,))}),
)
async def code_execute(request: Request) -> Response:
    version = version_of(request)
    if version.executions_api:
        raise RouteNotFound(f"POST code/execute does not exist in api-version {version.name}; use POST executions.")
    execute = wire.parse_execute_request(version, await json_body(request))
    session = await session_of(request, version)
    return execution_response(version, await manager_of(request).execute(session, execute))


@router.post(
    "/executions",
    operation_id="executionsCreate",
    summary="Execute code (2024-10-02-preview and later)",
    openapi_extra=doc.operation(wire.SessionQuery, wire.ExecuteBody),
    responses=doc.responses({
        200: ("The execution's outcome (2025-02-02-preview and later).", (wire.ExecutionResource,)),
        202: ("Asynchronous: started, poll Operation-Location; synchronous in 2024-10-02-preview: the outcome.", (wire.ExecutionResource,)),
    }),
)
async def create_execution(request: Request) -> Response:
    version = version_of(request, EXECUTIONS_SINCE, "POST executions")
    execute = wire.parse_execute_request(version, await json_body(request))
    session = await session_of(request, version)
    manager = manager_of(request)
    if execute.asynchronous:
        return execution_response(version, manager.start_async(session, execute))
    return execution_response(version, await manager.execute(session, execute))


@router.get(
    "/executions/{execution_id}",
    operation_id="executionsGet",
    summary="Poll an execution",
    openapi_extra=doc.operation(wire.SessionQuery),
    responses=doc.responses({
        200: ("Finished.", (wire.ExecutionResource,)),
        202: ("Still running.", (wire.ExecutionResource,)),
    }),
)
async def get_execution(request: Request, execution_id: str) -> Response:
    version = version_of(request, EXECUTIONS_SINCE, "GET executions/{id}")
    session = existing_session(request, version)
    execution = manager_of(request).get_execution(session, execution_id)
    if execution is None:
        raise ExecutionNotFound(f"No execution with id '{execution_id}' in this session.")
    return execution_response(version, execution, 200 if execution.status and execution.status.finished else 202)
