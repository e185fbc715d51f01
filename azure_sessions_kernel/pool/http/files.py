"""Files in the session's ``/mnt/data``: upload, list, metadata, download, delete.

Routes of both generations: ``files/upload`` and ``files/content/{path}``
(2024-02/08) and ``files``, ``files/{name}``, ``files/{name}/content`` with a
``path`` query (2024-10-02-preview and later). An upload streams to disk
and is stored only once its multipart body is complete.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ... import wire
from .. import files as session_files
from ..errors import RouteNotFound
from . import openapi as doc
from .common import EXECUTIONS_SINCE, files_of, raw_segments, session_of, version_of

#: Multipart framing allowed on top of the 128 MB file itself.
MULTIPART_OVERHEAD = 64 * 1024
#: A refused upload's remaining body is read and dropped up to this much, so
#: that the client gets the 413 instead of a reset connection; beyond it the
#: connection is simply closed.
DRAIN_LIMIT = 256 * 1024 * 1024

router = APIRouter(tags=["files"], default_response_class=Response)

_UPLOADED = doc.responses({200: ("The stored file.", (wire.FileResource, wire.LegacyFileList))})
_DOWNLOAD = {"*/*": {"schema": {"type": "string", "format": "binary"}}}


@router.post(
    "/files/upload",
    operation_id="filesUploadLegacy",
    summary="Upload a file (2024-02-02-preview, 2024-08-02-preview)",
    openapi_extra=doc.operation(wire.FileQuery, wire.UploadForm, media="multipart/form-data"),
    responses=_UPLOADED,
)
async def upload_legacy(request: Request) -> Response:
    version = version_of(request)
    if version.executions_api:
        raise RouteNotFound(f"POST files/upload does not exist in api-version {version.name}; use POST files.")
    return await _upload(request, version)


@router.post(
    "/files",
    operation_id="filesUpload",
    summary="Upload a file (2024-10-02-preview and later)",
    openapi_extra=doc.operation(wire.FileQuery, wire.UploadForm, media="multipart/form-data"),
    responses=_UPLOADED,
)
async def upload(request: Request) -> Response:
    return await _upload(request, version_of(request, EXECUTIONS_SINCE, "POST files"))


@router.get(
    "/files",
    operation_id="filesList",
    summary="List files",
    openapi_extra=doc.operation(wire.ListFilesQuery),
    responses=doc.responses({200: ("The folder's files.", (wire.FileList, wire.LegacyFileList))}),
)
async def list_files(request: Request) -> Response:
    version = version_of(request)
    session = await session_of(request, version)
    folder = wire.split_subpath(request.query_params.get("path"))
    recursive = request.query_params.get("recursive", "false").lower() == "true" and version.output_streams_cap
    listed = await asyncio.to_thread(files_of(session).list, folder, recursive)
    return JSONResponse(wire.render_file_list(version, listed))


@router.get(
    "/files/{rest:path}",
    operation_id="filesGet",
    summary="A file's metadata (files/{name}) or content (files/{name}/content; files/content/{path} before 2024-10-02-preview)",
    openapi_extra=doc.operation(wire.FileQuery),
    responses=doc.responses(
        {},
        **{"200": {"description": "The file's metadata (JSON) or its bytes.", "content": {**doc.json_content(wire.FileResource, wire.LegacyFileList), **_DOWNLOAD}}},
    ),
)
async def get_file(request: Request, rest: str) -> Response:
    version, parts, files, folder = await _target(request)
    # files/content/{path...} (code/execute generation) vs files/{name}[/content].
    if not version.executions_api and len(parts) >= 2 and parts[0] == "content":
        *sub, name = parts[1:]
        folder = folder + wire.split_subpath("/".join(sub)) if sub else folder
        return _download(files, folder, wire.validate_file_name(name))
    _require_per_file_routes(version)
    if len(parts) == 2 and parts[1] == "content" and version.executions_api:
        return _download(files, folder, wire.validate_file_name(parts[0]))
    name = _single_name(request, version, parts)
    info = await asyncio.to_thread(files.stat, folder, name)
    return JSONResponse(wire.render_file(version, info))  # 2024-08 wraps the one file like a list


@router.delete(
    "/files/{rest:path}",
    operation_id="filesDelete",
    summary="Delete a file (2024-08-02-preview and later)",
    openapi_extra=doc.operation(wire.FileQuery),
    responses=doc.responses({200: ("Deleted (2024-08-02-preview).", (wire.DeletedMessage,)), 204: ("Deleted.", ())}),
)
async def delete_file(request: Request, rest: str) -> Response:
    version, parts, files, folder = await _target(request)
    _require_per_file_routes(version)
    name = _single_name(request, version, parts)
    await asyncio.to_thread(files.delete, folder, name)
    if version.executions_api:
        return Response(status_code=204)
    return JSONResponse({"message": "file deleted successfully"})


async def _target(request: Request) -> tuple[wire.ApiVersion, list[str], session_files.SessionFiles, tuple[str, ...]]:
    """The api-version, the path's segments after ``files``, the session's files and the ``path`` folder."""
    version = version_of(request)
    parts = raw_segments(request, 1)
    session = await session_of(request, version)
    return version, parts, files_of(session), wire.split_subpath(request.query_params.get("path"))


def _require_per_file_routes(version: wire.ApiVersion) -> None:
    if version.name == "2024-02-02-preview":
        raise RouteNotFound("api-version 2024-02-02-preview has only files/content/{name} for single files.")


def _single_name(request: Request, version: wire.ApiVersion, parts: list[str]) -> str:
    if len(parts) != 1:
        raise RouteNotFound(f"No route {request.method} {request.url.path} in api-version {version.name}.")
    return wire.validate_file_name(parts[0])


def _download(files: session_files.SessionFiles, folder: tuple[str, ...], name: str) -> Response:
    handle = files.open_read(folder, name)

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(1 << 20):
                yield block

    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return StreamingResponse(chunks(), media_type=ctype, headers={"Content-Disposition": disposition})


async def _upload(request: Request, version: wire.ApiVersion) -> Response:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > wire.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:
        await _drain(request, int(declared))
        raise session_files.UploadTooLarge(
            f"The upload is {int(declared) / 1e6:.1f} MB; sessions accept files up to {wire.MAX_UPLOAD_BYTES // 2**20} MB."
        )
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise wire.ContractError("Uploads must be multipart/form-data with a part named 'file'.", code="InvalidUpload")
    session = await session_of(request, version)
    try:
        stored = await _receive_upload(request, boundary, request.query_params.get("path"), files_of(session))
    except session_files.FileOpError:
        await _drain(request, DRAIN_LIMIT)
        raise
    return JSONResponse(wire.render_file(version, stored))


async def _receive_upload(request: Request, boundary: bytes, path: str | None, files: session_files.SessionFiles) -> wire.RemoteFile:
    """Stream the multipart part named ``file`` to disk, chunk by chunk.

    python-multipart's parser is push-based; its callbacks queue events that
    this coroutine hands to :meth:`SessionFiles.write` as an async iterator,
    so the server never holds more than one network chunk of the file. The
    file is committed only when the body's closing boundary arrived: a body
    cut off in transfer raises (400) and ``write`` removes what it wrote.
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
            "on_end": lambda: events.append(("complete", None)),
        },
    )

    async def pump() -> AsyncIterator[tuple[str, Any]]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > wire.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:  # parts after 'file' count too
                raise session_files.UploadTooLarge(f"The upload is larger than {wire.MAX_UPLOAD_BYTES // 2**20} MB.")
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
                in_file = True
                async for k, chunk in stream:
                    if k == "complete":
                        return
                    if k == "end":
                        in_file = False  # later parts are read to the closing boundary and dropped
                    elif k == "data" and in_file:
                        yield chunk
                raise wire.ContractError(
                    "The multipart body ended before its closing boundary: the upload was cut off, and nothing was stored.",
                    code="InvalidUpload",
                )

            return await files.write(folder, name, data(), parents=True)
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
