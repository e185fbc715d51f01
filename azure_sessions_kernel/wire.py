"""The wire contract of the Azure Container Apps dynamic-sessions data-plane API.

This module is the one place that knows the routes, request bodies and
response JSON shapes of every api-version. The client
(:mod:`azure_sessions_kernel.client`) *renders requests and parses responses*
with it; the local pool (:mod:`azure_sessions_kernel.pool`) *parses requests
and renders responses* with it. ``tests/test_wire_reference.py`` pins both
directions to raw JSON copied from the reference
(``shared/reference/aca-sessions-api.md``), so that a mistake shared by client
and pool cannot hide behind a green round trip.

Generations (reference §1):

* ``2024-02-02-preview`` / ``2024-08-02-preview``: ``POST code/execute`` with a
  ``properties``-wrapped body; ``files/upload``, ``files/content/{path}``,
  ``files`` listing as ``value[].properties``.
* ``2024-10-02-preview`` and later: ``POST executions`` (+ ``GET
  executions/{id}``), flat body, ``SessionCodeExecutionResource`` responses;
  ``files``, ``files/{name}``, ``files/{name}/content`` with a ``path`` query.
  ``2025-02-02-preview`` adds ``session``, ``listSessions`` and ``metadata``;
  ``2025-10-02-preview`` adds ``outputStreamsMaxLength``, recursive listing and
  ``.management/stopSession``.

Every field of a response is treated as optional when parsing, as the
reference advises (§4.3): real pools omit fields the specs call required.

Local-pool extensions (never needed by an Azure client) live under the
``.local/`` route prefix and are described at the end of this module.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import quote

from typing_extensions import NotRequired, TypedDict

__all__ = [
    "api_version",
    "API_VERSIONS",
    "ApiVersion",
    "ApiVersionName",
    "CELL_REPLY_FIELDS",
    "COMM_MSG_TYPES",
    "CommAnswer",
    "CommBody",
    "CommMessage",
    "ContractError",
    "DATA_DIR",
    "DEFAULT_API_VERSION",
    "DEFAULT_OUTPUT_STREAMS_MAX_LENGTH",
    "DeletedMessage",
    "Doc",
    "ERROR_CODE_HEADER",
    "ErrorEnvelope",
    "ErrorInfo",
    "ErrorObject",
    "events_args_valid",
    "EventsAnswer",
    "EventsBody",
    "ExecuteBody",
    "Execution",
    "ExecutionRequest",
    "ExecutionResource",
    "ExecutionResultBody",
    "ExecutionStatus",
    "FileList",
    "FileQuery",
    "FileResource",
    "FolderPath",
    "format_time",
    "FRONTEND_COMM_TYPES",
    "Identifier",
    "ImageResult",
    "input_fits",
    "InputBody",
    "IntrospectBody",
    "JupyterCell",
    "JupyterCellBody",
    "LegacyExecuteBody",
    "LegacyExecuteProperties",
    "LegacyExecution",
    "LegacyExecutionProperties",
    "LegacyFile",
    "LegacyFileList",
    "LegacyFileProperties",
    "ListFilesQuery",
    "MAX_EVENTS_WAIT",
    "MAX_EXECUTION_TIMEOUT",
    "MAX_INPUT_BYTES",
    "MAX_UPLOAD_BYTES",
    "Metadata",
    "NameVersion",
    "parse_cell_reply",
    "parse_comm_message",
    "parse_error",
    "parse_events_body",
    "parse_execute_request",
    "parse_execution",
    "parse_file",
    "parse_file_list",
    "parse_input_body",
    "parse_jupyter_cell",
    "parse_metadata",
    "parse_session",
    "parse_session_list",
    "parse_time",
    "PoolMetadata",
    "RemoteFile",
    "render_cell_reply",
    "render_comm_message",
    "render_error",
    "render_execute_request",
    "render_execution",
    "render_file",
    "render_file_list",
    "render_jupyter_cell",
    "render_metadata",
    "render_session",
    "render_session_list",
    "ResultValue",
    "Routes",
    "Session",
    "SessionEvent",
    "SessionList",
    "SessionQuery",
    "SessionResource",
    "SessionView",
    "SessionViewList",
    "split_subpath",
    "split_upload_name",
    "STREAM_KEEPALIVE",
    "STREAM_MSG_TYPES",
    "StreamBody",
    "StreamDoneLine",
    "StreamIopubLine",
    "StreamKeepaliveLine",
    "StreamLine",
    "StreamStdinLine",
    "Timestamp",
    "TOKEN_SCOPE",
    "UploadForm",
    "validate_file_name",
    "validate_identifier",
    "VersionQuery",
]

#: Every data-plane version this project speaks, oldest first.
API_VERSIONS: tuple[str, ...] = (
    "2024-02-02-preview",
    "2024-08-02-preview",
    "2024-10-02-preview",
    "2025-02-02-preview",
    "2025-10-02-preview",
)
#: The newest documented version (reference §1, MS-COMMIT-POOL).
DEFAULT_API_VERSION = "2025-10-02-preview"

#: Azure caps one code execution at 220 s (reference §7, MS-CI).
MAX_EXECUTION_TIMEOUT = 220
#: Azure refuses uploads over 128 MB with HTTP 413 (reference §5, MS-CI).
MAX_UPLOAD_BYTES = 128 * 1024 * 1024
#: Default ``outputStreamsMaxLength`` (reference §4.3, TSP).
DEFAULT_OUTPUT_STREAMS_MAX_LENGTH = 4096
#: The session's working directory and file area (reference §5).
DATA_DIR = "/mnt/data"
#: Header carrying the error code on every error response (reference §8).
ERROR_CODE_HEADER = "x-ms-error-code"
#: Token audience (reference §3).
TOKEN_SCOPE = "https://dynamicsessions.io/.default"


# --------------------------------------------------------------------------
# Errors in the contract itself
# --------------------------------------------------------------------------


class ContractError(ValueError):
    """A request or response does not fit the contract.

    Raised by the ``parse_*`` functions. The local pool turns it into an
    Azure error envelope with ``status``; the client turns a malformed
    response into :class:`azure_sessions_kernel.client.ResponseFormatError`.
    """

    def __init__(self, message: str, *, code: str = "BadRequest", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


# --------------------------------------------------------------------------
# API versions and routes
# --------------------------------------------------------------------------

# Identifier rules differ between sources (reference §7). We enforce, per
# version, the rule of that version's spec; 2024-02/08 have no spec, so the
# union of the docs' charset and the later specs' charset applies there.
_ID_2410 = re.compile(r"[A-Za-z0-9_-]{1,256}")
_ID_2510 = re.compile(r"""[a-zA-Z0-9_|}{\[\]:";'<>?/.,@#$%^&*()\-+=!~`]{4,128}""")
_ID_LEGACY = re.compile(r"""[a-zA-Z0-9_|}{\[\]:";'<>?/.,@#$%^&*()\-+=!~`]{1,256}""")


@dataclasses.dataclass(frozen=True)
class ApiVersion:
    """What one ``api-version`` string means on the wire."""

    name: str
    #: ``executions`` generation (2024-10-02-preview and later) as opposed
    #: to the ``code/execute`` generation.
    executions_api: bool
    #: ``session``, ``listSessions``, ``metadata`` routes exist.
    session_management: bool
    #: ``outputStreamsMaxLength`` is honoured and ``recursive`` listing exists.
    output_streams_cap: bool
    #: HTTP status of a synchronous execute (202 in the 2024-10 spec, 200 after).
    execute_status: int
    identifier_pattern: re.Pattern[str]

    def __str__(self) -> str:
        return self.name


