"""A notebook's remote session: the connection, the in-session helper, running cells.

Protocol-free: this module knows the sessions client and the helper, not
ZMQ. The kernel hands it an ``emit(msg_type, content)`` callback and maps
what it returns and raises onto ``execute_reply`` fields.

Two ways to run a cell, chosen per pool:

* **Azure contract** (Azure, and local pools in Azure-strict mode): one
  execute call through the in-session helper, whose JSON result value
  carries every output; outputs appear when the cell ends.
* **Native** (the local pool's ``stream`` and ``jupyter-cells``
  extensions): no helper; the cell itself is streamed with its execution
  count, ``silent`` and ``user_expressions``, the session kernel's real
  iopub messages are relayed as they happen, its own ``execute_reply``
  comes back on the stream's last line, and interrupt stops the remote run.

A session replaced behind our back (idle expiry, deletion, crash) is noticed
before the cell runs: it no longer has the helper, or (native) it no longer
has the etag of the session the earlier cells ran in, which every native
cell sends as ``If-Match``. The cell is then *not* run, the user is told in
one line, and a fresh session is made ready. Re-running the cell silently
would run it without the state it was written against.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..wire import Execution, JupyterCell
from ._lazy import client as sessions_client

if TYPE_CHECKING:
    from ..client import AsyncSessionsClient, SessionsClient
from . import _calls
Emit = Callable[[str, dict[str, Any]], None]

#: Past a cell's timeout, how long we wait for the pool's own timeout answer.
TIMEOUT_GRACE = 0.6
#: After asking the local pool to interrupt, how long the run may take to stop.
INTERRUPT_GRACE = 3.0
#: Completion and inspection must not keep an editor waiting.
INTROSPECTION_TIMEOUT = 5.0
#: Error codes with which a pool reports that the session is gone.
_LOST_CODES = {"sessioncrashed", "sessionnotfound", "sessionwithidentifiernotfound"}
#: What the user reads when the local pool process died (kill -9, crash), during a cell or between cells.
POOL_DIED = "The local session pool stopped (it was killed or crashed), and the session's state went with it: its variables and files are lost"
POOL_DIED_DURING_CELL = f"{POOL_DIED}. This cell was cut off; the next cell starts a new pool and a fresh session"
POOL_DIED_BEFORE_CELL = f"{POOL_DIED}. This cell did not run; the next cell starts a new pool and a fresh session"


class KernelSessionError(Exception):
    """A cell could not run (or finish) as asked; shown as one ``error`` output.

    ``ename`` is what the notebook shows; the message is one plain sentence.
    """

    ename = "SessionError"

    def __init__(self, message: str, traceback: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.traceback = list(traceback)


class SessionLostError(KernelSessionError):
    ename = "SessionLostError"


class CellTimeoutError(KernelSessionError):
    ename = "TimeoutError"


class CellInterrupted(KernelSessionError):
    ename = "KeyboardInterrupt"


class BackendError(KernelSessionError):
    """The pool could not be reached, refused us, or answered something unusable."""

    ename = "SessionBackendError"


@dataclasses.dataclass(frozen=True)
class Backend:
    """What the kernel is connected to, for ``%session`` and for choosing how to run cells."""

    endpoint: str
    local: bool
    isolation: Mapping[str, Any] | None
    extensions: frozenset[str]

    @property
    def description(self) -> str:
        if not self.local:
            return "Azure Container Apps session pool"
        strict = "" if self.extensions else ", Azure-strict (no extensions)"
        return f"local session pool{strict}"


@dataclasses.dataclass
class CellReply:
    """The ``execute_reply`` fields of a finished remote cell."""

    status: str = "ok"
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = dataclasses.field(default_factory=list)
    payload: list[Any] = dataclasses.field(default_factory=list)
    user_expressions: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_helper(cls, reply: Mapping[str, Any]) -> CellReply:
        return cls(
            status=str(reply.get("status") or "error"),
            ename=str(reply.get("ename") or ""),
            evalue=str(reply.get("evalue") or ""),
            traceback=list(reply.get("traceback") or []),
            payload=list(reply.get("payload") or []),
            user_expressions=dict(reply.get("user_expressions") or {}),
        )


def _error_code(execution: Execution | None) -> str:
    return (execution.error.code if execution is not None and execution.error is not None else "").lower()


class _ErrorHold:
    """Relays outputs in order, but keeps the latest ``error`` until the next output.

    A cell stopped by its timeout ends with a ``KeyboardInterrupt`` error; held
    back, it can be folded into the single ``TimeoutError`` the user sees.
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.held: dict[str, Any] | None = None

    def __call__(self, msg_type: str, content: dict[str, Any]) -> None:
        self.flush()
        if msg_type == "error":
            self.held = content
        else:
            self._emit(msg_type, content)

    def flush(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self._emit("error", held)

    def take(self) -> dict[str, Any] | None:
        held, self.held = self.held, None
        return held


class RemoteSession:
    """The session a kernel's cells run in, and the pool it lives in."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        token: str | None,
        api_version: str,
        identifier: str,
        use_extensions: bool = True,
        local_pool_args: Sequence[str] = (),
        log: logging.Logger | None = None,
    ) -> None:
        self._endpoint = endpoint or None
        self._token = token or None
        self.api_version = api_version
        self.identifier = identifier
        self._use_extensions = use_extensions
        self._local_pool_args = tuple(local_pool_args)
        self.log = log or logging.getLogger(__name__)
        self.backend: Backend | None = None
        self._lease: Any = None
        self._client: AsyncSessionsClient | None = None
        self._sync_client: SessionsClient | None = None
        self._connecting: asyncio.Future[Backend] | None = None
        self._prepared_session: str | None = None  # identifier the helper was installed in (or, native, opened)
        self._etag: str | None = None  # native: the session the notebook's cells have run in
        self._raw = False  # the session has no IPython: run code as plain Azure executions
        self._installing = asyncio.Lock()  # the warm-up and the first cell may both get here

    # -- connection ---------------------------------------------------------------

    async def connect(self) -> Backend:
        """Connect once (starting or reusing the local pool when no endpoint is set).

        A local pool that died since is dropped here and a new one started
        (or another kernel's joined); if a session had run cells in the dead
        one, this raises :class:`SessionLostError` first, once.
        """
        if self._lease is not None and not self._lease.alive():
            had_session = self._prepared_session is not None
            await self._drop_dead_pool()
            if had_session:
                raise self._lost(POOL_DIED_BEFORE_CELL)
        failed = self._connecting is not None and self._connecting.done() and (self._connecting.cancelled() or self._connecting.exception())
        if self._connecting is None or failed:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        except (KernelSessionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # e.g. a credential library that cannot load: still one clear error
            self.log.warning("Connecting to the session pool failed", exc_info=True)
            raise BackendError(f"Could not connect to the session pool: {type(exc).__name__}: {exc}") from exc

    async def _connect(self) -> Backend:
        endpoint, token, isolation = self._endpoint, self._token, None
        try:
            if endpoint is None:
                from ..client import acquire_local_pool  # only needed without an endpoint

                self._lease = await acquire_local_pool(self._local_pool_args)
                # Should the kernel die without a shutdown, still let the pool know.
                atexit.register(self._lease.release)
                endpoint, token, isolation = self._lease.endpoint, self._lease.token, self._lease.isolation
            self._client = sessions_client.AsyncSessionsClient(endpoint, token=token, api_version=self.api_version)
        except sessions_client.SessionsError as exc:
            raise BackendError(f"Could not set up the session pool connection: {exc}") from exc
        extensions: frozenset[str] = frozenset()
        try:
            metadata = await self._client.metadata()
        except sessions_client.TransportError as exc:  # not reachable (yet): the next cell tries again
            await self._client.close()
            raise BackendError(f"Could not reach the session pool: {exc}") from exc
        except sessions_client.SessionsError as exc:
            # Older api-versions and some Azure pools have no metadata route;
            # that only means: no extensions.
            self.log.info("No pool metadata (%s); using the Azure contract only.", exc)
        else:
            block = metadata.extensions or {}
            if self._use_extensions:
                extensions = frozenset(str(e) for e in block.get("extensions") or ())
            isolation = isolation or block.get("isolation")
        local = self._lease is not None or self._client.loopback
        self.backend = Backend(endpoint=endpoint, local=local, isolation=isolation, extensions=extensions)
        return self.backend

    async def _drop_dead_pool(self) -> None:
        """Forget the dead local pool's connection and lease, so that :meth:`connect` starts afresh."""
        self.forget_helper()
        client, self._client = self._client, None
        sync_client, self._sync_client = self._sync_client, None
        with contextlib.suppress(Exception):
            if client is not None:
                await client.close()
            if sync_client is not None:
                sync_client.close()
        self._lease.release()
        self._lease = None
        self.backend = None
        self._connecting = None

    def _local_pool_died(self) -> bool:
        """After a transport error: whether it is because our local pool's process is gone."""
        return self._lease is not None and self._lease.died()

    def sync_client(self) -> SessionsClient:
        """A blocking client to the same pool, for magics (they run inside a sync ``run_cell``)."""
        if self.backend is None:
            raise RuntimeError("connect() first")
        if self._sync_client is None:
            token = self._lease.token if self._lease is not None else self._token
            self._sync_client = sessions_client.SessionsClient(self.backend.endpoint, token=token, api_version=self.api_version)
        return self._sync_client

    @property
    def client(self) -> AsyncSessionsClient:
        if self._client is None:
            raise RuntimeError("connect() first")
        return self._client

    def has(self, extension: str) -> bool:
        return self.backend is not None and extension in self.backend.extensions

    @property
    def can_interrupt(self) -> bool:
        return self.has("interrupt")

    # -- the helper ---------------------------------------------------------------

    @property
    def native(self) -> bool:
        """Cells run as themselves, without the helper (the pool has ``stream`` and ``jupyter-cells``)."""
        return self.has("stream") and self.has("jupyter-cells")

    async def ensure_ready(self) -> None:
        """Connect and install the helper in the current session if it is not there yet.

        Natively, only make sure the session exists (an empty, silent cell),
        so that the first cell does not wait for its allocation.
        """
        await self.connect()
        async with self._installing:
            if self._prepared_session == self.identifier:
                return
            identifier = self.identifier
            if self.native:
                cell = JupyterCell(silent=True, store_history=False)
                with self._client_errors():
                    async for _ in self.client.execute_stream(identifier, "", timeout=60, cell=cell):
                        pass
                self._prepared_session = identifier
                return
            execution = await self._execute(_calls.install_code(), timeout=60)
            try:
                status = _calls.decode_install(execution.result)
            except ValueError:
                detail = (execution.error.message if execution.error else "") or execution.stderr.strip()[-400:]
                raise BackendError(f"The session did not accept the kernel's helper: {detail or execution.result!r}") from None
            self._raw = status == _calls.NO_IPYTHON
            self._prepared_session = identifier

    def forget_helper(self) -> None:
        """The session changed or ended: prepare the next one before its first cell."""
        self._prepared_session = None
        self._etag = None

    @contextlib.contextmanager
    def _client_errors(self, *passed_on: type[Exception]) -> Iterator[None]:
        """Client errors as the kernel reports them; ``passed_on`` ones are for the caller."""
        try:
            yield
        except sessions_client.SessionNotFoundError:
            raise self._lost() from None
        except passed_on:
            raise
        except sessions_client.TransportError as exc:
            if self._local_pool_died():
                raise self._lost(POOL_DIED_DURING_CELL) from None
            raise BackendError(str(exc)) from exc
        except sessions_client.SessionsError as exc:
            raise BackendError(str(exc)) from exc

    async def _execute(self, code: str, *, timeout: float) -> Execution:
        with self._client_errors(sessions_client.ExecutionTimeoutError):
            return await self.client.execute(self.identifier, code, timeout=timeout)

    def _lost(self, reason: str = "") -> SessionLostError:
        """The session is gone. ``reason`` is the pool's own sentence when it gave one
        (it says whether this cell ran, e.g. when the cell ran the session out of memory)."""
        self.forget_helper()
        if reason:
            return SessionLostError(f"{reason.rstrip('.')}. Re-run the cells the next one needs.")
        return SessionLostError(
            "The remote session ended (idle expiry, deletion, or its Python process died). This cell did not run; "
            "the next cell starts a fresh session without the variables and files of earlier cells, so re-run the cells it needs."
        )

    # -- cells ----------------------------------------------------------------------

    async def run_cell(
        self,
        code: str,
        *,
        execution_count: int | None,
        timeout: float,
        emit: Emit,
        interrupted: asyncio.Event,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: Mapping[str, str] | None = None,
        top_level_await: bool | Callable[[], bool] = False,
    ) -> CellReply:
        """Run one cell, emitting its outputs; returns the reply fields.

        Raises a :class:`KernelSessionError` subclass when the cell could not
        finish normally (lost session, timeout, interrupt on Azure, backend
        failure). ``interrupted`` is set by the kernel on SIGINT.
        ``top_level_await`` (or a function that says so, asked only when the
        helper runs the cell) says whether the cell needs the session's loop.
        """
        hold = _ErrorHold(emit)
        sent = asyncio.Event()  # set when the cell goes out: the timeout counts from there
        cell = JupyterCell(execution_count, silent, store_history, dict(user_expressions or {}))
        run = asyncio.ensure_future(self._run(code, cell, top_level_await, timeout, hold, sent))
        stop = asyncio.ensure_future(interrupted.wait())
        sending = asyncio.ensure_future(sent.wait())
        try:
            # Connecting (maybe starting the local pool) and installing the helper are not the cell's time.
            done, _ = await asyncio.wait({run, stop, sending}, return_when=asyncio.FIRST_COMPLETED)
            if run not in done and stop not in done:
                done, _ = await asyncio.wait({run, stop}, timeout=timeout + TIMEOUT_GRACE, return_when=asyncio.FIRST_COMPLETED)
            if run in done:
                return run.result()
            if stop in done and not sent.is_set():
                raise CellInterrupted("Interrupted while connecting to the session; the cell did not run.")
            if stop in done and self.can_interrupt:
                await self._interrupt_remote()
                done, _ = await asyncio.wait({run}, timeout=INTERRUPT_GRACE)
                if run in done:
                    return run.result()
                raise CellInterrupted(
                    f"The session did not stop within {INTERRUPT_GRACE:g} s of the interrupt; "
                    "its code keeps running until it ends or reaches its timeout."
                )
            if stop in done:
                raise CellInterrupted(
                    "Stopped waiting for the session. Azure sessions cannot interrupt running code, so it "
                    "keeps running there until it ends or reaches its timeout, and the next cell waits for it."
                )
            if self.can_interrupt:
                await self._interrupt_remote()
            raise self._timeout(timeout, hold.take())
        finally:
            for waiter in (stop, sending):
                waiter.cancel()
            if not run.done():
                run.cancel()
            with contextlib.suppress(BaseException):
                await run
            hold.flush()

    def _timeout(self, timeout: float, interrupted_error: dict[str, Any] | None, pool_says: str = "") -> CellTimeoutError:
        if self.can_interrupt:
            what = "it was interrupted in the session, whose variables are kept"
        elif pool_says:
            what = f"the pool stopped it: {pool_says.rstrip('.')}"
        else:
            what = "the kernel stopped waiting, and the session keeps running it until it ends or reaches its own limit"
        # The traceback of the interrupt shows where the code was stopped.
        lines = list(interrupted_error["traceback"][:-1]) if interrupted_error and interrupted_error.get("traceback") else []
        message = f"The cell did not finish within its {timeout:g} s timeout (change it with %timeout); {what}."
        return CellTimeoutError(message, [*lines, f"{CellTimeoutError.ename}: {message}"])

    async def _interrupt_remote(self) -> None:
        try:
            await asyncio.wait_for(self.client.interrupt(self.identifier), 2.0)
        except (sessions_client.SessionsError, asyncio.TimeoutError) as exc:
            self.log.warning("Interrupting the session failed: %s", exc)

    async def _run(
        self, code: str, cell: JupyterCell, top_level_await: bool | Callable[[], bool], timeout: float, hold: _ErrorHold, sent: asyncio.Event
    ) -> CellReply:
        await self.ensure_ready()
        sent.set()
        if self._raw:
            return await self._run_raw(code, cell.execution_count, timeout, hold)
        if self.native:
            return await self._run_native(code, cell, timeout, hold)
        needs_loop = top_level_await() if callable(top_level_await) else top_level_await
        call = _calls.run_code(
            code, cell.execution_count, silent=cell.silent, user_expressions=dict(cell.user_expressions), top_level_await=needs_loop
        )
        return await self._run_contract(call, cell.execution_count, timeout, hold)

    async def _run_contract(self, call: str, execution_count: int | None, timeout: float, hold: _ErrorHold) -> CellReply:
        try:
            execution = await self._execute(call, timeout=timeout)
        except sessions_client.ExecutionTimeoutError:
            raise self._timeout(timeout, None) from None
        code = _error_code(execution)
        if code in _LOST_CODES:
            raise self._lost(execution.error.message if execution.error else "")
        try:
            reply = _calls.decode_cell_reply(execution.result)
            if "spilled" in reply:
                reply = await self._fetch_spilled(reply["spilled"])
        except _calls.HelperMissing:
            raise self._lost() from None
        except ValueError:
            if "timeout" in code:  # pools drop the result value of a timed-out run
                raise self._timeout(timeout, None, execution.error.message if execution.error else "") from None
            self._emit_streams(execution, hold)
            last_lines = execution.stderr.strip().splitlines()[-1:]
            detail = (execution.error.message if execution.error else "") or "".join(last_lines)
            raise BackendError(f"The session returned no result for this cell: {detail or 'no details'}.") from None
        for output in reply.get("outputs") or ():
            hold(output["msg_type"], self._with_count(output["msg_type"], dict(output["content"]), execution_count))
        # Output written to the session's file descriptors (subprocesses, C
        # libraries) bypasses the helper and comes back as plain stdout/stderr.
        self._emit_streams(execution, hold)
        if "timeout" in code:
            raise self._timeout(timeout, hold.take(), execution.error.message if execution.error else "")
        return CellReply.from_helper(reply)

    async def _fetch_spilled(self, name: str) -> dict[str, Any]:
        """A reply too large for the result value, which the helper wrote to ``/mnt/data``."""
        with self._client_errors():
            data = await self.client.download(self.identifier, name)
            try:
                await self.client.delete_file(self.identifier, name)
            except sessions_client.SessionsError as exc:  # a leftover file is harmless; the outputs are what matter
                self.log.info("Could not delete %s from the session: %s", name, exc)
        return _calls.decode_cell_reply(data.decode("utf-8"))

    async def _run_native(self, code: str, cell: JupyterCell, timeout: float, hold: _ErrorHold) -> CellReply:
        done = None
        try:
            with self._client_errors(sessions_client.ExtensionUnavailableError):
                async for event in self.client.execute_stream(self.identifier, code, timeout=timeout, cell=cell, session_etag=self._etag):
                    if event.done:  # the last event; reading on lets the stream close itself
                        done = event
                    elif event.type == "iopub" and event.msg_type:
                        hold(event.msg_type, self._with_count(event.msg_type, dict(event.content or {}), cell.execution_count))
        except sessions_client.ExtensionUnavailableError:
            # A pool restarted in Azure-strict mode under the same address: this cell did not run.
            self.backend = dataclasses.replace(self.backend, extensions=frozenset())  # type: ignore[arg-type]
            raise self._lost("The session pool was restarted in Azure-strict mode, which ended its sessions; this cell did not run") from None
        execution = done.execution if done is not None else None
        if _error_code(execution) in _LOST_CODES:
            raise self._lost(execution.error.message if execution and execution.error else "")
        if done is not None and done.etag:
            self._etag = done.etag  # from now on, only this session will do
        if done is not None and done.status == "timeout":
            raise self._timeout(timeout, hold.take())
        if done is None or done.reply is None:
            message = execution.error.message if execution is not None and execution.error else "the stream ended early"
            raise BackendError(f"The session ended the cell without a reply: {message}.")
        return CellReply.from_helper(done.reply)

    async def _run_raw(self, code: str, execution_count: int | None, timeout: float, hold: _ErrorHold) -> CellReply:
        """Best effort for a session without IPython: stdout, stderr and the one result value."""
        try:
            execution = await self._execute(code, timeout=timeout)
        except sessions_client.ExecutionTimeoutError:
            raise self._timeout(timeout, None) from None
        if execution.stdout:
            hold("stream", {"name": "stdout", "text": execution.stdout})
        if not execution.succeeded:
            message = (execution.error.message if execution.error else "") or "the execution failed"
            name = (execution.error.code if execution.error else "") or "ExecutionFailed"
            trace = execution.stderr.rstrip().splitlines() or [f"{name}: {message}"]
            hold("error", {"ename": name, "evalue": message, "traceback": trace})
            return CellReply("error", name, message, trace)
        if execution.stderr:
            hold("stream", {"name": "stderr", "text": execution.stderr})
        image = execution.image
        if image is not None:
            hold("display_data", {"data": {f"image/{image.format}": image.base64_data, "text/plain": "<image>"}, "metadata": {}, "transient": {}})
        elif execution.result not in (None, ""):
            text = execution.result if isinstance(execution.result, str) else repr(execution.result)
            hold("execute_result", {"data": {"text/plain": text}, "metadata": {}, "execution_count": execution_count})
        return CellReply()

    @staticmethod
    def _with_count(msg_type: str, content: dict[str, Any], execution_count: int | None) -> dict[str, Any]:
        if msg_type == "execute_result":
            content["execution_count"] = execution_count
        return content

    @staticmethod
    def _emit_streams(execution: Execution, emit: Emit) -> None:
        for name, text in (("stdout", execution.stdout), ("stderr", execution.stderr)):
            if text:
                emit("stream", {"name": name, "text": text})

    # -- introspection --------------------------------------------------------------

    async def complete(self, code: str, cursor_pos: int) -> dict[str, Any] | None:
        """A ``complete_reply`` content from the session's namespace, or ``None``."""
        return await self._introspect("complete", _calls.complete_code(code, cursor_pos), code, cursor_pos)

    async def inspect(self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Sequence[str] = ()) -> dict[str, Any] | None:
        """An ``inspect_reply`` content from the session's namespace, or ``None``."""
        snippet = _calls.inspect_code(code, cursor_pos, detail_level, tuple(omit_sections))
        return await self._introspect("inspect", snippet, code, cursor_pos, detail_level)

    async def _introspect(self, kind: str, snippet: str, code: str, cursor_pos: int, *extra: int) -> dict[str, Any] | None:
        async def ask() -> dict[str, Any]:
            await self.ensure_ready()
            if self.has(kind):
                method = self.client.complete if kind == "complete" else self.client.inspect
                return await method(self.identifier, code, cursor_pos, *extra)
            if self._raw:
                raise BackendError("no IPython in the session")
            execution = await self.client.execute(self.identifier, snippet, timeout=INTROSPECTION_TIMEOUT)
            return _calls.decode(execution.result)

        try:
            return await asyncio.wait_for(ask(), INTROSPECTION_TIMEOUT)
        except _calls.HelperMissing:
            self.forget_helper()
        except (sessions_client.SessionsError, KernelSessionError, ValueError, asyncio.TimeoutError) as exc:
            self.log.info("Remote %s failed: %s", kind, exc)
        except Exception:  # an editor's request must get an (empty) answer, whatever went wrong
            self.log.warning("Remote %s failed unexpectedly", kind, exc_info=True)
        return None

    # -- session lifetime ----------------------------------------------------------------

    def switch_to(self, identifier: str) -> None:
        """Run the next cells in session ``identifier`` (created by the pool on first use)."""
        self.identifier = identifier
        self.forget_helper()

    async def delete(self) -> None:
        """End the current session (its state and files); the identifier may be reused afterwards."""
        await self.connect()
        self.forget_helper()
        try:
            await self.client.delete_session(self.identifier)
        except sessions_client.SessionNotFoundError:
            pass

    async def close(self, *, delete: bool) -> None:
        """Release everything; delete the session first when asked (best effort, never raises)."""
        client, self._client = self._client, None
        if client is not None:
            if delete:
                try:
                    await asyncio.wait_for(client.delete_session(self.identifier), 10)
                except Exception as exc:
                    self.log.info("Could not delete the session at shutdown: %s", exc)
            try:
                await client.close()
            except Exception as exc:
                self.log.info("Closing the session client failed: %s", exc)
        sync_client, self._sync_client = self._sync_client, None
        if sync_client is not None:
            with contextlib.suppress(Exception):
                sync_client.close()
        if self._lease is not None:
            self._lease.release()  # the local pool ends with its last lease
            self._lease = None
