"""Requests and responses shared by :class:`SessionsClient` and :class:`AsyncSessionsClient`.

Every operation is written once, here, as a generator that yields *steps*
and receives their outcome::

    response = yield Send(request)    # the driver sends it; an httpx error is thrown back in
    yield Sleep(seconds)              # the driver sleeps

The sync client drives these generators with ``httpx.Client`` and
``time.sleep``, the async client with ``httpx.AsyncClient`` and
``asyncio.sleep`` (``_sync.py``, ``_async.py``). Building requests on
:mod:`azure_sessions_kernel.wire`, retrying, mapping errors and parsing
responses are therefore the same code for both.

Retry rules (see also :class:`RetryPolicy`): a request that runs code
(``execute``, ``start_execution``, ``execute_stream``) or interrupts it is
re-sent only after a connect error, when it cannot have reached the pool;
a 429/503 on it is raised (with ``retry_after``), since nothing proves the
code did not start. Reads, deletes, completions and rewindable uploads are
re-sent after any transport error and on 429/502/503/504.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx

from .. import __version__, wire
from ._auth import BearerAuth, make_auth
from ._config import RetryPolicy, Timeouts, execution_seconds, parse_retry_after
from ._exceptions import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    ConnectError,
    ExecutionTimeoutError,
    ExtensionUnavailableError,
    PoolFullError,
    RequestTimeout,
    ResponseFormatError,
    SessionsError,
    TransportError,
    UnsupportedOperationError,
    error_class,
    scrub,
)
from ._streams import NdjsonDecoder, ProgressCallback, UploadBody, UploadData

logger = logging.getLogger("azure_sessions_kernel.client")

T = TypeVar("T")

#: Pages followed at most when a list has a ``nextLink``.
MAX_PAGES = 100


# --------------------------------------------------------------------------
# Steps and calls
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Send:
    """Send ``request``; with ``stream`` a successful response is left unread."""

    request: httpx.Request
    stream: bool = False


@dataclasses.dataclass
class Sleep:
    seconds: float


Step = Send | Sleep
Operation = Generator[Step, Any, T]


class Replay(enum.Enum):
    """When a request may be sent again."""

    #: Idempotent: after any transport error or retryable status.
    ANY = "any"
    #: Runs or stops code: only after a connect error (nothing reached the pool).
    CONNECT_ONLY = "connect-only"


@dataclasses.dataclass
class Call:
    """Everything needed to (re)build one request and judge its response."""

    method: str
    #: Percent-encoded route relative to the endpoint (from :class:`wire.Routes`).
    route: str
    identifier: str | None = None
    query: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    json: Any = None
    body: UploadBody | None = None
    timeout: Mapping[str, float] | None = None
    replay: Replay = Replay.ANY
    runs_code: bool = False
    #: A local-pool ``.local/`` route: a 404 means the pool lacks it.
    extension: bool = False
    stream: bool = False
    #: Extra request headers (``If-Match``).
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: A ``nextLink`` to follow instead of ``route``/``query``.
    url: httpx.URL | None = None

    @property
    def label(self) -> str:
        """For logs and messages: method and route, never the identifier."""
        return f"{self.method} {self.route}"

    @property
    def resendable(self) -> bool:
        return self.body is None or self.body.rewindable or not self.body.started


# --------------------------------------------------------------------------
# Endpoint
# --------------------------------------------------------------------------


def parse_endpoint(endpoint: str | httpx.URL) -> httpx.URL:
    """Validate a pool management endpoint; its path prefix is kept, a trailing slash dropped."""
    text = str(endpoint).strip()
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"Invalid endpoint URL: {exc}.") from None
    if url.scheme not in ("http", "https"):
        raise ConfigurationError(f"The endpoint must be an http:// or https:// URL, got scheme {url.scheme!r}.")
    if not url.host:
        raise ConfigurationError("The endpoint URL has no host.")
    if "?" in text or "#" in text:
        raise ConfigurationError(
            "The endpoint must not contain a query string or fragment: the client adds api-version and "
            "identifier itself (use the pool's poolManagementEndpoint as is)."
        )
    if url.userinfo:
        raise ConfigurationError("The endpoint must not embed credentials (user:password@); pass token or credential instead.")
    path = url.raw_path.rstrip(b"/")
    for suffix in (b"/code/execute", b"/executions", b"/python/execute"):
        if path.endswith(suffix):
            raise ConfigurationError(
                f"The endpoint ends with the operation path {suffix.decode()!r}; pass the pool management "
                "endpoint without it."
            )
    return url.copy_with(raw_path=path)


def is_loopback(url: httpx.URL) -> bool:
    """``url`` names this machine by a loopback address (or ``localhost``)."""
    host = url.host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _encode_query(params: Mapping[str, str]) -> bytes:
    # Fully encoded (safe=""), so '&', '/' or '#' in an identifier stay inside its value.
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items()).encode("ascii")


# --------------------------------------------------------------------------
# The shared client
# --------------------------------------------------------------------------


class ClientBase(abc.ABC):
    """State and operations common to both clients.

    Subclasses name their ``httpx`` client class and sleep function, and
    drive the ``_op_*`` generators (see the module docstring).
    """

    _http_class: type[httpx.Client] | type[httpx.AsyncClient]
    _http: Any  # an instance of _http_class

    def __init__(
        self,
        endpoint: str | httpx.URL,
        *,
        credential: Any | None = None,
        token: str | None = None,
        api_version: str = wire.DEFAULT_API_VERSION,
        timeout: Timeouts = Timeouts(),
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._endpoint = parse_endpoint(endpoint)
        try:
            self._version = wire.api_version(api_version)
        except wire.ContractError as exc:
            raise ConfigurationError(exc.message) from None
        if not isinstance(timeout, Timeouts) or not isinstance(retry, RetryPolicy):
            raise ConfigurationError("timeout must be a Timeouts and retry a RetryPolicy.")
        self._routes = wire.Routes(self._version)
        self._timeouts = timeout
        self._retry = retry
        self._auth: BearerAuth = make_auth(token, credential)
        #: Monotonic clock of execution deadlines (replaceable in tests).
        self._clock: Callable[[], float] = time.monotonic
        merged = {"User-Agent": f"azure-sessions-kernel/{__version__} python-httpx/{httpx.__version__}"}
        merged.update(headers or {})
        if transport is None:
            transport = self._default_transport()
        # Redirects stay off: following one could carry the token to another host.
        self._http = self._http_class(
            auth=self._auth, transport=transport, headers=merged, timeout=httpx.Timeout(**timeout.http()), follow_redirects=False
        )

    def _default_transport(self) -> Any:
        """The transport when the caller gives none; ``None`` means httpx's default."""
        return None

    @property
    def endpoint(self) -> str:
        return str(self._endpoint)

    @property
    def loopback(self) -> bool:
        """The pool is on this machine: the endpoint's host is a loopback address or ``localhost``."""
        return is_loopback(self._endpoint)

    @property
    def api_version(self) -> str:
        return self._version.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, api_version={self.api_version!r}, auth={self._auth.describe()!r})"

    # -- checks before sending ----------------------------------------------------

    def _require(self, available: bool, operation: str, since: str) -> None:
        if not available:
            raise UnsupportedOperationError(
                f"{operation} needs api-version {since} or later; this client uses {self._version.name}."
            )

    def _identifier(self, identifier: str) -> str:
        # Identifiers are secrets (reference §7): the message does not echo them.
        if not isinstance(identifier, str):
            raise ConfigurationError(f"A session identifier must be a str, got {type(identifier).__name__}.")
        try:
            return wire.validate_identifier(self._version, identifier)
        except wire.ContractError:
            raise ConfigurationError(
                f"Invalid session identifier for api-version {self._version.name}: it must match "
                f"{self._version.identifier_pattern.pattern}."
            ) from None

    def _file_target(self, name: str, path: str | None) -> tuple[str, str]:
        """Folder (relative to /mnt/data, ``""`` for the root) and bare name.

        A name may carry folders (``out/plot.png``, ``/mnt/data/out/plot.png``,
        e.g. a :attr:`RemoteFile.path` of a recursive listing); they are
        moved into the folder, as the Azure CLI does (reference §5.3).
        """
        try:
            folder, base = wire.split_upload_name(name, path)
        except wire.ContractError as exc:
            raise ConfigurationError(exc.message) from None
        return "/".join(folder), base

    @staticmethod
    def _folder(path: str | None) -> str:
        try:
            return "/".join(wire.split_subpath(path))
        except wire.ContractError as exc:
            raise ConfigurationError(exc.message) from None

    def _execution_seconds(self, timeout: float | None) -> int:
        return execution_seconds(self._timeouts.execution if timeout is None else timeout)

    # -- requests -------------------------------------------------------------------

    def _url(self, call: Call) -> httpx.URL:
        """Endpoint path + ``/`` + route + query; the route is already percent-encoded."""
        if call.url is not None:
            return call.url
        query = _encode_query(self._routes.query(call.identifier, **call.query))
        path = self._endpoint.raw_path.rstrip(b"/") + b"/" + call.route.encode("ascii")
        return self._endpoint.copy_with(raw_path=path + b"?" + query)

    def _build(self, call: Call) -> httpx.Request:
        url = self._url(call)
        headers = {"x-ms-client-request-id": str(uuid.uuid4()), **call.headers}
        content: Any = None
        if call.body is not None:
            headers.update(call.body.headers)
            content = self._stream_content(call.body.chunks())
        timeout = httpx.Timeout(**(call.timeout or self._timeouts.http()))
        return self._http.build_request(call.method, url, json=call.json, content=content, headers=headers, timeout=timeout)

    @abc.abstractmethod
    def _stream_content(self, chunks: Iterable[bytes]) -> Any:
        """An upload body as the ``httpx`` client of the subclass wants it."""

    def _exchange(self, call: Call) -> Operation[httpx.Response]:
        """Send ``call`` with retries; return a successful response or raise the mapped error."""
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            request = self._build(call)
            started = time.monotonic()
            try:
                response = yield Send(request, call.stream)
            except httpx.RequestError as exc:
                self._log(call, started, attempt, type(exc).__name__)
                delay = self._transport_retry_delay(exc, call, attempt)
                if delay is None:
                    raise self._transport_error(exc, call) from exc
                logger.info("%s: %s, retrying in %.1f s (attempt %d)", call.label, type(exc).__name__, delay, attempt)
                yield Sleep(delay)
                self._rewind(call)
                continue
            self._log(call, started, attempt, response.status_code)
            if response.is_success:
                return response
            if response.status_code == 401 and self._auth.refreshable and not refreshed and call.resendable:
                # A token can be revoked or expire early; one fresh token is worth a try.
                refreshed = True
                self._auth.invalidate()
                self._rewind(call)
                continue
            retry_after = parse_retry_after(response.headers)
            delay = None
            if response.status_code in self._retry.statuses and call.replay is Replay.ANY and call.resendable:
                delay = self._retry.delay(attempt, retry_after)
            if delay is None:
                raise self._api_error(response, call, retry_after)
            logger.info("%s: HTTP %d, retrying in %.1f s (attempt %d)", call.label, response.status_code, delay, attempt)
            yield Sleep(delay)
            self._rewind(call)

    def _transport_retry_delay(self, exc: httpx.RequestError, call: Call, attempt: int) -> float | None:
        if not isinstance(exc, httpx.TransportError) or not call.resendable:
            return None
        nothing_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        if not nothing_sent and call.replay is not Replay.ANY:
            return None
        return self._retry.delay(attempt)

    @staticmethod
    def _rewind(call: Call) -> None:
        if call.body is not None:
            call.body.rewind()

    @staticmethod
    def _log(call: Call, started: float, attempt: int, outcome: object) -> None:
        logger.debug("%s -> %s in %.0f ms (attempt %d)", call.label, outcome, (time.monotonic() - started) * 1000, attempt)

    # -- errors -----------------------------------------------------------------------

    def _transport_error(self, exc: httpx.RequestError, call: Call) -> SessionsError:
        """Our exception for an ``httpx`` one; its text never includes headers."""
        detail = scrub(str(exc)) or type(exc).__name__
        if call.runs_code and isinstance(exc, httpx.ReadTimeout):
            waited = (call.timeout or {}).get("read")
            return ExecutionTimeoutError(
                f"{call.label}: no answer within {waited:g} s (the execution deadline plus a "
                f"{self._timeouts.margin:g} s margin); the code may still be running in the session."
            )
        if isinstance(exc, httpx.ConnectError):
            return ConnectError(f"{call.label}: could not connect to {self._endpoint.host}: {detail}.")
        if isinstance(exc, httpx.TimeoutException):
            return RequestTimeout(f"{call.label}: {type(exc).__name__} talking to {self._endpoint.host}: {detail}.")
        return TransportError(f"{call.label}: {type(exc).__name__} talking to {self._endpoint.host}: {detail}.")

    def _api_error(self, response: httpx.Response, call: Call, retry_after: float | None) -> ApiError:
        """Map an error response to the exception tree (reference §8)."""
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        info = wire.parse_error(body)
        code = (info.code if info else "") or response.headers.get(wire.ERROR_CODE_HEADER, "")
        message = scrub(info.message if info and info.message else response.reason_phrase).rstrip(". ")
        status = response.status_code
        cls = error_class(status, code, message, extension=call.extension)
        text = f"{call.label} failed with HTTP {status}{f' ({code})' if code else ''}: {message}."
        text += _hint(cls, self._endpoint)
        request_id = (
            response.headers.get("x-ms-request-id")
            or response.headers.get("operation-id")
            or (body.get("traceId") if isinstance(body, Mapping) and isinstance(body.get("traceId"), str) else None)
            or response.request.headers.get("x-ms-client-request-id")
        )
        return cls(text, status_code=status, code=code, server_message=message, request_id=request_id, retry_after=retry_after)

    # -- responses ----------------------------------------------------------------------

    def _json(self, response: httpx.Response, call: Call) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise ResponseFormatError(f"{call.label}: expected a JSON body, got {len(response.content)} bytes of {kind}.") from None

    def _parse(self, response: httpx.Response, call: Call, parser: Callable[[Any], T]) -> T:
        return self._convert(self._json(response, call), call, parser)

    @staticmethod
    def _convert(body: Any, call: Call, parser: Callable[[Any], T]) -> T:
        try:
            return parser(body)
        except wire.ContractError as exc:
            raise ResponseFormatError(f"{call.label}: {exc.message}") from None

    def _parse_execution(self, response: httpx.Response, call: Call) -> wire.Execution:
        return self._parse(response, call, lambda body: wire.parse_execution(self._version, body))

    def _paged(self, call: Call, parser: Callable[[Any], list[T]]) -> Operation[list[T]]:
        """All items of a list route, following same-origin ``nextLink`` s."""
        items: list[T] = []
        for _ in range(MAX_PAGES):
            response = yield from self._exchange(call)
            body = self._json(response, call)
            items += self._convert(body, call, parser)
            next_link = body.get("nextLink") if isinstance(body, Mapping) else None
            if not next_link:
                return items
            call = dataclasses.replace(call, url=self._same_origin(next_link, call))
        raise ResponseFormatError(f"{call.label}: more than {MAX_PAGES} pages of results.")

    def _same_origin(self, link: Any, call: Call) -> httpx.URL:
        # The token goes wherever the request goes: never follow a link off the pool.
        try:
            url = self._endpoint.join(link) if isinstance(link, str) else None
        except httpx.InvalidURL:
            url = None
        if url is None or (url.scheme, url.host, url.port) != (self._endpoint.scheme, self._endpoint.host, self._endpoint.port):
            raise ResponseFormatError(f"{call.label}: the response's nextLink does not point at the pool endpoint.")
        return url

    # ==================================================================================
    # Operations (generators driven by the subclasses)
    # ==================================================================================

    def _execution_call(
        self, route: str, identifier: str, code: str, seconds: int, *, asynchronous: bool = False, resend: bool = False, **kw: Any
    ) -> Call:
        if not isinstance(code, str):
            raise ConfigurationError(f"code must be a str, got {type(code).__name__}.")
        body = wire.render_execute_request(self._version, wire.ExecutionRequest(code, seconds, asynchronous=asynchronous))
        return Call(
            "POST", route, self._identifier(identifier), json=body, timeout=self._timeouts.for_execution(seconds),
            replay=Replay.ANY if resend else Replay.CONNECT_ONLY, runs_code=True, **kw,
        )  # fmt: skip

    def _op_execute(self, identifier: str, code: str, timeout: float | None, resend: bool = False) -> Operation[wire.Execution]:
        seconds = self._execution_seconds(timeout)
        call = self._execution_call(self._routes.execute, identifier, code, seconds, resend=bool(resend))
        started = self._clock()
        execution = self._parse_execution((yield from self._exchange(call)), call)
        if execution.status is not None and not execution.status.finished and execution.id and self._version.executions_api:
            # The specs mark POST executions as a long-running operation; a
            # pool may answer before the code has finished.
            left = seconds + self._timeouts.margin - (self._clock() - started)
            execution = yield from self._op_wait_execution(identifier, execution.id, 1.0, max(left, 0.0))
        return execution

    def _op_start_execution(self, identifier: str, code: str, timeout: float | None) -> Operation[wire.Execution]:
        self._require(self._version.executions_api, "Asynchronous execution", "2024-10-02-preview")
        call = self._execution_call(self._routes.execute, identifier, code, self._execution_seconds(timeout), asynchronous=True)
        return self._parse_execution((yield from self._exchange(call)), call)

    def _op_get_execution(self, identifier: str, execution_id: str) -> Operation[wire.Execution]:
        self._require(self._version.executions_api, "get_execution", "2024-10-02-preview")
        try:
            route = self._routes.execution(execution_id)
        except (wire.ContractError, TypeError):
            raise ConfigurationError(f"Invalid execution id {execution_id!r}.") from None
        call = Call("GET", route, self._identifier(identifier))
        return self._parse_execution((yield from self._exchange(call)), call)

    def _op_wait_execution(self, identifier: str, execution_id: str, poll_interval: float, deadline: float | None) -> Operation[wire.Execution]:
        if not poll_interval > 0:
            raise ConfigurationError(f"poll_interval must be positive, got {poll_interval!r}.")
        limit = self._timeouts.execution + self._timeouts.margin if deadline is None else deadline
        ends = self._clock() + limit
        while True:
            execution = yield from self._op_get_execution(identifier, execution_id)
            # An unreadable status cannot become readable by waiting: hand it over.
            if execution.status is None or execution.status.finished:
                return execution
            left = ends - self._clock()
            if left <= 0:
                raise ExecutionTimeoutError(
                    f"Execution {execution_id} was still {execution.status.value} after {limit:g} s; "
                    "it may still be running in the session."
                )
            yield Sleep(min(poll_interval, left))

    def _op_upload(self, identifier: str, data: UploadData, name: str, path: str | None, progress: ProgressCallback | None) -> Operation[wire.RemoteFile]:
        folder, base = self._file_target(name, path)
        identifier = self._identifier(identifier)
        if self._version.executions_api:
            filename, query = base, {"path": folder or None}
        else:
            # The code/execute generation has no path query; its clients send
            # the folder in the multipart filename (reference §5.1).
            filename, query = f"{folder}/{base}" if folder else base, {}
        with UploadBody(data, filename, progress) as body:
            call = Call("POST", self._routes.upload, identifier, query=query, body=body)
            response = yield from self._exchange(call)
            return self._parse(response, call, wire.parse_file)

    def _download_call(self, identifier: str, name: str, path: str | None, *, stream: bool) -> Call:
        folder, base = self._file_target(name, path)
        identifier = self._identifier(identifier)
        route = self._routes.file_content(base, folder or None)
        query = {"path": folder or None} if self._version.executions_api else {}
        return Call("GET", route, identifier, query=query, stream=stream)

    def _op_download(self, identifier: str, name: str, path: str | None) -> Operation[bytes]:
        response = yield from self._exchange(self._download_call(identifier, name, path, stream=False))
        return response.content

    def _op_list_files(self, identifier: str, path: str | None, recursive: bool) -> Operation[list[wire.RemoteFile]]:
        if recursive:
            self._require(self._version.output_streams_cap, "Recursive file listing", "2025-10-02-preview")
        folder = self._folder(path)
        call = Call("GET", self._routes.list_files, self._identifier(identifier), query={"path": folder or None, "recursive": True if recursive else None})
        return (yield from self._paged(call, wire.parse_file_list))

    def _file_call(self, method: str, identifier: str, name: str, path: str | None, operation: str) -> Call:
        self._require(self._version.name != "2024-02-02-preview", operation, "2024-08-02-preview")
        folder, base = self._file_target(name, path)
        return Call(method, self._routes.file(base), self._identifier(identifier), query={"path": folder or None})

    def _op_get_file(self, identifier: str, name: str, path: str | None) -> Operation[wire.RemoteFile]:
        call = self._file_call("GET", identifier, name, path, "get_file")
        return self._parse((yield from self._exchange(call)), call, wire.parse_file)

    def _op_delete_file(self, identifier: str, name: str, path: str | None) -> Operation[None]:
        yield from self._exchange(self._file_call("DELETE", identifier, name, path, "delete_file"))

    def _session_call(self, method: str, route: str, identifier: str | None, operation: str) -> Call:
        self._require(self._version.session_management, operation, "2025-02-02-preview")
        return Call(method, route, None if identifier is None else self._identifier(identifier))

    def _op_get_session(self, identifier: str) -> Operation[wire.Session]:
        call = self._session_call("GET", wire.Routes.SESSION, identifier, "get_session")
        return self._parse((yield from self._exchange(call)), call, wire.parse_session)

    def _op_delete_session(self, identifier: str) -> Operation[None]:
        yield from self._exchange(self._session_call("DELETE", wire.Routes.SESSION, identifier, "delete_session"))

    def _op_stop_session(self, identifier: str) -> Operation[None]:
        yield from self._exchange(self._session_call("POST", wire.Routes.STOP_SESSION, identifier, "stop_session"))

    def _op_list_sessions(self) -> Operation[list[wire.Session]]:
        call = self._session_call("GET", wire.Routes.LIST_SESSIONS, None, "list_sessions")
        return (yield from self._paged(call, wire.parse_session_list))

    def _op_metadata(self) -> Operation[wire.PoolMetadata]:
        call = self._session_call("GET", wire.Routes.METADATA, None, "metadata")
        return self._parse((yield from self._exchange(call)), call, wire.parse_metadata)

    # -- local-pool extensions (wire.py, end of module) ----------------------------------

    def _stream_call(
        self, identifier: str, code: str, timeout: float | None, cell: wire.JupyterCell | None = None, session_etag: str | None = None
    ) -> Call:
        seconds = self._execution_seconds(timeout)
        call = self._execution_call(wire.Routes.EXT_STREAM, identifier, code, seconds, extension=True, stream=True)
        if cell is not None:
            if not isinstance(cell, wire.JupyterCell):
                raise ConfigurationError(f"cell must be a JupyterCell, got {type(cell).__name__}.")
            if cell.timeout is not None and (isinstance(cell.timeout, bool) or not isinstance(cell.timeout, (int, float)) or cell.timeout < 0):
                raise ConfigurationError(f"cell.timeout must be a number of seconds >= 0 (0: no limit), got {cell.timeout!r}.")
            call.json["jupyter"] = wire.render_jupyter_cell(cell)
            if cell.timeout is not None:
                # The cell may run for hours: the pool sends a keepalive line every
                # STREAM_KEEPALIVE s, so the ordinary read timeout still spots a hung pool.
                call.timeout = self._timeouts.http(read=max(self._timeouts.read, 3 * wire.STREAM_KEEPALIVE))
        if session_etag is not None:
            if not isinstance(session_etag, str) or not session_etag or '"' in session_etag:
                raise ConfigurationError(f"session_etag must be a session's etag (a non-empty string without quotes), got {session_etag!r}.")
            call.headers = {"If-Match": f'"{session_etag}"'}
        return call

    def _op_send_input(self, identifier: str, value: str) -> Operation[None]:
        if not isinstance(value, str):
            raise ConfigurationError(f"an input answer must be a str, got {type(value).__name__}.")
        if not wire.input_fits(value):
            raise ConfigurationError(f"an input answer may hold at most {wire.MAX_INPUT_BYTES} bytes.")
        call = Call("POST", wire.Routes.EXT_INPUT, self._identifier(identifier), json={"value": value}, replay=Replay.CONNECT_ONLY, extension=True)
        yield from self._exchange(call)

    def _op_comm(self, identifier: str, msg: wire.CommMessage) -> Operation[tuple[list[dict[str, Any]], dict[str, Any] | None]]:
        if not isinstance(msg, wire.CommMessage):
            raise ConfigurationError(f"msg must be a CommMessage, got {type(msg).__name__}.")
        call = Call("POST", wire.Routes.EXT_COMM, self._identifier(identifier), json=wire.render_comm_message(msg), replay=Replay.CONNECT_ONLY, extension=True)
        body = self._json((yield from self._exchange(call)), call)
        if not isinstance(body, dict) or not isinstance(body.get("outputs"), list) or not isinstance(body.get("reply"), (dict, type(None))):
            raise ResponseFormatError(f"{call.label}: expected {{'outputs': [...], 'reply': ...}}.")
        return [_checked_event(e, call) for e in body["outputs"]], body["reply"]

    def _op_events(self, identifier: str, after: int, wait: float) -> Operation[tuple[list[dict[str, Any]], int]]:
        if not wire.events_args_valid(after, wait):
            raise ConfigurationError(f"after must be an event number >= 0 and wait 0 to {wire.MAX_EVENTS_WAIT} seconds.")
        call = Call("POST", wire.Routes.EXT_EVENTS, self._identifier(identifier), json={"after": after, "wait": wait}, extension=True,
                    timeout=self._timeouts.http(read=self._timeouts.read + wait))
        body = self._json((yield from self._exchange(call)), call)
        if not isinstance(body, dict) or not isinstance(body.get("events"), list) or not isinstance(body.get("next"), int):
            raise ResponseFormatError(f"{call.label}: expected {{'events': [...], 'next': N}}.")
        return [_checked_event(e, call) for e in body["events"]], body["next"]

    def _op_interrupt(self, identifier: str) -> Operation[None]:
        call = Call("POST", wire.Routes.EXT_INTERRUPT, self._identifier(identifier), replay=Replay.CONNECT_ONLY, extension=True)
        yield from self._exchange(call)

    def _op_reply(self, route: str, identifier: str, body: dict[str, Any]) -> Operation[dict[str, Any]]:
        """complete/inspect: the Jupyter reply content as a dict."""
        if not isinstance(body["code"], str) or isinstance(body["cursor_pos"], bool) or not isinstance(body["cursor_pos"], int):
            raise ConfigurationError("code must be a str and cursor_pos an int.")
        call = Call("POST", route, self._identifier(identifier), json=body, extension=True)
        reply = self._json((yield from self._exchange(call)), call)
        if not isinstance(reply, dict):
            raise ResponseFormatError(f"{call.label}: expected a JSON object, got {type(reply).__name__}.")
        return reply

    def _op_complete(self, identifier: str, code: str, cursor_pos: int) -> Operation[dict[str, Any]]:
        return self._op_reply(wire.Routes.EXT_COMPLETE, identifier, {"code": code, "cursor_pos": cursor_pos})

    def _op_inspect(self, identifier: str, code: str, cursor_pos: int, detail_level: int) -> Operation[dict[str, Any]]:
        return self._op_reply(wire.Routes.EXT_INSPECT, identifier, {"code": code, "cursor_pos": cursor_pos, "detail_level": detail_level})

    def _decoder(self) -> NdjsonDecoder:
        return NdjsonDecoder(self._version)