_VERSIONS: dict[str, ApiVersion] = {
    "2024-02-02-preview": ApiVersion("2024-02-02-preview", False, False, False, 200, _ID_LEGACY),
    "2024-08-02-preview": ApiVersion("2024-08-02-preview", False, False, False, 200, _ID_LEGACY),
    "2024-10-02-preview": ApiVersion("2024-10-02-preview", True, False, False, 202, _ID_2410),
    "2025-02-02-preview": ApiVersion("2025-02-02-preview", True, True, False, 200, _ID_2410),
    "2025-10-02-preview": ApiVersion("2025-10-02-preview", True, True, True, 200, _ID_2510),
}


def api_version(name: str | ApiVersion | None) -> ApiVersion:
    """Look up an api-version; ``None`` means :data:`DEFAULT_API_VERSION`.

    Raises :class:`ContractError` (400, ``InvalidApiVersion``) naming the
    supported versions when ``name`` is unknown.
    """
    if isinstance(name, ApiVersion):
        return name
    if name is None:
        name = DEFAULT_API_VERSION
    try:
        return _VERSIONS[name]
    except KeyError:
        raise ContractError(
            f"Unsupported api-version {name!r}; supported versions are: {', '.join(API_VERSIONS)}.",
            code="InvalidApiVersion",
        ) from None


def validate_identifier(version: ApiVersion, identifier: str | None) -> str:
    """Check a session identifier against the rule of ``version``."""
    if identifier is None or identifier == "":
        raise ContractError("The 'identifier' query parameter is required.", code="SessionIdentifierMissing")
    if not isinstance(identifier, str) or not version.identifier_pattern.fullmatch(identifier):
        raise ContractError(
            f"Invalid session identifier {identifier[:140]!r} for api-version {version.name}: "
            f"it must match {version.identifier_pattern.pattern}.",
            code="InvalidSessionIdentifier",
        )
    return identifier


def _segment(value: str, what: str) -> str:
    """Percent-encode one path segment so that it can never extend the path."""
    if not value or value in (".", "..") or "\x00" in value:
        raise ContractError(f"Invalid {what} {value!r}.", code="InvalidFileName")
    return quote(value, safe="")


