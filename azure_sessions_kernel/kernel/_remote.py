"""A notebook's remote session: the connection, the in-session helper, running cells.

Protocol-free: this module knows the sessions client and the helper, not
ZMQ. The kernel hands it an ``emit(msg_type, content, cell_id)`` callback and
an ``ask_input(prompt, password)`` coroutine, and maps what it returns and
raises onto ``execute_reply`` fields.

Two ways to run a cell, chosen per pool:

* **Azure contract** (Azure, and local pools in Azure-strict mode): the
  long-poll channel (:mod:`._channel`). The in-session helper runs the cell
  in a worker thread of the session; short execute calls start it and fetch
  its outputs as they are produced, carry interrupts and ``input()`` answers,
  and no call is long, so no cell is bound by Azure's 220 s cap.
* **Native** (the local pool's ``stream`` and ``jupyter-cells``
  extensions): no helper; the cell itself is streamed with its execution
  count, ``silent`` and ``user_expressions``, the session kernel's real
  iopub messages are relayed as they happen, its ``input_request`` comes back
  on the stream (``stdin`` extension), its own ``execute_reply`` comes back on
  the stream's last line, and interrupt stops the remote run.

A session replaced behind our back (idle expiry, deletion, crash) is noticed
before the cell runs: it no longer has the helper, or (native) it no longer
has the etag of the session the earlier cells ran in, which every native
cell sends as ``If-Match``. The cell is then *not* run, the user is told in
one line, and a fresh session is made ready. Re-running the cell silently
would run it without the state it was written against. A session lost while
a cell runs ends that cell with one line saying its state is gone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..wire import COMM_MSG_TYPES, Execution, JupyterCell
from ._lazy import client as sessions_client

if TYPE_CHECKING:
    from ..client import AsyncSessionsClient, SessionsClient
from . import _calls
from ._channel import CALL_TIMEOUT, INTERRUPT_GRACE, Channel, ChannelInterrupted, Publish

#: ``emit(msg_type, content, cell_id=None)``: publish one output; ``cell_id``
#: names an earlier cell when a thread of that cell printed after it ended.
Emit = Callable[..., None]
#: ``ask_input(prompt, password)``: the frontend's answer to ``input()``.
AskInput = Callable[[str, bool], Awaitable[str]]

#: Past a cell's timeout, how long we wait for the pool's own timeout answer.
TIMEOUT_GRACE = 0.6
#: Completion and inspection must not keep an editor waiting.
INTROSPECTION_TIMEOUT = 5.0
#: ... except the first in a session: IPython loads jedi on first use, which takes seconds.
FIRST_INTROSPECTION_TIMEOUT = 20.0
#: timeoutInSeconds of a completion/inspection execute call (Azure contract). Far longer than
#: the kernel waits: a pool stops an overdue execution by interrupting it, and ends the whole
#: session if that fails -- a slow first completion (jedi loading) must never cost the session.
INTROSPECTION_CALL_TIMEOUT = 60
#: Error codes with which a pool reports that the session is gone.
_LOST_CODES = {"sessioncrashed", "sessiondeleted", "sessionnotfound", "sessionwithidentifiernotfound"}
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

    def aside(self, msg_type: str, content: dict[str, Any], owner: str | None, **extra: Any) -> None:
        """Emit an output that is not the cell's own (a comm message, an earlier cell's thread), in order."""
        self.flush()
        self._emit(msg_type, content, owner, **extra)

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
        transport: Any = None,
    ) -> None:
        self._endpoint = endpoint or None
        self._token = token or None
        self.api_version = api_version
        self.identifier = identifier
        self._use_extensions = use_extensions
        self._local_pool_args = tuple(local_pool_args)
        self.log = log or logging.getLogger(__name__)
        self._transport = transport  # tests: an httpx transport for the async client (MockTransport)
        self.backend: Backend | None = None
        self._lease: Any = None
        self._client: AsyncSessionsClient | None = None
        self._sync_client: SessionsClient | None = None
        self._connecting: asyncio.Future[Backend] | None = None
        self._prepared_session: str | None = None  # identifier the helper was installed in (or, native, opened)
        self._etag: str | None = None  # native: the session the notebook's cells have run in
        self._raw = False  # the session has no IPython: run code as plain Azure executions
        self._installing = asyncio.Lock()  # the warm-up and the first cell may both get here
        self._channel: Channel | None = None  # Azure contract: the long-poll channel to the prepared session
        self._cell_started = False  # the channel's running cell reached the session (for the lost-session message)
        self._channel_lock = asyncio.Lock()  # one channel call at a time: cells, comm messages, light polls
        self._comm_ids: set[str] = set()  # comms open in the prepared session
        self._events_after = 0  # native: the last event of the session's events route we published
        self._introspected = False  # a completion or inspection has answered in this session

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
            self._client = sessions_client.AsyncSessionsClient(endpoint, token=token, api_version=self.api_version, transport=self._transport)
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
    def lease(self) -> Any:
        """The :class:`~azure_sessions_kernel.client.LocalPoolLease` of the local pool in use, else ``None``.

        ``None`` on Azure and before :meth:`connect`; ``%session`` reads the
        pool's egress from it.
        """
        return self._lease

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
            if status == _calls.OTHER_HELPER:
                raise BackendError(
                    "This session was prepared by another version of azure-sessions-kernel (its helper speaks another "
                    "protocol). Run %session new to continue in a fresh session."
                )
            self._raw = status == _calls.NO_IPYTHON
            self._channel = Channel(self._channel_call)
            self._prepared_session = identifier

    def forget_helper(self) -> None:
        """The session changed or ended: prepare the next one before its first cell."""
        self._prepared_session = None
        self._etag = None
        self._channel = None
        self._comm_ids = set()
        self._events_after = 0
        self._introspected = False

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
        if self._cell_started:
            return SessionLostError(
                "The remote session ended while this cell was running (it was deleted, expired, or its Python process "
                "died): its variables and files are lost. The next cell starts a fresh session; re-run the cells it needs."
            )
        return SessionLostError(
            "The remote session ended (idle expiry, deletion, or its Python process died). This cell did not run; "
            "the next cell starts a fresh session without the variables and files of earlier cells, so re-run the cells it needs."
        )

    # -- cells ----------------------------------------------------------------------

    async def run_cell(
        self,
        code: str,
        *,
        cell_id: str,
        execution_count: int | None,
        timeout: float | None,
        emit: Emit,
        interrupted: asyncio.Event,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: Mapping[str, str] | None = None,
        allow_stdin: bool = False,
        ask_input: AskInput | None = None,
    ) -> CellReply:
        """Run one cell, emitting its outputs; returns the reply fields.

        Called by the kernel's ``do_execute`` for every cell (or part of one)
        that runs in the session. ``cell_id`` is unique per cell (the kernel
        uses its execute_request's msg_id) and comes back with outputs that a
        thread of the cell prints after it ended. ``timeout`` is in seconds,
        ``None`` for none. ``interrupted`` is set by the kernel on SIGINT.
        ``ask_input`` answers ``input()`` when ``allow_stdin``.

        Raises a :class:`KernelSessionError` subclass when the cell could not
        finish normally (lost session, timeout, an interrupt the code did not
        stop for, backend failure).
        """
        hold = _ErrorHold(emit)
        cell = JupyterCell(execution_count, silent, store_history, dict(user_expressions or {}))
        try:
            # Connecting (maybe starting the local pool) and installing the helper are not the cell's time.
            await self._prepare_interruptibly(interrupted)
            if self._raw:
                return await self._supervise(self._run_raw(code, execution_count, timeout, hold), timeout, interrupted, hold)
            if self.native:
                stdin = allow_stdin and ask_input is not None and self.has("stdin")
                native = dataclasses.replace(cell, allow_stdin=stdin, timeout=timeout or 0, msg_id=cell_id)
                return await self._supervise(self._run_native(code, native, hold, ask_input), timeout, interrupted, hold)
            return await self._run_polled(code, cell, cell_id, timeout, hold, interrupted, allow_stdin and ask_input is not None, ask_input)
        finally:
            hold.flush()

    async def _prepare_interruptibly(self, interrupted: asyncio.Event) -> None:
        ready = asyncio.ensure_future(self.ensure_ready())
        stop = asyncio.ensure_future(interrupted.wait())
        try:
            done, _ = await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if ready not in done:
            ready.cancel()
            with contextlib.suppress(BaseException):
                await ready
            interrupted.clear()
            raise CellInterrupted("Interrupted while connecting to the session; the cell did not run.")
        ready.result()

    async def _supervise(self, run: Awaitable[CellReply], timeout: float | None, interrupted: asyncio.Event, hold: _ErrorHold) -> CellReply:
        """Wait for one long call (native stream, raw execution), acting on interrupt and timeout."""
        task = asyncio.ensure_future(run)
        stop = asyncio.ensure_future(interrupted.wait())
        try:
            limit = None if timeout is None else timeout + TIMEOUT_GRACE
            done, _ = await asyncio.wait({task, stop}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            if stop in done and self.can_interrupt:
                await self._interrupt_remote()
                done, _ = await asyncio.wait({task}, timeout=INTERRUPT_GRACE)
                if task in done:
                    return task.result()
                raise CellInterrupted(
                    f"The session did not stop within {INTERRUPT_GRACE:g} s of the interrupt; "
                    "its code keeps running until it ends or reaches its timeout."
                )
            if stop in done:
                raise CellInterrupted(
                    "Stopped waiting for the session. This session cannot interrupt running code, so it "
                    "keeps running there until it ends or reaches its timeout, and the next cell waits for it."
                )
            if self.can_interrupt:
                await self._interrupt_remote()
            assert timeout is not None
            raise self._timeout(timeout, hold.take())
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def _timeout(self, timeout: float, interrupted_error: dict[str, Any] | None, pool_says: str = "", *, kept: bool | None = None) -> CellTimeoutError:
        if kept if kept is not None else self.can_interrupt:
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

    # -- the long-poll channel (Azure contract) ------------------------------------------

    async def _run_polled(
        self,
        code: str,
        cell: JupyterCell,
        cell_id: str,
        timeout: float | None,
        hold: _ErrorHold,
        interrupted: asyncio.Event,
        allow_stdin: bool,
        ask_input: AskInput | None,
    ) -> CellReply:
        assert self._channel is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        count = cell.execution_count

        def publish(msg_type: str, content: dict[str, Any], owner: str | None, extra: dict[str, Any]) -> None:
            self._track_comms(msg_type, content)
            content = self._with_count(msg_type, content, count) if owner == cell_id else content
            if owner in (cell_id, None) and not extra:
                hold(msg_type, content)
            else:  # a comm message, or output of an earlier cell's thread
                hold.aside(msg_type, content, owner if owner is not None else cell_id, **extra)

        def notice(text: str) -> None:
            hold("stream", {"name": "stderr", "text": text + "\n"})

        self._cell_started = False
        try:
            async with self._channel_lock:
                outcome = await self._channel.run(
                    cell_id, code, cell, allow_stdin=allow_stdin, deadline=deadline, publish=publish,
                    interrupted=interrupted, ask_input=ask_input, notice=notice,
                )  # fmt: skip
        except ChannelInterrupted as stuck:
            at = f" (at {stuck.where})" if stuck.where else ""
            tail = (
                f"it is inside a call that an interrupt cannot stop{at}. KeyboardInterrupt is pending there and "
                "stops the code when that call returns; the next cell waits for it."
            )
            if stuck.why == "timeout":
                assert timeout is not None
                message = f"The cell did not finish within its {timeout:g} s timeout (change it with %timeout) and did not stop within {INTERRUPT_GRACE:g} s of being interrupted: {tail}"
                raise CellTimeoutError(message) from None
            raise CellInterrupted(f"The cell did not stop within {INTERRUPT_GRACE:g} s of the interrupt: {tail}") from None
        finally:
            self._cell_started = False
        reply = CellReply.from_helper(outcome.reply)
        if outcome.interrupted_for == "timeout" and reply.status != "ok" and reply.ename == "KeyboardInterrupt":
            assert timeout is not None
            raise self._timeout(timeout, hold.take(), kept=True)
        return reply

    async def _channel_call(self, code: str, resend: bool) -> dict[str, Any]:
        """One execute call of the channel; the helper's decoded answer (spilled ones fetched)."""
        try:
            with self._client_errors(sessions_client.ExecutionTimeoutError):
                execution = await self.client.execute(self.identifier, code, timeout=CALL_TIMEOUT, resend=resend)
        except sessions_client.ExecutionTimeoutError:
            raise BackendError(
                f"The session did not answer within {CALL_TIMEOUT} s: its Python is stuck in a call that does not let "
                "other threads run (a long C call holding the GIL). The cell may still be running there."
            ) from None
        code_ = _error_code(execution)
        if code_ in _LOST_CODES:
            raise self._lost(execution.error.message if execution.error else "")
        try:
            answer = _calls.decode_answer(execution.result)
            if "spilled" in answer:
                answer = await self._fetch_spilled(answer["spilled"])
        except _calls.HelperMissing:
            raise self._lost() from None
        except ValueError:
            last_lines = execution.stderr.strip().splitlines()[-1:]
            detail = (execution.error.message if execution.error else "") or "".join(last_lines)
            raise BackendError(f"The session returned no answer for this cell: {detail or 'no details'}.") from None
        self._cell_started = True
        # What reached the session's own streams during the call (a warning the
        # home thread printed): the cell's output too.
        answer["streams"] = [(name, text) for name, text in (("stdout", execution.stdout), ("stderr", execution.stderr)) if text]
        return answer

    async def _fetch_spilled(self, name: str) -> dict[str, Any]:
        """An answer too large for the result value, which the helper wrote to ``/mnt/data``."""
        with self._client_errors():
            data = await self.client.download(self.identifier, name)
            try:
                await self.client.delete_file(self.identifier, name)
            except sessions_client.SessionsError as exc:  # a leftover file is harmless; the outputs are what matter
                self.log.info("Could not delete %s from the session: %s", name, exc)
        return _calls.decode_answer(data.decode("utf-8"))

    # -- comms (widgets) ----------------------------------------------------------------

    def _track_comms(self, msg_type: str, content: Mapping[str, Any]) -> None:
        comm_id = content.get("comm_id")
        if msg_type == "comm_open" and isinstance(comm_id, str):
            self._comm_ids.add(comm_id)
        elif msg_type == "comm_close":
            self._comm_ids.discard(comm_id)  # type: ignore[arg-type]

    def _tracking(self, emit: Emit, default_owner: str | None) -> Publish:
        """A channel ``publish`` for outputs outside a cell: note the comms opened and closed, then
        emit each output under its own owner, else ``default_owner`` (a comm message's, or none)."""

        def publish(kind: str, body: dict[str, Any], owner: str | None, extra: dict[str, Any]) -> None:
            self._track_comms(kind, body)
            emit(kind, body, owner or default_owner, **extra)

        return publish

    @property
    def comms_open(self) -> bool:
        """The session has comms (widgets) open: what it publishes between cells matters."""
        return bool(self._comm_ids)

    async def comm(self, msg_id: str, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[bytes], emit: Emit) -> dict[str, Any] | None:
        """Relay a frontend's ``comm_open``/``comm_msg``/``comm_close``/``comm_info_request`` to the session.

        Called by the kernel's shell handlers for those messages. ``emit``
        publishes what the session's handler produced (``cell_id`` is
        ``msg_id``: the frontend's message is its parent). Returns the
        ``comm_info_reply`` content for ``comm_info_request``. A message for a
        comm of a session that ended raises :class:`SessionLostError`: the
        widget's state is gone with it, and nothing is sent to the new session.
        """
        comm_id = content.get("comm_id")
        if msg_type in ("comm_msg", "comm_close") and comm_id not in self._comm_ids:
            raise SessionLostError(
                "This widget belonged to a session that has ended (or was replaced), and its state went with it; "
                "re-run the cell that created it."
            )
        await self.ensure_ready()
        publish = self._tracking(emit, msg_id)
        if msg_type == "comm_open" and isinstance(comm_id, str):
            self._comm_ids.add(comm_id)
        async with self._channel_lock:
            if self.native:
                return await self._comm_native(msg_id, msg_type, content, metadata, buffers, publish)
            if self._channel is None:
                raise BackendError("This session has no IPython, so it has no comms (widgets).")
            reply = await self._channel.deliver(msg_id, msg_type, content, metadata, buffers, publish)
        if msg_type == "comm_close":
            self._comm_ids.discard(comm_id)  # type: ignore[arg-type]
        return reply

    async def between_cells(self, emit: Emit) -> None:
        """Fetch and publish what the session published since the last cell (a light poll).

        Called by the kernel about once a second while comms are open and no
        cell runs. Each output goes to the cell (or comm message) it belongs to.
        """
        if self.backend is None or self._prepared_session != self.identifier:
            return
        publish = self._tracking(emit, None)
        async with self._channel_lock:
            if self.native:
                await self._events_native(publish)
            elif self._channel is not None:
                await self._channel.idle_poll(publish)

    async def _comm_native(
        self, msg_id: str, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[bytes], publish: Any
    ) -> dict[str, Any] | None:
        """A frontend comm message through the local pool's ``comms`` extension."""
        if not self.has("comms"):
            raise BackendError("This pool relays no comm messages (it lacks the 'comms' extension); widgets cannot work here.")
        msg = sessions_client.CommMessage(msg_id, msg_type, content, metadata, tuple(bytes(b) for b in buffers))
        with self._client_errors():
            outputs, reply = await self.client.comm(self.identifier, msg)
        for output in outputs:
            self._publish_event(output, publish, msg_id)
        return reply

    async def _events_native(self, publish: Any) -> None:
        """What the session published outside its cells, through the ``comms`` extension's events route."""
        if not self.has("comms"):
            return
        with self._client_errors():
            events, last = await self.client.events(self.identifier, after=self._events_after, wait=0)
        for event in events:
            self._publish_event(event, publish, None)
        self._events_after = max(self._events_after, last)

    @staticmethod
    def _publish_event(event: Mapping[str, Any], publish: Any, owner: str | None) -> None:
        extra = {"metadata": event.get("metadata") or {}, "buffers": list(event.get("buffers") or ())}
        publish(str(event["msgType"]), dict(event["content"]), event.get("parentMsgId") or owner, extra)

    # -- native cells (local pool extensions) -------------------------------------------

    async def _run_native(self, code: str, cell: JupyterCell, hold: _ErrorHold, ask_input: AskInput | None) -> CellReply:
        done = None
        try:
            with self._client_errors(sessions_client.ExtensionUnavailableError):
                async for event in self.client.execute_stream(self.identifier, code, cell=cell, session_etag=self._etag):
                    if event.done:  # the last event; reading on lets the stream close itself
                        done = event
                    elif event.type == "iopub" and event.msg_type in COMM_MSG_TYPES:
                        self._track_comms(event.msg_type, event.content or {})
                        hold.aside(event.msg_type, dict(event.content or {}), cell.msg_id, metadata=dict(event.metadata or {}), buffers=list(event.buffers))
                    elif event.type == "iopub" and event.msg_type:
                        hold(event.msg_type, self._with_count(event.msg_type, dict(event.content or {}), cell.execution_count))
                    elif event.type == "stdin" and event.msg_type == "input_request" and ask_input is not None:
                        content = event.content or {}
                        try:
                            value = await ask_input(str(content.get("prompt", "")), bool(content.get("password")))
                        except KeyboardInterrupt:
                            await self._interrupt_remote()  # the session's input() raises KeyboardInterrupt
                            continue
                        await self.client.send_input(self.identifier, value)
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
            raise self._timeout(cell.timeout or 0, hold.take())
        if done is None or done.reply is None:
            message = execution.error.message if execution is not None and execution.error else "the stream ended early"
            raise BackendError(f"The session ended the cell without a reply: {message}.")
        return CellReply.from_helper(done.reply)

    async def _run_raw(self, code: str, execution_count: int | None, timeout: float | None, hold: _ErrorHold) -> CellReply:
        """Best effort for a session without IPython: stdout, stderr and the one result value (one call, Azure's cap)."""
        try:
            execution = await self._execute(code, timeout=min(timeout or CALL_TIMEOUT, CALL_TIMEOUT))
        except sessions_client.ExecutionTimeoutError:
            raise self._timeout(timeout or CALL_TIMEOUT, None) from None
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
            execution = await self.client.execute(self.identifier, snippet, timeout=INTROSPECTION_CALL_TIMEOUT)
            return _calls.decode(execution.result)

        try:
            answer = await asyncio.wait_for(ask(), INTROSPECTION_TIMEOUT if self._introspected else FIRST_INTROSPECTION_TIMEOUT)
            self._introspected = True
            return answer
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