def _checked_event(event: Any, call: Call) -> dict[str, Any]:
    """An output of the comms extension: ``msgType``, ``content``, ``metadata``, ``buffers`` (base64), ``parentMsgId``."""
    ok = (
        isinstance(event, dict) and isinstance(event.get("msgType"), str) and isinstance(event.get("content"), dict)
        and isinstance(event.get("metadata", {}), dict) and isinstance(event.get("buffers", []), list)
    )  # fmt: skip
    if not ok:
        raise ResponseFormatError(f"{call.label}: a malformed event: {str(event)[:200]}.")
    return event


class Sink:
    """Writes a streamed download to a file object and reports progress."""

    def __init__(self, fileobj: BinaryIO, progress: ProgressCallback | None) -> None:
        if not callable(getattr(fileobj, "write", None)):
            raise ConfigurationError(f"fileobj must be a writable binary file object, got {type(fileobj).__name__}.")
        self._fileobj = fileobj
        self._progress = progress
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self._fileobj.write(chunk)
        self.written += len(chunk)
        if self._progress is not None:
            self._progress(len(chunk))


def _hint(cls: type[ApiError], endpoint: httpx.URL) -> str:
    """What to do about it, for the errors users most often cannot place."""
    if cls is AuthorizationError:
        scope = _pool_resource_id(endpoint) or "<session pool resource id>"
        return (
            ' The caller needs the "Azure ContainerApps Session Executor" role on the session pool: '
            f'az role assignment create --role "Azure ContainerApps Session Executor" --assignee <principal> --scope {scope}'
            " (new assignments can take a few minutes to apply)."
        )
    if cls is AuthenticationError:
        return f" The token must be issued for {wire.TOKEN_SCOPE.removesuffix('/.default')} and not be expired."
    if cls is ExtensionUnavailableError:
        return " This pool does not offer the local-pool extensions (Azure pools never do)."
    if cls is PoolFullError:
        return " Delete idle sessions or wait for them to expire."
    return ""


def _pool_resource_id(endpoint: httpx.URL) -> str | None:
    """ARM id of the pool from its management endpoint, for role-assignment hints."""
    parts = endpoint.path.strip("/").split("/")
    if len(parts) == 6 and [p.lower() for p in parts[0::2]] == ["subscriptions", "resourcegroups", "sessionpools"]:
        return f"/subscriptions/{parts[1]}/resourceGroups/{parts[3]}/providers/Microsoft.App/sessionPools/{parts[5]}"
    return None