class Routes:
    """Relative route paths (no leading slash) for one api-version.

    The endpoint is joined in front by the caller; identifiers, file names
    and execution ids are percent-encoded here so that they can never
    extend the path.
    """

    SESSION = "session"
    LIST_SESSIONS = "listSessions"
    METADATA = "metadata"
    STOP_SESSION = ".management/stopSession"
    MGMT_GET_SESSION = ".management/getSession"
    MGMT_LIST_SESSIONS = ".management/listSessions"

    # Local-pool extensions (see the end of this module).
    EXT_STREAM = ".local/executions/stream"
    EXT_INTERRUPT = ".local/executions/interrupt"
    EXT_INPUT = ".local/executions/input"
    EXT_COMM = ".local/comm"
    EXT_EVENTS = ".local/events"
    EXT_COMPLETE = ".local/complete"
    EXT_INSPECT = ".local/inspect"

    def __init__(self, version: str | ApiVersion | None = None) -> None:
        self.version = api_version(version)

    @property
    def execute(self) -> str:
        return "executions" if self.version.executions_api else "code/execute"

    def execution(self, execution_id: str) -> str:
        self._require_executions("GET executions/{id}")
        return f"executions/{_segment(execution_id, 'execution id')}"

    @property
    def upload(self) -> str:
        return "files" if self.version.executions_api else "files/upload"

    @property
    def list_files(self) -> str:
        return "files"

    def file(self, name: str) -> str:
        """``GET``/``DELETE`` one file's metadata (2024-08-02-preview and later)."""
        if self.version.name == "2024-02-02-preview":
            raise ContractError("api-version 2024-02-02-preview has no per-file metadata or delete route.")
        return f"files/{_segment(name, 'file name')}"

    def file_content(self, name: str, path: str | None = None) -> str:
        """Download route. ``path`` is a sub-folder of ``/mnt/data``.

        In the ``code/execute`` generation the folder is part of the route
        (``files/content/dir/name``); later versions take a ``path`` query.
        """
        if self.version.executions_api:
            return f"files/{_segment(name, 'file name')}/content"
        parts = [*split_subpath(path), name]
        return "files/content/" + "/".join(_segment(p, "file name") for p in parts)

    def session(self) -> str:
        self._require_session_management("the session route")
        return self.SESSION

    def _require_executions(self, what: str) -> None:
        if not self.version.executions_api:
            raise ContractError(f"{what} needs api-version 2024-10-02-preview or later (got {self.version.name}).")

    def _require_session_management(self, what: str) -> None:
        if not self.version.session_management:
            raise ContractError(f"{what} needs api-version 2025-02-02-preview or later (got {self.version.name}).")

    def query(self, identifier: str | None = None, **params: Any) -> dict[str, str]:
        """Query parameters in the order Azure's samples use."""
        q = {"api-version": self.version.name}
        if identifier is not None:
            q["identifier"] = identifier
        for key, value in params.items():
            if value is None:
                continue
            q[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return q


# --------------------------------------------------------------------------
# Paths inside /mnt/data
# --------------------------------------------------------------------------


def split_subpath(path: str | None) -> tuple[str, ...]:
    """Split a ``path`` query (or folder part of a name) into safe components.

    Accepts a folder relative to ``/mnt/data`` (``test-directory``) or an
    absolute one under it (``/mnt/data/test-directory``), as the samples and
    the spec examples disagree (reference §5.3). Rejects ``..``, other
    absolute paths, NUL bytes and empty components with a
    :class:`ContractError`; returns ``()`` for the data root itself.
    """
    if path is None:
        return ()
    if not isinstance(path, str):
        raise ContractError(f"Invalid path {path!r}.", code="InvalidPath")
    if "\x00" in path:
        raise ContractError("Paths must not contain NUL bytes.", code="InvalidPath")
    rest = path
    if rest.startswith("/"):
        if rest == DATA_DIR or rest == DATA_DIR + "/":
            return ()
        if not rest.startswith(DATA_DIR + "/"):
            raise ContractError(f"Path {path!r} is outside {DATA_DIR}.", code="InvalidPath")
        rest = rest[len(DATA_DIR) + 1 :]
    parts = tuple(p for p in rest.split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise ContractError(f"Path {path!r} must not contain '..'.", code="InvalidPath")
    if any(len(p.encode()) > 255 for p in parts) or len(path) > 4096:
        raise ContractError(f"Path {path[:80]!r}... is too long.", code="InvalidPath")
    return parts


def validate_file_name(name: str | None) -> str:
    """A file name is a single path segment: no ``/``, ``..``, NUL or over 255 bytes."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise ContractError(f"Invalid file name {name!r}: a file name is one path segment.", code="InvalidFileName")
    if len(name.encode()) > 255:
        raise ContractError(f"File name {name[:60]!r}... is longer than 255 bytes.", code="InvalidFileName")
    return name


def split_upload_name(filename: str | None, path: str | None = None) -> tuple[tuple[str, ...], str]:
    """Folder and name of an upload from the multipart filename and ``path``.

    Semantic Kernel and LlamaIndex send the multipart filename as an absolute
    ``/mnt/data/<name>``; LangChain sends a relative name (reference §5.1).
    Both are accepted; a folder part in the filename is appended to ``path``.
    """
    if not filename:
        raise ContractError("The multipart part 'file' has no filename.", code="InvalidFileName")
    folder = split_subpath(path)
    head, _, name = filename.rpartition("/")
    if head or filename.startswith("/"):
        folder = folder + split_subpath(head if filename.startswith("/") else head)
        if filename.startswith("/") and not head:
            raise ContractError(f"Path {filename!r} is outside {DATA_DIR}.", code="InvalidPath")
    return folder, validate_file_name(name)


# --------------------------------------------------------------------------
# Typed models shared by client and pool
# --------------------------------------------------------------------------


class ExecutionStatus(str, enum.Enum):
    """``Azure.Core.Foundations.OperationState`` (reference §4.3)."""

    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def finished(self) -> bool:
        return self in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELED)

    @classmethod
    def parse(cls, value: Any) -> ExecutionStatus | None:
        """Read ``Succeeded``/``Failed`` and the older ``Success``/``Failure`` in any case."""
        if not isinstance(value, str):
            return None
        v = value.strip().lower()
        aliases = {"success": cls.SUCCEEDED, "failure": cls.FAILED, "cancelled": cls.CANCELED}
        if v in aliases:
            return aliases[v]
        for member in cls:
            if member.value.lower() == v:
                return member
        return None


@dataclasses.dataclass(frozen=True)
class ErrorInfo:
    """The Azure error envelope's ``error`` object (reference §8)."""

    code: str
    message: str
    target: str | None = None
    details: tuple[ErrorInfo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            out["target"] = self.target
        if self.details:
            out["details"] = [d.to_json() for d in self.details]
        return out


def render_error(code: str, message: str, target: str | None = None) -> ErrorEnvelope:
    """``{"error": {"code", "message"[, "target"]}}``; send with :data:`ERROR_CODE_HEADER`."""
    return {"error": ErrorInfo(code, message, target).to_json()}


def parse_error(body: Any) -> ErrorInfo | None:
    """Read an error envelope; ``None`` when ``body`` is not one.

    Accepts ``{"error": {...}}``, a bare ``{"code", "message"}`` and the plain
    string bodies of the interpreter container (reference §8).
    """
    if isinstance(body, str) and body.strip():
        return ErrorInfo("", body.strip())
    if not isinstance(body, Mapping):
        return None
    err = body.get("error", body)
    if isinstance(err, Mapping) and isinstance(err.get("error"), Mapping):
        err = err["error"]  # the execution resource nests the envelope
    if not isinstance(err, Mapping) or not ("code" in err or "message" in err):
        return None
    details = tuple(d for d in (parse_error(x) for x in err.get("details") or () if isinstance(x, Mapping)) if d)
    target = err.get("target")
    return ErrorInfo(str(err.get("code") or ""), str(err.get("message") or ""), target if isinstance(target, str) else None, details)


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """An image result value: ``{"type": "image", "format": "png", "base64_data": ...}``."""

    format: str
    base64_data: str

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.base64_data)

    def to_json(self) -> dict[str, str]:
        return {"type": "image", "format": self.format, "base64_data": self.base64_data}


@dataclasses.dataclass(frozen=True)
class ExecutionRequest:
    """One code execution as the pool understands it, whatever the version sent."""

    code: str
    timeout_in_seconds: int = MAX_EXECUTION_TIMEOUT
    asynchronous: bool = False
    output_streams_max_length: int | None = None
    return_jupyter_format: bool = False
    use_empty_kernel: bool = False


@dataclasses.dataclass(frozen=True)
class Execution:
    """The outcome (or state, for asynchronous runs) of one code execution.

    ``result`` is the raw JSON result value: a number, bool, ``None``, a
    string (``repr``-like ``text/plain`` for other objects) or an image dict;
    :attr:`image` decodes the latter.
    """

    status: ExecutionStatus | None = None
    stdout: str = ""
    stderr: str = ""
    result: Any = None
    duration_ms: int | None = None
    id: str | None = None
    identifier: str | None = None
    asynchronous: bool = False
    error: ErrorInfo | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is ExecutionStatus.SUCCEEDED

    @property
    def image(self) -> ImageResult | None:
        r = self.result
        if isinstance(r, Mapping) and str(r.get("type", "")).lower() == "image" and isinstance(r.get("base64_data"), str):
            return ImageResult(str(r.get("format") or "png"), r["base64_data"])
        return None


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A file or directory in the session's ``/mnt/data``.

    ``name`` is the bare name; ``directory`` the folder relative to the
    listed path (2025-10-02-preview recursive listings, else ``""``).
    """

    name: str
    size: int | None = None
    last_modified: _dt.datetime | None = None
    content_type: str | None = None
    is_directory: bool = False
    directory: str = ""

    @property
    def path(self) -> str:
        """Path relative to the listed folder."""
        return f"{self.directory}/{self.name}" if self.directory else self.name


@dataclasses.dataclass(frozen=True)
class Session:
    """``GET /session`` (2025-02-02-preview and later)."""

    identifier: str | None = None
    created_at: _dt.datetime | None = None
    last_accessed_at: _dt.datetime | None = None
    expires_at: _dt.datetime | None = None
    etag: str | None = None


@dataclasses.dataclass(frozen=True)
class PoolMetadata:
    """``GET /metadata``. ``extensions`` is the local pool's additive block
    (``None`` on Azure and in Azure-strict mode)."""

    runtimes: tuple[tuple[str, str], ...] = ()
    packages: tuple[tuple[str, str], ...] = ()
    created_at: _dt.datetime | None = None
    last_updated_at: _dt.datetime | None = None
    jupyter_kernel: Mapping[str, Any] | None = None
    extensions: Mapping[str, Any] | None = None

    @property
    def python_version(self) -> str | None:
        return next((v for n, v in self.runtimes if n.lower() == "python"), None)


# --------------------------------------------------------------------------
# Wire shapes: the JSON of every request and response, as types
# --------------------------------------------------------------------------
#
# The ``render_*`` functions build these shapes and the ``parse_*`` functions
# read them (more leniently: any case, older spellings). The local pool's
# OpenAPI document is generated from these types (pydantic reads TypedDicts),
# and ``tests/test_openapi.py`` checks every ``render_*`` result against them,
# so the document, the pool and the client cannot drift apart. Nothing here
# imports pydantic: the client and the kernel do not need it.


class Doc:
    """JSON-schema keywords for one field: ``Annotated[int, Doc(minimum=1)]``.

    pydantic calls ``__get_pydantic_json_schema__`` on ``Annotated`` metadata
    when the pool builds its OpenAPI document; at run time this is inert.
    """

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema

    def __repr__(self) -> str:
        return f"Doc({self.keywords!r})"


#: Every ``api-version`` value, as a type (the same tuple as :data:`API_VERSIONS`).
ApiVersionName = Literal[
    "2024-02-02-preview", "2024-08-02-preview", "2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview"
]
#: A session identifier: the union of every version's rule (see :func:`validate_identifier`).
Identifier = Annotated[
    str,
    Doc(
        pattern=f"^{_ID_LEGACY.pattern}$",
        description="The session's identifier; a new one creates a session. 2024-10-02-preview and 2025-02-02-preview "
        f"allow only {_ID_2410.pattern}; 2025-10-02-preview needs 4 to 128 characters.",
    ),
]
#: An RFC 3339 UTC timestamp, or ``null``.
Timestamp = Annotated[str | None, Doc(format="date-time")]
#: The raw JSON result value of an execution (number, bool, null, text or an image object).
ResultValue = Annotated[Any, Doc(description="A JSON number, boolean, null, the text/plain form, or an image object.")]

#: The ``path`` query of the file routes.
FolderPath = Annotated[str, Doc(description=f"A folder under {DATA_DIR}, relative or absolute.")]

# The query parameters of each kind of route (functional form: ``api-version`` is no identifier).
VersionQuery = TypedDict("VersionQuery", {"api-version": ApiVersionName})
SessionQuery = TypedDict("SessionQuery", {"api-version": ApiVersionName, "identifier": Identifier})
FileQuery = TypedDict(
    "FileQuery",
    {
        "api-version": ApiVersionName,
        "identifier": Identifier,
        "path": NotRequired[FolderPath],
    },
)
ListFilesQuery = TypedDict(
    "ListFilesQuery",
    {
        "api-version": ApiVersionName,
        "identifier": Identifier,
        "path": NotRequired[FolderPath],
        "recursive": NotRequired[Annotated[bool, Doc(description="List sub-folders too (2025-10-02-preview).")]],
    },
)


class ErrorObject(TypedDict):
    code: str
    message: str
    target: NotRequired[str]
    details: NotRequired[list[ErrorObject]]


class ErrorEnvelope(TypedDict):
    """Every error response (with the same code in ``x-ms-error-code``)."""

    error: ErrorObject


class ExecuteBody(TypedDict):
    """``POST executions`` (and, wrapped in ``properties``, ``POST code/execute``)."""

    code: str
    codeInputType: NotRequired[Literal["Inline", "InlineBase64", "InlineText"]]
    executionType: NotRequired[Literal["Synchronous", "Asynchronous"]]
    timeoutInSeconds: NotRequired[Annotated[int, Doc(minimum=1, description=f"Capped at {MAX_EXECUTION_TIMEOUT} s.")]]
    outputStreamsMaxLength: NotRequired[Annotated[int, Doc(minimum=0, description="2025-10-02-preview.")]]
    returnJupyterFormatExecutionResult: NotRequired[bool]
    useEmptyKernel: NotRequired[bool]


class LegacyExecuteProperties(TypedDict):
    """What ``POST code/execute`` wraps in ``properties`` (the samples' lower-case spellings)."""

    code: str
    codeInputType: NotRequired[Literal["inline"]]
    executionType: NotRequired[Literal["synchronous"]]
    timeoutInSeconds: NotRequired[Annotated[int, Doc(minimum=1, description=f"Capped at {MAX_EXECUTION_TIMEOUT} s.")]]


class LegacyExecuteBody(TypedDict):
    """``POST code/execute`` (2024-02-02-preview, 2024-08-02-preview)."""

    properties: LegacyExecuteProperties


class ExecutionResultBody(TypedDict):
    stdout: str
    stderr: str
    executionResult: ResultValue
    executionTimeInMilliseconds: int


class ExecutionResource(TypedDict):
    """An execution of 2024-10-02-preview and later (``result`` once it finished)."""

    id: str | None
    identifier: str | None
    sessionId: str | None
    executionType: Literal["Synchronous", "Asynchronous"]
    status: Literal["NotStarted", "Running", "Succeeded", "Failed", "Canceled"]
    result: NotRequired[ExecutionResultBody]
    error: NotRequired[ErrorEnvelope]


LegacyExecutionProperties = TypedDict(
    "LegacyExecutionProperties",
    {
        "$id": str,
        "status": Literal["Success", "Failure"],
        "stdout": str,
        "stderr": str,
        "result": ResultValue,
        "executionResult": ResultValue,
        "executionTimeInMilliseconds": int,
    },
)
LegacyExecution = TypedDict("LegacyExecution", {"$id": str, "properties": LegacyExecutionProperties})


class FileResource(TypedDict):
    """A file of 2024-10-02-preview and later (``directory`` from 2025-10-02-preview)."""

    name: str
    type: Literal["File", "directory"]
    sizeInBytes: int
    lastModifiedAt: Timestamp
    contentType: str
    directory: NotRequired[str]


class FileList(TypedDict):
    value: list[FileResource]
    nextLink: None


LegacyFileProperties = TypedDict(
    "LegacyFileProperties", {"$id": str, "filename": str, "size": int, "lastModifiedTime": Timestamp}
)
LegacyFile = TypedDict("LegacyFile", {"$id": str, "properties": LegacyFileProperties})
#: 2024-02/08 answer a list, an upload and a file's metadata alike.
LegacyFileList = TypedDict("LegacyFileList", {"$id": str, "value": list[LegacyFile]})


class UploadForm(TypedDict):
    """The ``multipart/form-data`` body of an upload: one part named ``file``, with a filename."""

    file: Annotated[bytes, Doc(description=f"The file; at most {MAX_UPLOAD_BYTES // 2**20} MB.")]


class DeletedMessage(TypedDict):
    """``DELETE files/{name}`` in 2024-08-02-preview."""

    message: str


class SessionResource(TypedDict):
    identifier: str | None
    createdAt: Timestamp
    lastAccessedAt: Timestamp
    expireAt: Timestamp
    etag: str | None


class SessionView(TypedDict):
    """A session as the ``.management`` routes show it (``expiresAt``)."""

    identifier: str | None
    createdAt: Timestamp
    lastAccessedAt: Timestamp
    expiresAt: Timestamp
    etag: str | None


class SessionList(TypedDict):
    sessions: list[SessionResource]
    nextLink: None


class SessionViewList(TypedDict):
    value: list[SessionView]
    count: int
    nextLink: None


class NameVersion(TypedDict):
    name: str
    version: str


class Metadata(TypedDict):
    """``GET metadata``; ``localPool`` only from a local pool that is not Azure-strict."""

    runtimes: list[NameVersion]
    preInstalledPackages: list[NameVersion]
    createdAt: Timestamp
    lastUpdatedAt: Timestamp
    jupyterKernel: dict[str, Any] | None
    localPool: NotRequired[dict[str, Any]]


# --------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------


def format_time(t: _dt.datetime | float) -> str:
    """RFC 3339 UTC with a ``Z`` (the shape of every sample)."""
    if not isinstance(t, _dt.datetime):
        t = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> _dt.datetime | None:
    """Parse RFC 3339 timestamps, including .NET's 7 fractional digits; ``None`` if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", value.strip())
    if not m:
        return None
    base, frac, tz = m.groups()
    text = base + (("." + (frac + "000000")[:6]) if frac else "") + ("+00:00" if tz in (None, "Z") else tz)
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Execute: requests
# --------------------------------------------------------------------------


def render_execute_request(version: str | ApiVersion, req: ExecutionRequest) -> ExecuteBody | LegacyExecuteBody:
    """The JSON body a client sends to the execute route of ``version``."""
    v = api_version(version)
    if not v.executions_api:
        return {
            "properties": {
                "codeInputType": "inline",
                "executionType": "synchronous",
                "code": req.code,
                "timeoutInSeconds": req.timeout_in_seconds,
            }
        }
    body: dict[str, Any] = {
        "codeInputType": "Inline",
        "executionType": "Asynchronous" if req.asynchronous else "Synchronous",
        "code": req.code,
        "timeoutInSeconds": req.timeout_in_seconds,
    }
    if v.output_streams_cap:
        if req.output_streams_max_length is not None:
            body["outputStreamsMaxLength"] = req.output_streams_max_length
        if req.return_jupyter_format:
            body["returnJupyterFormatExecutionResult"] = True
        if req.use_empty_kernel:
            body["useEmptyKernel"] = True
    return body


def _get_ci(obj: Mapping[str, Any], *names: str) -> Any:
    """First present key among ``names``, compared case-insensitively."""
    lowered = {k.lower(): k for k in obj if isinstance(k, str)}
    for name in names:
        key = lowered.get(name.lower())
        if key is not None:
            return obj[key]
    return None


def _int_field(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ContractError(f"'{name}' must be an integer, got {type(value).__name__}.")
    try:
        n = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        n = None
    if n is None:
        raise ContractError(f"'{name}' must be an integer, got {value!r}.")
    if n < lo or (hi is not None and n > hi):
        raise ContractError(f"'{name}' must be between {lo} and {hi if hi is not None else 'any'}; got {n}.")
    return n


def _bool_field(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ContractError(f"'{name}' must be a boolean, got {value!r}.")


def parse_execute_request(version: str | ApiVersion, body: Any) -> ExecutionRequest:
    """Read an execute body as any known client sends it (reference §4, §12.2).

    Wrapped (``properties``) and flat bodies, ``code`` or the legacy
    ``pythonCode``, enums in any case, ``InlineBase64`` input. A timeout over
    220 s is capped at 220 s (some clients send 600); zero or negative is
    refused. Shell-pool fields are refused: this is a Python pool.
    """
    v = api_version(version)
    if not isinstance(body, Mapping):
        raise ContractError("The request body must be a JSON object.", code="SessionRequestValidationFailed")
    props = _get_ci(body, "properties")
    if props is not None:
        if not isinstance(props, Mapping):
            raise ContractError("'properties' must be a JSON object.", code="SessionRequestValidationFailed")
        body = {**{k: val for k, val in body.items() if k.lower() != "properties"}, **props}
    if _get_ci(body, "shellCommand", "execCommandAndArgs") is not None:
        raise ContractError("This is a Python (PythonLTS) pool: 'shellCommand' and 'execCommandAndArgs' are for Shell pools.", code="SessionRequestValidationFailed")
    code = _get_ci(body, "code", "pythonCode")
    if code is None:
        raise ContractError("'code' is required in the request body.", code="SessionRequestValidationFailed")
    if not isinstance(code, str):
        raise ContractError(f"'code' must be a string, got {type(code).__name__}.", code="SessionRequestValidationFailed")
    input_type = _get_ci(body, "codeInputType")
    if input_type is not None:
        if not isinstance(input_type, str) or input_type.lower() not in ("inline", "inlinebase64", "inlinetext"):
            raise ContractError(f"'codeInputType' must be Inline, InlineBase64 or InlineText; got {input_type!r}.", code="SessionRequestValidationFailed")
        if input_type.lower() == "inlinebase64":
            try:
                code = base64.b64decode(code, validate=True).decode("utf-8")
            except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
                raise ContractError("'code' is not valid base64-encoded UTF-8 text.", code="SessionRequestValidationFailed") from None
    exec_type = _get_ci(body, "executionType")
    asynchronous = False
    if exec_type is not None:
        if not isinstance(exec_type, str) or exec_type.lower() not in ("synchronous", "asynchronous"):
            raise ContractError(f"'executionType' must be Synchronous or Asynchronous; got {exec_type!r}.", code="SessionRequestValidationFailed")
        asynchronous = exec_type.lower() == "asynchronous"
        if asynchronous and not v.executions_api:
            raise ContractError(f"Asynchronous execution needs api-version 2024-10-02-preview or later (got {v.name}).", code="SessionRequestValidationFailed")
    timeout = _get_ci(body, "timeoutInSeconds")
    timeout = MAX_EXECUTION_TIMEOUT if timeout is None else min(_int_field(timeout, "timeoutInSeconds", 1), MAX_EXECUTION_TIMEOUT)
    cap = _get_ci(body, "outputStreamsMaxLength")
    cap = None if cap is None else _int_field(cap, "outputStreamsMaxLength", 0)
    jupyter = _bool_field(_get_ci(body, "returnJupyterFormatExecutionResult", "returnJupyterFormat"), "returnJupyterFormatExecutionResult")
    empty = _bool_field(_get_ci(body, "useEmptyKernel"), "useEmptyKernel")
    if not v.output_streams_cap:  # these options do not exist before 2025-10-02-preview
        cap, jupyter, empty = None, False, False
    elif cap is None:
        cap = DEFAULT_OUTPUT_STREAMS_MAX_LENGTH
    return ExecutionRequest(code, timeout, asynchronous, cap, jupyter, empty)


# --------------------------------------------------------------------------
# Execute: responses
# --------------------------------------------------------------------------


def render_execution(
    version: str | ApiVersion, ex: Execution, *, endpoint_path: str = ""
) -> tuple[int, ExecutionResource | LegacyExecution, dict[str, str]]:
    """Status code, JSON body and headers of an execute (or poll) response.

    ``endpoint_path`` is the path prefix of the pool (``""`` when routes sit
    at the root), used in ``Operation-Location``.
    """
    v = api_version(version)
    status = ex.status or ExecutionStatus.SUCCEEDED
    if not v.executions_api:
        # The pool's 2024-02 responses carry ``result``; the 2024-08 samples
        # ``executionResult``. Emit both (reference §4.2 inference).
        props = {
            "$id": "2",
            "status": "Success" if status is ExecutionStatus.SUCCEEDED else "Failure",
            "stdout": ex.stdout,
            "stderr": ex.stderr,
            "result": ex.result,
            "executionResult": ex.result,
            "executionTimeInMilliseconds": ex.duration_ms or 0,
        }
        return 200, {"$id": "1", "properties": props}, {}
    body: dict[str, Any] = {
        "id": ex.id,
        "identifier": ex.identifier,
        "sessionId": ex.identifier,
        "executionType": "Asynchronous" if ex.asynchronous else "Synchronous",
        "status": status.value,
    }
    if status.finished:
        body["result"] = {
            "stdout": ex.stdout,
            "stderr": ex.stderr,
            "executionResult": ex.result,
            "executionTimeInMilliseconds": ex.duration_ms or 0,
        }
    if ex.error is not None:
        body["error"] = {"error": ex.error.to_json()}
    location = f"{endpoint_path}/executions/{quote(ex.id or '', safe='')}?api-version={v.name}&identifier={quote(ex.identifier or '', safe='')}"
    headers = {"operation-id": ex.id or "", "Operation-Location": location}
    code = 202 if (ex.asynchronous and not status.finished) else v.execute_status
    return code, body, headers


def parse_execution(version: str | ApiVersion, body: Any) -> Execution:
    """Read an execute or poll response of ``version``; every field optional.

    Also reads the shapes of the other generation and the legacy top-level
    ``result``, since pools answer with whatever they answer.
    """
    if not isinstance(body, Mapping):
        raise ContractError(f"Expected a JSON object for an execution, got {type(body).__name__}.", code="MalformedResponse")
    props = body.get("properties")
    if isinstance(props, Mapping):  # code/execute generation
        result = props["result"] if "result" in props else props.get("executionResult")
        return Execution(
            status=ExecutionStatus.parse(props.get("status")),
            stdout=_str(props.get("stdout")),
            stderr=_str(props.get("stderr")),
            result=result,
            duration_ms=_opt_int(props.get("executionTimeInMilliseconds")),
            identifier=_opt_str(props.get("identifier")),
            error=parse_error(props.get("error")) if props.get("error") else None,
        )
    res = body.get("result")
    if isinstance(res, Mapping) and any(k in res for k in ("stdout", "stderr", "executionResult", "executionTimeInMilliseconds")):
        stdout, stderr = _str(res.get("stdout")), _str(res.get("stderr"))
        value, duration = res.get("executionResult"), _opt_int(res.get("executionTimeInMilliseconds"))
    else:  # legacy top-level shape
        stdout, stderr = _str(body.get("stdout")), _str(body.get("stderr"))
        value, duration = res, _opt_int(body.get("executionTimeInMilliseconds"))
    return Execution(
        status=ExecutionStatus.parse(body.get("status")),
        stdout=stdout,
        stderr=stderr,
        result=value,
        duration_ms=duration,
        id=_opt_str(body.get("id")),
        identifier=_opt_str(body.get("identifier") or body.get("sessionId")),
        asynchronous=str(body.get("executionType", "")).lower() == "asynchronous",
        error=parse_error(body.get("error")) if body.get("error") else None,
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def _legacy_file(f: RemoteFile, ids: list[int]) -> dict[str, Any]:
    ids[0] += 2
    return {
        "$id": str(ids[0] - 1),
        "properties": {
            "$id": str(ids[0]),
            "filename": f.path,
            "size": f.size or 0,
            "lastModifiedTime": format_time(f.last_modified) if f.last_modified else None,
        },
    }


def render_file(version: str | ApiVersion, f: RemoteFile) -> FileResource | LegacyFileList:
    """One file as the upload and metadata routes of ``version`` return it."""
    v = api_version(version)
    if not v.executions_api:
        ids = [1]
        return {"$id": "1", "value": [_legacy_file(f, ids)]}
    out: dict[str, Any] = {
        "name": f.name,
        "type": "directory" if f.is_directory else "File",
        "sizeInBytes": f.size if f.size is not None else 0,
        "lastModifiedAt": format_time(f.last_modified) if f.last_modified else None,
        "contentType": f.content_type or "application/octet-stream",
    }
    if v.output_streams_cap:
        out["directory"] = f.directory
    return out


def render_file_list(version: str | ApiVersion, files: Sequence[RemoteFile]) -> FileList | LegacyFileList:
    """The list route's body for ``version``."""
    v = api_version(version)
    if not v.executions_api:
        ids = [1]
        return {"$id": "1", "value": [_legacy_file(f, ids) for f in files]}
    return {"value": [render_file(v, f) for f in files], "nextLink": None}


def parse_file(obj: Any) -> RemoteFile:
    """Read one file object of any generation (flat, ``properties``, legacy snake case)."""
    if not isinstance(obj, Mapping):
        raise ContractError(f"Expected a JSON object for a file, got {type(obj).__name__}.", code="MalformedResponse")
    if isinstance(obj.get("value"), list) and obj["value"]:
        obj = obj["value"][0]  # 2024-02 upload / 2024-08 metadata wrap one file in a list
    if isinstance(obj.get("properties"), Mapping):
        obj = obj["properties"]
    name = obj.get("name") if isinstance(obj.get("name"), str) else obj.get("filename")
    if not isinstance(name, str):
        raise ContractError("A file object has neither 'name' nor 'filename'.", code="MalformedResponse")
    directory = obj.get("directory") if isinstance(obj.get("directory"), str) else ""
    if name.startswith(DATA_DIR + "/"):
        name = name[len(DATA_DIR) + 1 :]  # SK and LlamaIndex upload absolute names
    if "/" in name and not directory:
        directory, _, name = name.rpartition("/")
    size = obj.get("sizeInBytes", obj.get("size"))
    modified = obj.get("lastModifiedAt", obj.get("lastModifiedTime", obj.get("last_modified_time")))
    ftype = str(obj.get("type") or "file").lower()
    return RemoteFile(
        name=name,
        size=_opt_int(size),
        last_modified=parse_time(modified),
        content_type=_opt_str(obj.get("contentType", obj.get("mime_type"))),
        is_directory=ftype == "directory",
        directory=directory.strip("/"),
    )


def parse_file_list(body: Any) -> list[RemoteFile]:
    """Read a list response: ``value`` (any generation), legacy ``$values`` or a bare array."""
    if isinstance(body, list):
        items = body
    elif isinstance(body, Mapping):
        items = body.get("value", body.get("$values"))
        if not isinstance(items, list):
            raise ContractError("A file list has no 'value' array.", code="MalformedResponse")
    else:
        raise ContractError(f"Expected a file list, got {type(body).__name__}.", code="MalformedResponse")
    return [parse_file(x) for x in items]


# --------------------------------------------------------------------------
# Sessions and metadata (2025-02-02-preview and later)
# --------------------------------------------------------------------------


def render_session(s: Session, *, view: bool = False) -> SessionResource | SessionView:
    """``Session`` of the spec (``expireAt``), or the docs' ``SessionView``
    (``expiresAt``) of the ``.management`` routes when ``view``."""
    out: dict[str, Any] = {
        "identifier": s.identifier,
        "createdAt": format_time(s.created_at) if s.created_at else None,
        "lastAccessedAt": format_time(s.last_accessed_at) if s.last_accessed_at else None,
        ("expiresAt" if view else "expireAt"): format_time(s.expires_at) if s.expires_at else None,
        "etag": s.etag,
    }
    return out


def render_session_list(sessions: Sequence[Session], *, view: bool = False) -> SessionList | SessionViewList:
    """``{"sessions": [...]}`` for ``GET listSessions``; ``{"value", "count"}`` for the management route."""
    items = [render_session(s, view=view) for s in sessions]
    if view:
        return {"value": items, "count": len(items), "nextLink": None}
    return {"sessions": items, "nextLink": None}


def parse_session(obj: Any) -> Session:
    if not isinstance(obj, Mapping):
        raise ContractError(f"Expected a JSON object for a session, got {type(obj).__name__}.", code="MalformedResponse")
    return Session(
        identifier=_opt_str(obj.get("identifier")),
        created_at=parse_time(obj.get("createdAt")),
        last_accessed_at=parse_time(obj.get("lastAccessedAt")),
        expires_at=parse_time(obj.get("expireAt", obj.get("expiresAt"))),
        etag=_opt_str(obj.get("etag")),
    )


def parse_session_list(body: Any) -> list[Session]:
    if isinstance(body, Mapping):
        items = body.get("sessions", body.get("value"))
    else:
        items = body
    if not isinstance(items, list):
        raise ContractError("A session list has neither 'sessions' nor 'value'.", code="MalformedResponse")
    return [parse_session(x) for x in items]


def render_metadata(m: PoolMetadata) -> Metadata:
    out: dict[str, Any] = {
        "runtimes": [{"name": n, "version": ver} for n, ver in m.runtimes],
        "preInstalledPackages": [{"name": n, "version": ver} for n, ver in m.packages],
        "createdAt": format_time(m.created_at) if m.created_at else None,
        "lastUpdatedAt": format_time(m.last_updated_at) if m.last_updated_at else None,
        "jupyterKernel": dict(m.jupyter_kernel) if m.jupyter_kernel else None,
    }
    if m.extensions is not None:
        out["localPool"] = dict(m.extensions)
    return out


def parse_metadata(body: Any) -> PoolMetadata:
    if not isinstance(body, Mapping):
        raise ContractError(f"Expected a JSON object for metadata, got {type(body).__name__}.", code="MalformedResponse")

    def pairs(items: Any) -> tuple[tuple[str, str], ...]:
        return tuple(
            (str(x.get("name")), str(x.get("version", "")))
            for x in items or ()
            if isinstance(x, Mapping) and x.get("name") is not None
        )

    kernel = body.get("jupyterKernel")
    ext = body.get("localPool")
    return PoolMetadata(
        runtimes=pairs(body.get("runtimes")),
        packages=pairs(body.get("preInstalledPackages")),
        created_at=parse_time(body.get("createdAt")),
        last_updated_at=parse_time(body.get("lastUpdatedAt")),
        jupyter_kernel=kernel if isinstance(kernel, Mapping) else None,
        extensions=ext if isinstance(ext, Mapping) else None,
    )


# --------------------------------------------------------------------------
# Local-pool extensions (additive; absent on Azure and in Azure-strict mode)
# --------------------------------------------------------------------------
#
# ``POST .local/executions/stream?api-version=&identifier=``
#     Body: an execute body of the api-version. Response: ``application/x-ndjson``,
#     one JSON object per line, in the order the code produced them:
#       {"type": "iopub", "msg_type": "stream"|"display_data"|"update_display_data"
#                         |"clear_output"|"execute_result"|"error", "content": {...}}
#       {"type": "done", "status": "ok"|"error"|"aborted"|"timeout",
#        "execution": <the execution resource of the api-version>,
#        "etag": <the session's etag>, "reply": {...} (with "jupyter" only)}
#       {"type": "stdin", "msg_type": "input_request", "content": {"prompt", "password"}}
#         (extension ``stdin``: a cell with ``jupyter.allowStdin`` called input();
#         answer with ``POST .local/executions/input``)
#       {"type": "keepalive"} every STREAM_KEEPALIVE seconds of silence of a cell stream
#     ``content`` is the Jupyter message content, unchanged.
#     Extension ``jupyter-cells``: a ``"jupyter"`` member in the body (see
#     :class:`JupyterCell`) runs the code as a notebook cell: the session's
#     execution count, ``silent``, ``store_history`` and ``user_expressions``
#     are the cell's, and the done line carries the session kernel's
#     ``execute_reply`` fields as ``"reply"`` (see :func:`parse_cell_reply`).
#     An ``If-Match: "<etag>"`` header runs the code only in that session: when
#     the identifier has no session, or a newer one, the answer is 404
#     ``SessionWithIdentifierNotFound`` and nothing runs.
# ``POST .local/comm?identifier=`` ``{"msgId", "msgType", "content", "metadata", "buffers"}`` (``comms``)
#     A frontend's ``comm_open``/``comm_msg``/``comm_close``/``comm_info_request``
#     to the session kernel, sent with the frontend's msg_id; answers
#     ``{"outputs": [...], "reply": {...}|null}``: what the kernel published
#     under that message (comm messages, streams, displays) until it was idle.
# ``POST .local/events?identifier=`` ``{"after": N, "wait": seconds}`` (``comms``)
#     What the session published outside its cells (a thread, a widget
#     callback), numbered; waits up to ``wait`` s (at most 10) for some.
#     Answers ``{"events": [{"seq", "msgType", "content", "metadata",
#     "buffers", "parentMsgId"}], "next": N}``; events up to ``after`` are dropped.
# ``POST .local/executions/input?identifier=`` ``{"value": "..."}``
#     The answer to the running cell's pending ``input_request``; 204, 409 when
#     no cell of the session waits for input.
# ``POST .local/executions/interrupt?identifier=``
#     Interrupts the session's running execution (KeyboardInterrupt; state kept).
#     204, or 404 when the session does not exist.
# ``POST .local/complete?identifier=`` ``{"code", "cursor_pos"}`` -> complete_reply content.
# ``POST .local/inspect?identifier=`` ``{"code", "cursor_pos", "detail_level"}`` -> inspect_reply content.
# ``GET metadata`` carries ``"localPool": {"extensions": [...], "isolation": {...}}``.

#: Seconds of silence after which a cell stream sends a keepalive line, so that
#: a client can keep a read timeout on streams of cells that run for hours.
STREAM_KEEPALIVE = 10.0
#: Largest ``input()`` answer the input extension takes.
MAX_INPUT_BYTES = 1 << 20
#: Longest a ``.local/events`` call may wait for an event, in seconds.
MAX_EVENTS_WAIT = 10


def input_fits(value: str) -> bool:
    """Whether an ``input()`` answer is within :data:`MAX_INPUT_BYTES` (checked by the client before sending, and by the pool)."""
    return len(value.encode("utf-8", "surrogatepass")) <= MAX_INPUT_BYTES


def parse_input_body(body: Any) -> str:
    """A ``.local/executions/input`` body's answer, checked (400 ``SessionRequestValidationFailed`` otherwise)."""
    value = body.get("value") if isinstance(body, Mapping) else None
    if not isinstance(value, str) or not input_fits(value):
        raise ContractError(
            f"The body must be a JSON object with a string 'value' of at most {MAX_INPUT_BYTES} bytes.",
            code="SessionRequestValidationFailed",
        )
    return value


def events_args_valid(after: Any, wait: Any) -> bool:
    """Whether ``after`` is an event number and ``wait`` 0 to :data:`MAX_EVENTS_WAIT` s (checked by the client and the pool)."""
    return (not isinstance(after, bool) and isinstance(after, int) and after >= 0
            and not isinstance(wait, bool) and isinstance(wait, (int, float)) and 0 <= wait <= MAX_EVENTS_WAIT)


def parse_events_body(body: Any) -> tuple[int, float]:
    """A ``.local/events`` body as ``(after, wait)``, checked (400 ``SessionRequestValidationFailed`` otherwise)."""
    after, wait = (body.get("after", 0), body.get("wait", 0)) if isinstance(body, Mapping) else (None, None)
    if not events_args_valid(after, wait):
        raise ContractError(f'The body must be {{"after": <event number >= 0>, "wait": <0 to {MAX_EVENTS_WAIT} seconds>}}.',
                            code="SessionRequestValidationFailed")
    return after, float(wait)

#: The iopub message types the stream extension forwards.
STREAM_MSG_TYPES = frozenset({"stream", "display_data", "update_display_data", "clear_output", "execute_result", "error"})
#: Comm (widget) messages, which the ``comms`` extension relays too, with their
#: ``metadata`` and binary ``buffers`` (base64 in JSON).
COMM_MSG_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})


class JupyterCellBody(TypedDict, total=False):
    """The ``"jupyter"`` member of a stream request (see :class:`JupyterCell`)."""

    executionCount: Annotated[int | None, Doc(minimum=0)]
    silent: bool
    storeHistory: bool
    userExpressions: dict[str, str]
    allowStdin: Annotated[bool, Doc(description="input() becomes a stdin line of the stream (extension 'stdin').")]
    timeout: Annotated[float, Doc(minimum=0, description="The cell's own timeout in seconds, not capped at 220; 0: none.")]
    msgId: Annotated[str, Doc(description="The notebook's execute_request msg_id; the session kernel runs the cell under it.")]


class StreamBody(ExecuteBody):
    """``POST .local/executions/stream``: an execute body, optionally a notebook cell."""

    jupyter: NotRequired[JupyterCellBody]


class IntrospectBody(TypedDict):
    """``POST .local/complete`` and ``POST .local/inspect``."""

    code: str
    cursor_pos: NotRequired[Annotated[int, Doc(minimum=0, description="Defaults to the end of the code.")]]
    detail_level: NotRequired[Literal[0, 1]]


class StreamIopubLine(TypedDict):
    """One output of the running code, as the session's kernel published it."""

    type: Literal["iopub"]
    msg_type: Literal["stream", "display_data", "update_display_data", "clear_output", "execute_result", "error", "comm_open", "comm_msg", "comm_close"]
    content: dict[str, Any]
    metadata: NotRequired[dict[str, Any]]
    buffers: NotRequired[list[str]]


class StreamStdinLine(TypedDict):
    """The running cell called ``input()`` (extension ``stdin``): answer with ``POST .local/executions/input``."""

    type: Literal["stdin"]
    msg_type: Literal["input_request"]
    content: dict[str, Any]


class StreamKeepaliveLine(TypedDict):
    """Sent every ``STREAM_KEEPALIVE`` seconds of silence of a cell stream."""

    type: Literal["keepalive"]


class InputBody(TypedDict):
    """``POST .local/executions/input``: the answer to the running cell's ``input()``."""

    value: str


class CommBody(TypedDict):
    """``POST .local/comm``: a frontend's comm message for the session kernel (see :class:`CommMessage`)."""

    msgId: str
    msgType: Literal["comm_open", "comm_msg", "comm_close", "comm_info_request"]
    content: dict[str, Any]
    metadata: NotRequired[dict[str, Any]]
    buffers: NotRequired[list[str]]


class SessionEvent(TypedDict):
    """An output the session kernel published (buffers base64)."""

    msgType: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: list[str]
    parentMsgId: str | None
    seq: NotRequired[int]


class CommAnswer(TypedDict):
    """What the session kernel published under a frontend's comm message, and a comm_info_reply content."""

    outputs: list[SessionEvent]
    reply: dict[str, Any] | None


class EventsBody(TypedDict):
    """``POST .local/events``."""

    after: NotRequired[Annotated[int, Doc(minimum=0, description="The last event the caller has; those up to it are dropped.")]]
    wait: NotRequired[Annotated[float, Doc(minimum=0, maximum=MAX_EVENTS_WAIT, description="Seconds to wait for an event when there is none.")]]


class EventsAnswer(TypedDict):
    """What the session published outside its cells, numbered."""

    events: list[SessionEvent]
    next: int


class StreamDoneLine(TypedDict):
    """The last line of a stream: the execution's outcome."""

    type: Literal["done"]
    status: Literal["ok", "error", "aborted", "timeout"]
    execution: NotRequired[ExecutionResource | LegacyExecution]
    etag: NotRequired[str | None]
    reply: NotRequired[dict[str, Any]]
    error: NotRequired[ErrorObject]


#: One line of ``application/x-ndjson`` from the stream extension.
StreamLine = StreamIopubLine | StreamStdinLine | StreamKeepaliveLine | StreamDoneLine


@dataclasses.dataclass(frozen=True)
class JupyterCell:
    """The ``"jupyter"`` member of a stream request: run the code as this notebook cell.

    ``execution_count`` is the notebook's number for the cell (tracebacks say
    ``Cell In[n]``, ``Out[n]`` is set); ``None`` keeps the session's own count.
    ``timeout`` replaces the request's ``timeoutInSeconds`` and is not capped
    at Azure's 220 s (this route is not Azure's): seconds, ``0`` for no limit,
    ``None`` to keep ``timeoutInSeconds``. The other fields mean what they
    mean in a Jupyter ``execute_request`` (``allow_stdin`` needs the ``stdin``
    extension).
    """

    execution_count: int | None = None
    silent: bool = False
    store_history: bool = True
    user_expressions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    allow_stdin: bool = False
    timeout: float | None = None
    #: The notebook's execute_request msg_id: the session kernel runs the cell
    #: under it, so what it publishes later (a widget, a thread) names that cell.
    msg_id: str | None = None


def render_jupyter_cell(cell: JupyterCell) -> JupyterCellBody:
    """The ``"jupyter"`` member a client adds to a stream request body."""
    return {
        "executionCount": cell.execution_count,
        "silent": cell.silent,
        "storeHistory": cell.store_history,
        "userExpressions": dict(cell.user_expressions),
        **({"allowStdin": True} if cell.allow_stdin else {}),
        **({} if cell.timeout is None else {"timeout": cell.timeout}),
        **({} if cell.msg_id is None else {"msgId": cell.msg_id}),
    }


def parse_jupyter_cell(body: Any) -> JupyterCell | None:
    """The ``"jupyter"`` member of a stream request body, or ``None`` when it has none."""
    raw = _get_ci(body, "jupyter") if isinstance(body, Mapping) else None
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ContractError("'jupyter' must be a JSON object.", code="SessionRequestValidationFailed")
    count = _get_ci(raw, "executionCount")
    exprs = _get_ci(raw, "userExpressions") or {}
    if not isinstance(exprs, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in exprs.items()):
        raise ContractError("'jupyter.userExpressions' must map names to expression strings.", code="SessionRequestValidationFailed")
    store = _get_ci(raw, "storeHistory")
    timeout = _get_ci(raw, "timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < 1e9):
        raise ContractError("'jupyter.timeout' must be a number of seconds (0: no limit).", code="SessionRequestValidationFailed")
    try:
        return JupyterCell(
            execution_count=None if count is None else _int_field(count, "jupyter.executionCount", 0),
            silent=_bool_field(_get_ci(raw, "silent"), "jupyter.silent"),
            store_history=True if store is None else _bool_field(store, "jupyter.storeHistory"),
            user_expressions=dict(exprs),
            allow_stdin=_bool_field(_get_ci(raw, "allowStdin"), "jupyter.allowStdin"),
            timeout=None if timeout is None else float(timeout),
            msg_id=_msg_id(_get_ci(raw, "msgId")),
        )
    except ContractError as exc:
        raise ContractError(exc.message, code="SessionRequestValidationFailed") from None


def _msg_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise ContractError("'msgId' must be a printable string of 1 to 256 characters.", code="SessionRequestValidationFailed")
    return value


@dataclasses.dataclass(frozen=True)
class CommMessage:
    """A frontend's comm message for the session kernel (the ``comms`` extension)."""

    msg_id: str
    msg_type: str
    content: Mapping[str, Any]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    buffers: tuple[bytes, ...] = ()


#: Comm messages a frontend may send (``comm_info_request`` is answered with a reply).
FRONTEND_COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close", "comm_info_request"})


def render_comm_message(msg: CommMessage) -> dict[str, Any]:
    return {
        "msgId": msg.msg_id, "msgType": msg.msg_type, "content": dict(msg.content), "metadata": dict(msg.metadata),
        "buffers": [base64.b64encode(b).decode("ascii") for b in msg.buffers],
    }  # fmt: skip


def parse_comm_message(body: Any) -> CommMessage:
    """A ``.local/comm`` body, checked (400 ``SessionRequestValidationFailed`` otherwise)."""
    def bad(why: str) -> ContractError:
        return ContractError(f"Invalid comm message: {why}.", code="SessionRequestValidationFailed")

    if not isinstance(body, Mapping):
        raise bad("the body must be a JSON object")
    msg_type = body.get("msgType")
    if not isinstance(msg_type, str) or msg_type not in FRONTEND_COMM_TYPES:
        raise bad(f"'msgType' must be one of {', '.join(sorted(FRONTEND_COMM_TYPES))}")
    content, metadata, buffers = body.get("content"), body.get("metadata") or {}, body.get("buffers") or []
    if not isinstance(content, Mapping) or not isinstance(metadata, Mapping) or not isinstance(buffers, list):
        raise bad("'content' and 'metadata' must be objects and 'buffers' a list")
    if msg_type != "comm_info_request" and not isinstance(content.get("comm_id"), str):
        raise bad("'content.comm_id' must be a string")
    try:
        raw = tuple(base64.b64decode(b, validate=True) for b in buffers)
    except (TypeError, ValueError, binascii.Error):
        raise bad("'buffers' must be base64 strings") from None
    msg_id = _msg_id(body.get("msgId"))
    if msg_id is None:
        raise bad("'msgId' is required")
    return CommMessage(msg_id, msg_type, dict(content), dict(metadata), raw)


#: The ``execute_reply`` fields a ``jupyter-cells`` done line carries as ``"reply"``.
CELL_REPLY_FIELDS = ("status", "execution_count", "ename", "evalue", "traceback", "payload", "user_expressions")


def render_cell_reply(content: Mapping[str, Any]) -> dict[str, Any]:
    """The ``"reply"`` of a done line, from the session kernel's ``execute_reply`` content."""
    return {k: content[k] for k in CELL_REPLY_FIELDS if k in content}


def parse_cell_reply(obj: Any) -> dict[str, Any]:
    """A done line's ``"reply"``, checked: ``status`` is a string; lists and maps are what Jupyter says."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("status"), str):
        raise ContractError("'reply' must be an object with a string 'status'.")
    for name, kind in (("traceback", list), ("payload", list), ("user_expressions", Mapping)):
        if name in obj and not isinstance(obj[name], kind):
            raise ContractError(f"'reply.{name}' must be a {'list' if kind is list else 'JSON object'}.")
    return {k: obj[k] for k in CELL_REPLY_FIELDS if k in obj}
