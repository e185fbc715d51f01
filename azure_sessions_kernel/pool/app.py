"""The local pool's HTTP surface: Azure's data-plane routes for every api-version.

Built with FastAPI (routing, OpenAPI document) on Starlette; every shape comes
from :mod:`azure_sessions_kernel.wire`, every session operation goes to the
:class:`~azure_sessions_kernel.pool.sessions.SessionManager`, every file
operation to :mod:`azure_sessions_kernel.pool.files`. Errors always use the
Azure envelope ``{"error": {"code", "message"}}`` with ``x-ms-error-code``.

Routes are dispatched by path *and* api-version (reference §12.1): a path
that does not exist in the requested version answers 404 naming the versions
that have it, rather than guessing a shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import wire
from . import files as session_files
from .sessions import PoolError, PoolSession, SessionManager

log = logging.getLogger("azure_sessions_kernel.pool")

#: Largest JSON body accepted (an execute body carries the code).
MAX_JSON_BODY = 16 * 1024 * 1024
#: Multipart framing allowed on top of the 128 MB file itself.
MULTIPART_OVERHEAD = 64 * 1024
#: A refused upload's remaining body is read and dropped up to this much, so
#: that the client gets the 413 instead of a reset connection; beyond it the
#: connection is simply closed.
DRAIN_LIMIT = 256 * 1024 * 1024

_EXECUTIONS_SINCE = "2024-10-02-preview"
_SESSIONS_SINCE = "2025-02-02-preview"


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An Azure error envelope with ``x-ms-error-code``."""
    return JSONResponse(
        wire.render_error(code, message),
        status_code=status,
        headers={wire.ERROR_CODE_HEADER: code, **(headers or {})},
    )


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
            resp = error_response(401, "Unauthorized", message, {"WWW-Authenticate": 'Bearer realm="azure-sessions-kernel"'})
            return await resp(scope, receive, send)
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
    app = FastAPI(
        title="azure-sessions-kernel local session pool",
        description="Azure Container Apps dynamic sessions data-plane API (code interpreter), served locally.",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
    )

    # ------------------------------------------------------------ error mapping

    @app.exception_handler(PoolError)
    async def _pool_error(_: Request, exc: PoolError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(wire.ContractError)
    async def _contract_error(_: Request, exc: wire.ContractError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(session_files.FileOpError)
    async def _file_error(_: Request, exc: session_files.FileOpError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, "SessionRequestValidationFailed", f"Invalid request: {where}: {first.get('msg', 'invalid value')}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, "NotFound", f"No route {request.method} {request.url.path} in this pool.")
        if exc.status_code == 405:
            return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}.")
        return error_response(exc.status_code, "HttpError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "InternalServerError", f"The pool failed unexpectedly: {type(exc).__name__}.")

    # ------------------------------------------------------------ helpers

    def version_of(request: Request, since: str | None = None, route: str = "") -> wire.ApiVersion:
        name = request.query_params.get("api-version")
        if not name:
            raise wire.ContractError("The 'api-version' query parameter is required.", code="MissingApiVersion")
        v = wire.api_version(name)
        if since is not None and wire.API_VERSIONS.index(v.name) < wire.API_VERSIONS.index(since):
            raise PoolError(f"{route} does not exist in api-version {v.name}; it exists from {since} on.", code="NotFound", status=404)
        return v

    def identifier_of(request: Request, v: wire.ApiVersion) -> str:
        return wire.validate_identifier(v, request.query_params.get("identifier"))

    async def session_of(request: Request, v: wire.ApiVersion) -> PoolSession:
        return await manager.get_or_create(identifier_of(request, v))

    def no_such_session(ident: str) -> PoolError:
        return PoolError(f"No session with identifier '{ident}' exists in this pool.", code="SessionWithIdentifierNotFound", status=404)

    def existing_session(request: Request, v: wire.ApiVersion) -> PoolSession:
        ident = identifier_of(request, v)
        s = manager.find(ident)
        if s is None:
            raise no_such_session(ident)
        s.touch()
        return s

    def matching_session(request: Request, v: wire.ApiVersion, if_match: str) -> PoolSession:
        """The identifier's session if it is the one ``If-Match`` names (``*``: any); never creates one."""
        ident = identifier_of(request, v)
        s = manager.find(ident)
        wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
        if s is None or not ("*" in wanted or s.etag in wanted):
            raise PoolError(
                f"The session with identifier '{ident}' that the request names (If-Match) no longer exists; "
                "it ended or was replaced by a new one. Nothing was run.",
                code="SessionWithIdentifierNotFound", status=404,
            )  # fmt: skip
        s.touch()
        return s

    async def end_session(request: Request, route: str) -> str:
        """Delete the session named by the request (DELETE session, stopSession); its identifier."""
        ident = identifier_of(request, version_of(request, _SESSIONS_SINCE, route))
        if not await manager.delete(ident):
            raise no_such_session(ident)
        return ident

    async def json_body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_JSON_BODY:
            raise PoolError(f"The request body is larger than {MAX_JSON_BODY // 2**20} MiB.", code="RequestBodyTooLarge", status=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BODY:
                raise PoolError(f"The request body is larger than {MAX_JSON_BODY // 2**20} MiB.", code="RequestBodyTooLarge", status=413)
        if not body.strip():
            raise wire.ContractError("The request body is empty; a JSON object is required.", code="SessionRequestValidationFailed")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise wire.ContractError(f"The request body is not valid JSON: {exc}.", code="SessionRequestValidationFailed") from None

    def files_of(s: PoolSession) -> session_files.SessionFiles:
        # As root, what the pool writes must belong to the session's own uid so its code can change it.
        uid, gid = getattr(s.sandbox, "uid", None), getattr(s.sandbox, "gid", None)
        owner = (uid, gid) if os.geteuid() == 0 and uid is not None and uid != 0 else None
        return session_files.SessionFiles(s.sandbox.data_dir, owner=owner)

    def respond_execution(v: wire.ApiVersion, ex: wire.Execution) -> JSONResponse:
        status, body, headers = wire.render_execution(v, ex)
        return JSONResponse(body, status_code=status, headers=headers)

    def raw_segments(request: Request, prefix_segments: int) -> list[str]:
        # Split the *raw* path so that an encoded '/' (%2F) stays inside its segment.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        parts = raw.decode("latin-1").split("?", 1)[0].split("/")[1:]
        return [unquote(p, encoding="utf-8", errors="strict") for p in parts[prefix_segments:]]

    # ------------------------------------------------------------ executions

    @app.post("/code/execute", tags=["executions"], summary="Execute code (2024-02-02-preview, 2024-08-02-preview)")
    async def code_execute(request: Request) -> Response:
        v = version_of(request)
        if v.executions_api:
            raise PoolError(f"POST code/execute does not exist in api-version {v.name}; use POST executions.", code="NotFound", status=404)
        req = wire.parse_execute_request(v, await json_body(request))
        s = await session_of(request, v)
        return respond_execution(v, await manager.execute(s, req))

    @app.post("/executions", tags=["executions"], summary="Execute code (2024-10-02-preview and later)")
    async def executions(request: Request) -> Response:
        v = version_of(request, _EXECUTIONS_SINCE, "POST executions")
        req = wire.parse_execute_request(v, await json_body(request))
        s = await session_of(request, v)
        if req.asynchronous:
            return respond_execution(v, manager.start_async(s, req))
        return respond_execution(v, await manager.execute(s, req))

    @app.get("/executions/{execution_id}", tags=["executions"], summary="Poll an execution")
    async def get_execution(request: Request, execution_id: str) -> Response:
        v = version_of(request, _EXECUTIONS_SINCE, "GET executions/{id}")
        s = existing_session(request, v)
        ex = manager.get_execution(s, execution_id)
        if ex is None:
            raise PoolError(f"No execution with id '{execution_id}' in this session.", code="ExecutionNotFound", status=404)
        status, body, headers = wire.render_execution(v, ex)
        return JSONResponse(body, status_code=200 if ex.status and ex.status.finished else 202, headers=headers)

    # ------------------------------------------------------------ files

    async def upload(request: Request, v: wire.ApiVersion) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > wire.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:
            await _drain(request, int(declared))
            raise PoolError(
                f"The upload is {int(declared) / 1e6:.1f} MB; sessions accept files up to {wire.MAX_UPLOAD_BYTES // 2**20} MB.",
                code="FileTooLarge",
                status=413,
            )
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise wire.ContractError("Uploads must be multipart/form-data with a part named 'file'.", code="InvalidUpload")
        s = await session_of(request, v)
        folder_path = request.query_params.get("path")
        try:
            stored = await _receive_upload(request, boundary, folder_path, files_of(s))
        except session_files.FileOpError:
            await _drain(request, DRAIN_LIMIT)
            raise
        return JSONResponse(wire.render_file(v, stored))

    @app.post("/files/upload", tags=["files"], summary="Upload a file (2024-02-02-preview, 2024-08-02-preview)")
    async def files_upload(request: Request) -> Response:
        v = version_of(request)
        if v.executions_api:
            raise PoolError(f"POST files/upload does not exist in api-version {v.name}; use POST files.", code="NotFound", status=404)
        return await upload(request, v)

    @app.post("/files", tags=["files"], summary="Upload a file (2024-10-02-preview and later)")
    async def files_post(request: Request) -> Response:
        return await upload(request, version_of(request, _EXECUTIONS_SINCE, "POST files"))

    @app.get("/files", tags=["files"], summary="List files")
    async def files_list(request: Request) -> Response:
        v = version_of(request)
        s = await session_of(request, v)
        folder = wire.split_subpath(request.query_params.get("path"))
        recursive = request.query_params.get("recursive", "false").lower() == "true" and v.output_streams_cap
        listed = await asyncio.to_thread(files_of(s).list, folder, recursive)
        return JSONResponse(wire.render_file_list(v, listed))

    @app.api_route("/files/{rest:path}", methods=["GET", "DELETE"], tags=["files"], summary="File metadata, content and delete")
    async def files_item(request: Request, rest: str) -> Response:
        v = version_of(request)
        parts = raw_segments(request, 1)
        s = await session_of(request, v)
        fs = files_of(s)
        folder = wire.split_subpath(request.query_params.get("path"))
        # files/content/{path...} (code/execute generation) vs files/{name}[/content].
        if not v.executions_api and len(parts) >= 2 and parts[0] == "content" and request.method == "GET":
            *sub, name = parts[1:]
            folder = folder + wire.split_subpath("/".join(sub)) if sub else folder
            return _download(fs, folder, wire.validate_file_name(name))
        if v.name == "2024-02-02-preview":
            raise PoolError("api-version 2024-02-02-preview has only files/content/{name} for single files.", code="NotFound", status=404)
        if len(parts) == 2 and parts[1] == "content" and v.executions_api and request.method == "GET":
            return _download(fs, folder, wire.validate_file_name(parts[0]))
        if len(parts) != 1:
            raise PoolError(f"No route {request.method} {request.url.path} in api-version {v.name}.", code="NotFound", status=404)
        name = wire.validate_file_name(parts[0])
        if request.method == "DELETE":
            await asyncio.to_thread(fs.delete, folder, name)
            if v.executions_api:
                return Response(status_code=204)
            return JSONResponse({"message": "file deleted successfully"})
        info = await asyncio.to_thread(fs.stat, folder, name)
        return JSONResponse(wire.render_file(v, info))  # 2024-08 wraps the one file like a list

    def _download(fs: session_files.SessionFiles, folder: tuple[str, ...], name: str) -> Response:
        handle = fs.open_read(folder, name)

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(1 << 20):
                    yield block

        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return StreamingResponse(chunks(), media_type=ctype, headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"})

    # ------------------------------------------------------------ sessions (2025-02-02-preview and later)

    @app.get("/session", tags=["sessions"], summary="Get a session")
    async def get_session(request: Request) -> Response:
        v = version_of(request, _SESSIONS_SINCE, "GET session")
        return JSONResponse(wire.render_session(existing_session(request, v).info(manager.config.cooldown)))

    @app.delete("/session", tags=["sessions"], summary="Delete a session and everything it holds")
    async def delete_session(request: Request) -> Response:
        await end_session(request, "DELETE session")
        return Response(status_code=204)

    @app.get("/listSessions", tags=["sessions"], summary="List sessions")
    async def list_sessions(request: Request) -> Response:
        version_of(request, _SESSIONS_SINCE, "GET listSessions")
        return JSONResponse(wire.render_session_list(_all_sessions()))

    @app.get("/metadata", tags=["sessions"], summary="Pool metadata: runtime and pre-installed packages")
    async def get_metadata(request: Request) -> Response:
        version_of(request, _SESSIONS_SINCE, "GET metadata")
        return JSONResponse(wire.render_metadata(metadata()))

    @app.post("/.management/stopSession", tags=["sessions"], summary="Stop a session")
    async def stop_session(request: Request) -> Response:
        ident = await end_session(request, "POST .management/stopSession")
        return Response(f"Session {ident} in session pool local stopped.", media_type="text/plain")

    @app.post("/.management/getSession", tags=["sessions"], summary="Get a session (management view)")
    async def mgmt_get_session(request: Request) -> Response:
        v = version_of(request, _SESSIONS_SINCE, "POST .management/getSession")
        return JSONResponse(wire.render_session(existing_session(request, v).info(manager.config.cooldown), view=True))

    @app.post("/.management/listSessions", tags=["sessions"], summary="List sessions (management view)")
    async def mgmt_list_sessions(request: Request) -> Response:
        version_of(request, _SESSIONS_SINCE, "POST .management/listSessions")
        return JSONResponse(wire.render_session_list(_all_sessions(), view=True))

    def _all_sessions() -> list[wire.Session]:
        return [s.info(manager.config.cooldown) for s in list(manager.sessions.values()) if not s.closed]

    # ------------------------------------------------------------ local extensions

    if not strict:

        @app.post("/.local/executions/stream", tags=["local extensions"], summary="Execute and stream Jupyter outputs as NDJSON")
        async def stream_execution(request: Request) -> Response:
            v = version_of(request)
            body = await json_body(request)
            req = wire.parse_execute_request(v, body)
            cell = wire.parse_jupyter_cell(body)
            if_match = request.headers.get("if-match")
            s = matching_session(request, v, if_match) if if_match is not None else await session_of(request, v)
            events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

            def relay(msg_type: str, content: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
                kind = "stdin" if msg_type == "input_request" else "iopub"
                events.put_nowait({"type": kind, "msg_type": msg_type, "content": content, **(extra or {})})

            async def run() -> None:
                try:
                    reply = None
                    if cell is None:
                        ex = await manager.execute(s, req, on_event=relay)
                    else:
                        ex, reply = await manager.execute_cell(s, req, cell, on_event=relay)
                    status = "ok" if ex.succeeded else ("timeout" if ex.error and ex.error.code == "Timeout" else "error")
                    _, rendered, _ = wire.render_execution(v, ex)
                    done: dict[str, Any] = {"type": "done", "status": status, "execution": rendered, "etag": s.etag}
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
                        await manager.interrupt(s)
                        await asyncio.shield(task)

            return StreamingResponse(lines(), media_type="application/x-ndjson")

        @app.post("/.local/executions/interrupt", tags=["local extensions"], summary="Interrupt the running execution (state kept)")
        async def interrupt_execution(request: Request) -> Response:
            v = version_of(request)
            s = existing_session(request, v)
            await manager.interrupt(s)
            return Response(status_code=204)

        @app.post("/.local/executions/input", tags=["local extensions"], summary="Answer the running cell's input() (stdin)")
        async def input_reply(request: Request) -> Response:
            v = version_of(request)
            body = await json_body(request)
            value = body.get("value") if isinstance(body, dict) else None
            if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > wire.MAX_INPUT_BYTES:
                raise wire.ContractError(
                    f"The body must be a JSON object with a string 'value' of at most {wire.MAX_INPUT_BYTES} bytes.",
                    code="SessionRequestValidationFailed",
                )
            await manager.send_input(existing_session(request, v), value)
            return Response(status_code=204)

        @app.post("/.local/comm", tags=["local extensions"], summary="A frontend's comm message to the session (comms)")
        async def comm_message(request: Request) -> Response:
            v = version_of(request)
            msg = wire.parse_comm_message(await json_body(request))
            outputs, reply = await manager.comm(existing_session(request, v), msg)
            return JSONResponse({"outputs": outputs, "reply": reply})

        @app.post("/.local/events", tags=["local extensions"], summary="What the session published outside its cells (comms)")
        async def session_events(request: Request) -> Response:
            v = version_of(request)
            body = await json_body(request)
            after, wait = (body.get("after", 0), body.get("wait", 0)) if isinstance(body, dict) else (None, None)
            if isinstance(after, bool) or not isinstance(after, int) or after < 0 or isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 10:
                raise wire.ContractError("The body must be {\"after\": <event number >= 0>, \"wait\": <0 to 10 seconds>}.", code="SessionRequestValidationFailed")
            identifier = identifier_of(request, v)
            s = manager.find(identifier)
            if s is None:
                raise no_such_session(identifier)
            listed, last = await manager.events(s, after, float(wait))
            return JSONResponse({"events": listed, "next": last})

        async def introspect(request: Request, msg_type: str) -> Response:
            v = version_of(request)
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
            s = await session_of(request, v)
            return JSONResponse(await manager.kernel_request(s, msg_type, content))

        @app.post("/.local/complete", tags=["local extensions"], summary="Complete code against the session's namespace")
        async def complete(request: Request) -> Response:
            return await introspect(request, "complete_request")

        @app.post("/.local/inspect", tags=["local extensions"], summary="Inspect an object in the session's namespace")
        async def inspect(request: Request) -> Response:
            return await introspect(request, "inspect_request")

    return BearerAuth(app, token)


async def _receive_upload(request: Request, boundary: bytes, path: str | None, fs: session_files.SessionFiles) -> wire.RemoteFile:
    """Stream the multipart part named ``file`` to disk, chunk by chunk.

    python-multipart's parser is push-based; its callbacks queue events that
    this coroutine hands to :meth:`SessionFiles.write` as an async iterator,
    so the server never holds more than one network chunk of the file.
    """
    events: deque[tuple[str, Any]] = deque()
    header: dict[str, bytes] = {}
    field = bytearray()
    value = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        header[field.decode("latin-1").lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        events.append(("part", dict(header)))
        header.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": lambda data, start, end: events.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: events.append(("end", None)),
        },
    )

    async def pump() -> AsyncIterator[tuple[str, Any]]:
        async for chunk in request.stream():
            parser.write(chunk)
            while events:
                yield events.popleft()
        parser.finalize()
        while events:
            yield events.popleft()

    stream = pump()
    try:
        async for kind, payload in stream:
            if kind != "part":
                continue
            _, opts = parse_options_header(payload.get("content-disposition", b""))
            if opts.get(b"name") != b"file":
                continue
            raw_name = opts.get(b"filename")
            if raw_name is None:
                raise wire.ContractError("The multipart part 'file' has no filename.", code="InvalidFileName")
            folder, name = wire.split_upload_name(raw_name.decode("utf-8", "strict"), path)

            async def data() -> AsyncIterator[bytes]:
                async for k, chunk in stream:
                    if k == "end":
                        return
                    if k == "data":
                        yield chunk

            return await fs.write(folder, name, data(), parents=True)
    except UnicodeDecodeError:
        raise wire.ContractError("The uploaded file name is not valid UTF-8.", code="InvalidFileName") from None
    except MultipartParseError as exc:
        raise wire.ContractError(f"The multipart body is malformed: {exc}.", code="InvalidUpload") from None
    finally:
        await stream.aclose()
    raise wire.ContractError("The upload has no multipart part named 'file'.", code="InvalidUpload")


async def _drain(request: Request, declared: int) -> None:
    """Read and drop what is left of a refused request body, within :data:`DRAIN_LIMIT`."""
    if declared > DRAIN_LIMIT:
        return
    read = 0
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > DRAIN_LIMIT:
                return
    except Exception:  # the body was already consumed, or the client left: nothing to drain
        return
