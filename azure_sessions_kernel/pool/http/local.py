"""The local pool's extensions under ``.local/`` (see the end of :mod:`azure_sessions_kernel.wire`).

:func:`create_app` includes this router unless the pool is Azure-strict, so
on a strict pool these routes do not exist (404), as on Azure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from ... import wire
from ..errors import SessionNotFound
from ..sessions import PoolSession
from . import openapi as doc
from .common import existing_session, identifier_of, json_body, manager_of, session_of, version_of

router = APIRouter(tags=["local extensions"], default_response_class=Response)

_REPLY = doc.responses({200: ("The session kernel's reply content, unchanged.", (dict[str, Any],))})


@router.post(
    "/.local/executions/stream",
    operation_id="localExecutionsStream",
    summary="Execute and stream Jupyter outputs as NDJSON",
    openapi_extra=doc.operation(wire.SessionQuery, wire.StreamBody, wire.LegacyExecuteBody),
    responses=doc.responses(
        {},
        **{"200": {
            "description": "One JSON object per line: outputs as they happen, then the outcome.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}, "itemSchema": doc.schema(wire.StreamLine)}},
        }},
    ),
)
async def stream_execution(request: Request) -> Response:
    version = version_of(request)
    body = await json_body(request)
    execute = wire.parse_execute_request(version, body)
    cell = wire.parse_jupyter_cell(body)
    if_match = request.headers.get("if-match")
    session = _matching_session(request, version, if_match) if if_match is not None else await session_of(request, version)
    manager = manager_of(request)
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def relay(msg_type: str, content: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        kind = "stdin" if msg_type == "input_request" else "iopub"
        events.put_nowait({"type": kind, "msg_type": msg_type, "content": content, **(extra or {})})

    async def run() -> None:
        try:
            reply = None
            if cell is None:
                execution = await manager.execute(session, execute, on_event=relay)
            else:
                execution, reply = await manager.execute_cell(session, execute, cell, on_event=relay)
            status = "ok" if execution.succeeded else ("timeout" if execution.error and execution.error.code == "Timeout" else "error")
            _, rendered, _ = wire.render_execution(version, execution)
            done: dict[str, Any] = {"type": "done", "status": status, "execution": rendered, "etag": session.etag}
            if reply is not None:
                done["reply"] = wire.render_cell_reply(reply)
            events.put_nowait(done)
        except Exception as exc:  # report inside the stream: headers are already sent
            events.put_nowait({"type": "done", "status": "error", "error": {"code": "InternalServerError", "message": str(exc)}})
        finally:
            events.put_nowait(None)

    task = asyncio.create_task(run())

    async def lines() -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    item = await asyncio.wait_for(events.get(), wire.STREAM_KEEPALIVE)
                except asyncio.TimeoutError:  # a long quiet cell: tell the client it still runs
                    yield b'{"type": "keepalive"}\n'
                    continue
                if item is None:
                    break
                yield (json.dumps(item, default=str) + "\n").encode()
        finally:
            if not task.done():  # the client went away: stop the remote work too
                await manager.interrupt(session)
                await asyncio.shield(task)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post(
    "/.local/executions/interrupt",
    status_code=204,
    operation_id="localExecutionsInterrupt",
    summary="Interrupt the running execution (state kept)",
    openapi_extra=doc.operation(wire.SessionQuery),
    responses=doc.responses({204: ("Interrupted, or nothing was running.", ())}),
)
async def interrupt_execution(request: Request) -> Response:
    session = existing_session(request, version_of(request))
    await manager_of(request).interrupt(session)
    return Response(status_code=204)


@router.post(
    "/.local/executions/input",
    status_code=204,
    operation_id="localExecutionsInput",
    summary="Answer the running cell's input() (stdin)",
    openapi_extra=doc.operation(wire.SessionQuery, wire.InputBody),
    responses=doc.responses({204: ("Given to the cell.", ()), 409: ("No cell of the session waits for input.", (wire.ErrorEnvelope,))}),
)
async def input_reply(request: Request) -> Response:
    version = version_of(request)
    value = wire.parse_input_body(await json_body(request))
    await manager_of(request).send_input(existing_session(request, version), value)
    return Response(status_code=204)


@router.post(
    "/.local/comm",
    operation_id="localComm",
    summary="A frontend's comm message to the session (comms)",
    openapi_extra=doc.operation(wire.SessionQuery, wire.CommBody),
    responses=doc.responses({200: ("What the session kernel published under the message, and a comm_info_reply content.", (wire.CommAnswer,))}),
)
async def comm_message(request: Request) -> Response:
    version = version_of(request)
    msg = wire.parse_comm_message(await json_body(request))
    outputs, reply = await manager_of(request).comm(existing_session(request, version), msg)
    return JSONResponse({"outputs": outputs, "reply": reply})


@router.post(
    "/.local/events",
    operation_id="localEvents",
    summary="What the session published outside its cells (comms)",
    openapi_extra=doc.operation(wire.SessionQuery, wire.EventsBody),
    responses=doc.responses({200: ("The events after `after`, and the last event's number.", (wire.EventsAnswer,))}),
)
async def session_events(request: Request) -> Response:
    version = version_of(request)
    after, wait = wire.parse_events_body(await json_body(request))
    session = existing_session(request, version)
    listed, last = await manager_of(request).events(session, after, wait)
    return JSONResponse({"events": listed, "next": last})


@router.post(
    "/.local/complete",
    operation_id="localComplete",
    summary="Complete code against the session's namespace",
    openapi_extra=doc.operation(wire.SessionQuery, wire.IntrospectBody),
    responses=_REPLY,
)
async def complete(request: Request) -> Response:
    return await _introspect(request, "complete_request")


@router.post(
    "/.local/inspect",
    operation_id="localInspect",
    summary="Inspect an object in the session's namespace",
    openapi_extra=doc.operation(wire.SessionQuery, wire.IntrospectBody),
    responses=_REPLY,
)
async def inspect(request: Request) -> Response:
    return await _introspect(request, "inspect_request")


def _matching_session(request: Request, version: wire.ApiVersion, if_match: str) -> PoolSession:
    """The identifier's session if it is the one ``If-Match`` names (``*``: any); never creates one."""
    identifier = identifier_of(request, version)
    session = manager_of(request).find(identifier)
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if session is None or not ("*" in wanted or session.etag in wanted):
        raise SessionNotFound(
            f"The session with identifier '{identifier}' that the request names (If-Match) no longer exists; "
            "it ended or was replaced by a new one. Nothing was run."
        )
    session.touch()
    return session


async def _introspect(request: Request, msg_type: str) -> Response:
    version = version_of(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise wire.ContractError("The body must be a JSON object with a string 'code'.", code="SessionRequestValidationFailed")
    code = body["code"]
    pos = body.get("cursor_pos", len(code))
    if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= len(code):
        raise wire.ContractError(f"'cursor_pos' must be an integer between 0 and {len(code)}.", code="SessionRequestValidationFailed")
    content: dict[str, Any] = {"code": code, "cursor_pos": pos}
    if msg_type == "inspect_request":
        level = body.get("detail_level", 0)
        content["detail_level"] = 1 if level == 1 else 0
    session = await session_of(request, version)
    return JSONResponse(await manager_of(request).kernel_request(session, msg_type, content))
