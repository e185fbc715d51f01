"""Session lifecycle of the local pool: identifiers, warm pool, executions, expiry.

The HTTP layer (:mod:`azure_sessions_kernel.pool.http`) calls a
:class:`SessionManager` for everything that touches a session; the manager
asks its :class:`~azure_sessions_kernel.pool.sandbox.Launcher` for sandboxes
and drives the ipykernel inside each one with ``jupyter_client``.

Semantics follow Azure (reference §7): a session is created on the first
request that names a new identifier, keeps its Python state across
executions, ends after ``cooldown`` seconds without a request or on
``DELETE session``, and executions of one session are serialised.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import queue
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient

from .. import wire
from .errors import KernelTimeout, NoInputRequested, SessionCreationFailed, SessionNotFound, SessionPoolFull
from .sandbox import Launcher, Sandbox, SandboxError

log = logging.getLogger("azure_sessions_kernel.pool")

#: Called with each iopub message (``msg_type``, ``content``) an execution produces.
EventSink = Callable[[str, dict[str, Any]], Awaitable[None] | None]

#: Messages a session's iopub may queue in the server before the kernel's sends are dropped.
IOPUB_HWM = 64
#: Events kept per session for the events route (count and bytes of content); past them new ones are dropped.
EVENTS_KEPT = 2000
EVENTS_BYTES = 16 << 20
#: Longest a frontend's comm message may keep the session's kernel busy before the route answers.
COMM_TIMEOUT = 60.0
#: After the execute_reply, how long to wait for the final 'idle' before concluding it was dropped.
IDLE_AFTER_REPLY = 5.0

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: Run silently in every new kernel before it serves a user: an assignment and
#: an expression in a throwaway scope exercise compile, exec and the AST path
#: without binding anything in the user's namespace.
_WARM_UP = "(lambda: [x * 2 for x in range(3)])()\n"


@dataclasses.dataclass
class PoolConfig:
    """Pool-wide settings; see ``azure-sessions-kernel serve --help`` for each."""

    max_sessions: int = 100
    #: Sandboxes kept started and ready to be claimed by a new identifier.
    ready_sessions: int = 1
    #: Idle seconds before a session ends (Azure: 300–3600).
    cooldown: float = 300.0
    #: Seconds an interrupted, overdue execution gets before its sandbox is killed.
    interrupt_grace: float = 2.0
    #: Cap on the output one execution may collect (bytes of text and data).
    output_cap: int = 8 * 1024 * 1024
    #: How long a freshly started kernel may take to answer ``kernel_info``.
    kernel_ready_timeout: float = 60.0
    #: Finished asynchronous executions remembered per session for polling.
    executions_kept: int = 64
    #: Modules imported into each *ready* session before it can be claimed, so a
    #: first cell's ``import pandas`` is a dictionary lookup. Bound to no name.
    preload: tuple[str, ...] = ()
    #: Seconds between claiming a ready sandbox and starting its replacement:
    #: a kernel start takes a core for ~0.7 s, which on a small machine would
    #: otherwise compete with the claiming session's first cell.
    refill_delay: float = 0.3
    #: Keep what sessions publish outside requests for the events route (``comms``
    #: extension); off in Azure-strict mode, which has no such route.
    keep_events: bool = True
    #: Sandboxes that may start at once. A start is ~0.7 s of a core plus waits
    #: (namespaces, mounts, the kernel's sockets), so a few per core overlap
    #: well; measured on 2 cores (bench/burst_bench.py), 2 at once served a
    #: burst of 20 later than 8, and 20 at once thrashed.
    parallel_starts: int = dataclasses.field(default_factory=lambda: 4 * (os.cpu_count() or 1))


@dataclasses.dataclass
class _Collected:
    """What one execution produced, in order, bounded by the output cap."""

    events: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    size: int = 0
    truncated: bool = False


class PoolSession:
    """One identifier's session: a sandbox, its kernel client and its history."""

    def __init__(self, identifier: str, sandbox: Sandbox, kc: AsyncKernelClient, keep_events: bool = True) -> None:
        self.identifier = identifier
        self.keep_events = keep_events
        self.sandbox = sandbox
        sandbox.assign(_short(identifier))
        self.kc = kc
        self.etag = uuid.uuid4().hex
        now = time.time()
        self.created_at = now
        self.last_accessed_at = now
        #: Serialises executions, like Azure's one-websocket-per-session proxy.
        self.lock = asyncio.Lock()
        self.running_msg_id: str | None = None
        #: The running cell sent an input_request that has no answer yet.
        self.waiting_input = False
        self.executions: OrderedDict[str, wire.Execution] = OrderedDict()
        self.closed = False
        #: Reads iopub while no execution runs (see SessionManager._drain).
        self.drain_task: asyncio.Task[None] | None = None
        #: What the kernel published outside the request that caused it (a thread, a widget
        #: callback): kept, numbered, for the ``comms`` extension's events route.
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self.events_next = 1
        self.events_size = 0
        self.events_changed = asyncio.Event()

    def touch(self) -> None:
        self.last_accessed_at = time.time()

    def expires_at(self, cooldown: float) -> float:
        return self.last_accessed_at + cooldown

    def info(self, cooldown: float) -> wire.Session:
        t = lambda s: _dt.datetime.fromtimestamp(s, _dt.timezone.utc)  # noqa: E731
        return wire.Session(self.identifier, t(self.created_at), t(self.last_accessed_at), t(self.expires_at(cooldown)), self.etag)


class SessionManager:
    """Owns every session of the pool.

    Created once by the server with a launcher and a :class:`PoolConfig`;
    :meth:`start` begins warm-pool filling and idle expiry, :meth:`close`
    ends every sandbox.
    """

    def __init__(self, launcher: Launcher, config: PoolConfig | None = None) -> None:
        self.launcher = launcher
        self.config = config or PoolConfig()
        self.sessions: dict[str, PoolSession] = {}
        self._ready: list[tuple[Sandbox, AsyncKernelClient]] = []
        self._starting = 0  # sandboxes being started, for the ready pool and for waiting claims
        self._starting_for_claims = 0  # of which started without preload, for claims that wait
        #: Claims (new identifiers) waiting for a sandbox, oldest first.
        self._waiting: collections.deque[asyncio.Future[tuple[Sandbox, AsyncKernelClient]]] = collections.deque()
        self._start_slots = asyncio.Semaphore(self.config.parallel_starts)
        self._start_tasks: set[asyncio.Task[None]] = set()
        self._creating: dict[str, asyncio.Future[PoolSession]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._refill = asyncio.Event()
        self._closed = False
        # One ZeroMQ context for every kernel client, with receive limits: a
        # session's kernel can publish without being asked (a thread printing
        # after its cell ended), and without a bound those messages queue up in
        # this server. At most IOPUB_HWM messages wait per session, and a single
        # message larger than the output cap is refused by the transport.
        self._zmq = zmq.asyncio.Context()
        self._zmq.setsockopt(zmq.RCVHWM, IOPUB_HWM)
        self._zmq.setsockopt(zmq.MAXMSGSIZE, self.config.output_cap + (1 << 20))
        self.last_start_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start background work. Called by the server once its event loop runs."""
        self._tasks.append(asyncio.create_task(self._keep_warm(), name="warm-pool"))
        self._tasks.append(asyncio.create_task(self._expire_idle(), name="idle-expiry"))
        self._refill.set()

    async def close(self) -> None:
        """End every session and ready sandbox. Called by the server on shutdown."""
        self._closed = True
        starts = list(self._start_tasks)
        for task in [*self._tasks, *starts]:
            task.cancel()
        for task in [*self._tasks, *starts]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_waiting(SandboxError("the pool is shutting down"), every=True)
        ready, self._ready = self._ready, []
        sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:  # as delete() does: no drain may read a closed channel
            s.closed = True
            await self._stop_drain(s)
        await asyncio.gather(
            *(self._dispose(sb, kc) for sb, kc in ready),
            *(self._dispose(s.sandbox, s.kc) for s in sessions),
            return_exceptions=True,
        )
        await self.launcher.close()
        self._zmq.destroy(linger=0)

    # ------------------------------------------------------------------ warm pool

    async def _new_sandbox(self, preload: tuple[str, ...] = ()) -> tuple[Sandbox, AsyncKernelClient]:
        sandbox = await self.launcher.start()
        kc = AsyncKernelClient(context=self._zmq)
        kc.load_connection_info(sandbox.connection_info)
        # No heartbeat channel: it is a thread per session here, and jupyter_client's
        # wait_for_ready declares a kernel dead when its heartbeat is late, which
        # under a burst of starts on a small machine is merely slow. The sandbox's
        # process tells life from death instead.
        kc.start_channels(hb=False)
        try:
            await self._wait_for_kernel_info(kc, sandbox)
            # A fresh ipykernel's first execute is slow (compiler, AST and
            # display machinery load lazily); pay that here, not in the user's cell.
            await self._quiet_execute(kc, _WARM_UP, sandbox)
            if preload:
                await self._preload(kc, sandbox, preload)
        except BaseException as exc:
            reason = sandbox.death_reason() if not sandbox.is_alive() else None
            await self._dispose(sandbox, kc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SandboxError(f"The session's kernel did not start: {reason or exc}") from exc
        return sandbox, kc

    async def _wait_for_kernel_info(self, kc: AsyncKernelClient, sandbox: Sandbox) -> None:
        deadline = time.monotonic() + self.config.kernel_ready_timeout
        while True:
            msg_id = kc.kernel_info()
            with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                while True:
                    r = await kc.get_shell_msg(timeout=1.0)
                    if r.get("parent_header", {}).get("msg_id") == msg_id:
                        break
                break
            if not sandbox.is_alive():
                raise SandboxError(sandbox.death_reason() or "the kernel exited before answering kernel_info")
            if time.monotonic() > deadline:
                raise SandboxError(f"the kernel did not answer kernel_info within {self.config.kernel_ready_timeout:.0f} s")
        # The start-up status messages are nobody's; drop them.
        with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
            while True:
                await kc.get_iopub_msg(timeout=0.2)

    async def _quiet_execute(self, kc: AsyncKernelClient, code: str, sandbox: Sandbox) -> dict[str, Any]:
        """Run ``code`` silently (no execution count, history, ``_`` or outputs); the reply content.

        Drains the request's iopub messages up to ``idle`` so that the first
        user execution reads only its own.
        """
        msg = kc.session.msg("execute_request", {"code": code, "silent": True, "store_history": False,
                                                  "user_expressions": {}, "allow_stdin": False, "stop_on_error": False})
        kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        deadline = time.monotonic() + self.config.kernel_ready_timeout
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            if time.monotonic() > deadline:
                raise SandboxError(f"the session's kernel did not finish its warm-up within {self.config.kernel_ready_timeout:.0f} s")
            if not sandbox.is_alive():
                raise SandboxError(sandbox.death_reason() or "the kernel exited during its warm-up")
            with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                if reply is None:
                    r = await kc.get_shell_msg(timeout=0.2)
                    if r.get("parent_header", {}).get("msg_id") == msg_id:
                        reply = r["content"]
                    continue
                m = await kc.get_iopub_msg(timeout=0.2)
                if (m.get("parent_header", {}).get("msg_id") == msg_id and m["header"]["msg_type"] == "status"
                        and m["content"].get("execution_state") == "idle"):
                    idle = True
        return reply

    async def _preload(self, kc: AsyncKernelClient, sandbox: Sandbox, modules: tuple[str, ...]) -> None:
        # importlib, not `import`: the modules land in sys.modules only, so the
        # user's namespace stays as empty as a fresh session's.
        code = "".join(f"__import__('importlib').import_module({m!r})\n" for m in modules)
        reply = await self._quiet_execute(kc, code, sandbox)
        if reply.get("status") != "ok":
            # Best effort: a session without the preload is slower, not wrong.
            log.warning("preloading %s failed in a ready session: %s: %s", ", ".join(modules), reply.get("ename"), reply.get("evalue"))

    async def _keep_warm(self) -> None:
        """Start sandboxes, up to ``parallel_starts`` at once, until every waiting claim has one and
        the ready pool is at its target. Woken by :attr:`_refill` (claims, deletions, finished starts)."""
        while not self._closed:
            await self._refill.wait()
            self._refill.clear()
            for_claims, for_ready = self._wanted()
            for preload in [False] * for_claims + [True] * for_ready:
                self._starting += 1
                self._starting_for_claims += not preload
                task = asyncio.create_task(self._start_one(preload), name="sandbox-start")
                self._start_tasks.add(task)
                task.add_done_callback(self._start_tasks.discard)

    def _wanted(self) -> tuple[int, int]:
        """Sandboxes to start now: bare ones for waiting claims, then preloaded ones for the ready pool
        (only once no claim waits: during a burst every start serves a user who is waiting)."""
        if self._waiting:
            return max(0, len(self._waiting) - self._starting_for_claims), 0
        room = self.config.max_sessions - len(self.sessions)
        target = min(self.config.ready_sessions, max(0, room))
        return 0, max(0, target - len(self._ready) - self._starting)

    async def _start_one(self, preload: bool) -> None:
        """Start one sandbox (waiting for a start slot) and hand it to the oldest waiting claim, or keep it ready.

        A waiting claim gets whichever sandbox is ready first; one started for
        a claim skips the preload, since its user is waiting now.
        """
        try:
            async with self._start_slots:
                pair = await self._new_sandbox(self.config.preload if preload else ())
        except Exception as exc:  # keep serving; the oldest waiting claim gets the error (503)
            self.last_start_error = str(exc)
            log.error("could not start a sandbox: %s", exc)
            self._fail_waiting(exc if isinstance(exc, SandboxError) else SandboxError(str(exc)))
            await asyncio.sleep(2.0)
            return
        finally:
            self._starting -= 1
            self._starting_for_claims -= not preload
            self._refill.set()
        self.last_start_error = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(pair)
                return
        self._ready.append(pair)

    def _fail_waiting(self, exc: SandboxError, every: bool = False) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
                if not every:
                    return

    async def _claim_sandbox(self) -> tuple[Sandbox, AsyncKernelClient]:
        """A started sandbox for a new session: a ready one, else the next one to finish starting.

        Raises :class:`SandboxError` when the start made for this claim failed.
        """
        while True:
            if self._ready:
                sandbox, kc = self._ready.pop(0)
                if not sandbox.is_alive():
                    await self._dispose(sandbox, kc)
                    continue
                asyncio.get_running_loop().call_later(self.config.refill_delay, self._refill.set)
                return sandbox, kc
            waiter: asyncio.Future[tuple[Sandbox, AsyncKernelClient]] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            self._refill.set()
            try:
                sandbox, kc = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._ready.append(waiter.result())  # handed over just as the request went away
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            if sandbox.is_alive():
                return sandbox, kc
            await self._dispose(sandbox, kc)

    async def _dispose(self, sandbox: Sandbox, kc: AsyncKernelClient | None) -> None:
        if kc is not None:
            with contextlib.suppress(Exception):
                kc.stop_channels()
        try:
            await sandbox.kill()
        except Exception:  # never let cleanup errors break the caller
            log.exception("killing a sandbox failed")

    # ------------------------------------------------------------------ sessions

    def find(self, identifier: str) -> PoolSession | None:
        """The live session of ``identifier``, or ``None``. Does not create one."""
        s = self.sessions.get(identifier)
        return s if s is not None and not s.closed else None

    async def get_or_create(self, identifier: str) -> PoolSession:
        """The session of ``identifier``, allocating one from the warm pool if new.

        Raises :class:`SessionPoolFull` (429) when ``max_sessions``
        sessions exist (with ``Retry-After``), :class:`SessionCreationFailed` (503) when no sandbox can start.
        """
        s = self.find(identifier)
        if s is not None:
            s.touch()
            return s
        pending = self._creating.get(identifier)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self.sessions) + len(self._creating) >= self.config.max_sessions:
            raise SessionPoolFull(
                f"The pool is at its maximum of {self.config.max_sessions} sessions; no more sessions can be "
                "allocated until one is deleted or expires.",
                retry_after=5,
            )
        future: asyncio.Future[PoolSession] = asyncio.get_running_loop().create_future()
        self._creating[identifier] = future
        try:
            sandbox, kc = await self._claim_sandbox()
            s = PoolSession(identifier, sandbox, kc, self.config.keep_events)
            self.sessions[identifier] = s
            self._start_drain(s)
            future.set_result(s)
            log.info("session %s allocated (%d active)", _short(identifier), len(self.sessions))
            return s
        except SandboxError as exc:
            err = SessionCreationFailed(f"No session could be started: {exc}", retry_after=5)
            future.set_exception(err)
            raise err from exc
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            self._creating.pop(identifier, None)
            if future.done() and not future.cancelled():
                future.exception()  # mark it retrieved: no "never retrieved" warning when nobody else waited

    async def delete(self, identifier: str) -> bool:
        """End a session and everything it ran. ``False`` if there was none."""
        s = self.sessions.pop(identifier, None)
        if s is None:
            return False
        s.closed = True
        await self._stop_drain(s)
        await self._dispose(s.sandbox, s.kc)
        self._refill.set()
        log.info("session %s deleted (%d active)", _short(identifier), len(self.sessions))
        return True

    async def _expire_idle(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(1.0, max(0.05, self.config.cooldown / 10)))
            now = time.time()
            for s in list(self.sessions.values()):
                if not s.lock.locked() and s.expires_at(self.config.cooldown) <= now:
                    log.info("session %s expired after %.0f s idle", _short(s.identifier), self.config.cooldown)
                    await self.delete(s.identifier)

    # ------------------------------------------------------------------ idle iopub

    def _start_drain(self, s: PoolSession) -> None:
        """Read and drop iopub while no execution runs (idempotent).

        Whatever a session publishes between executions is nobody's output;
        reading it keeps the receive queue (bounded by IOPUB_HWM) empty.
        Status messages of completion and inspection requests end here too.
        """
        if s.closed or (s.drain_task is not None and not s.drain_task.done()):
            return
        s.drain_task = asyncio.create_task(self._drain(s), name="iopub-drain")

    async def _stop_drain(self, s: PoolSession) -> None:
        task, s.drain_task = s.drain_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _drain(s: PoolSession) -> None:
        while not s.closed:
            with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                _keep_event(s, await s.kc.get_iopub_msg(timeout=1.0))

    async def events(self, s: PoolSession, after: int, wait: float) -> tuple[list[dict[str, Any]], int]:
        """What the session published outside requests, after event ``after``; waits up to ``wait`` s.

        Events up to ``after`` are forgotten (the caller has them). Does not
        take the session lock and does not count as activity for the idle cooldown.
        """
        while s.events and s.events[0]["seq"] <= after:
            s.events_size -= s.events.popleft()["size"]
        if not s.events and wait > 0:
            s.events_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(s.events_changed.wait(), wait)
        return [{k: v for k, v in e.items() if k != "size"} for e in s.events if e["seq"] > after], s.events_next - 1

    async def comm(self, s: PoolSession, msg: wire.CommMessage) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Deliver a frontend's comm message to the session's kernel, under the frontend's msg_id.

        Returns what the kernel published under it until it was idle (comm
        messages, streams, displays; each as an event without ``seq``) and, for
        ``comm_info_request``, the reply content. Runs under the session lock,
        like an execution: the kernel handles one request at a time.
        """
        outputs: list[dict[str, Any]] = []
        reply: dict[str, Any] | None = None
        async with s.lock:
            s.touch()
            await self._stop_drain(s)
            try:
                kc = s.kc
                request = kc.session.msg(msg.msg_type, dict(msg.content), metadata=dict(msg.metadata))
                request["header"]["msg_id"] = request["msg_id"] = msg.msg_id
                request["buffers"] = list(msg.buffers)
                kc.shell_channel.send(request)
                wants_reply = msg.msg_type == "comm_info_request"
                idle = False
                deadline = time.monotonic() + COMM_TIMEOUT
                while (not idle or (wants_reply and reply is None)) and time.monotonic() < deadline:
                    if s.closed or not s.sandbox.is_alive():
                        raise SessionNotFound("The session ended while it handled the comm message.")
                    with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                        m = await kc.get_iopub_msg(timeout=0.05)
                        if m.get("parent_header", {}).get("msg_id") != msg.msg_id:
                            _keep_event(s, m)
                        elif m["header"]["msg_type"] == "status":
                            idle = m["content"].get("execution_state") == "idle"
                        elif m["header"]["msg_type"] in wire.STREAM_MSG_TYPES | wire.COMM_MSG_TYPES:
                            outputs.append(_event_of(m))
                    if wants_reply and reply is None:
                        with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                            r = await kc.get_shell_msg(timeout=0)
                            if r.get("parent_header", {}).get("msg_id") == msg.msg_id:
                                reply = dict(r["content"])
            finally:
                s.touch()
                self._start_drain(s)
        return outputs, reply

    # ------------------------------------------------------------------ executions

    async def execute(
        self,
        s: PoolSession,
        req: wire.ExecutionRequest,
        *,
        on_event: EventSink | None = None,
        execution_id: str | None = None,
    ) -> wire.Execution:
        """Run ``req`` in session ``s`` and return its Azure-shaped outcome.

        ``on_event`` receives every iopub output message as it arrives (the
        stream extension). On timeout the kernel is interrupted; if it does
        not answer within ``interrupt_grace`` the session is killed and
        removed, and the outcome says so.
        """
        execution, _ = await self._execute(s, req, None, on_event, execution_id)
        return execution

    async def execute_cell(
        self, s: PoolSession, req: wire.ExecutionRequest, cell: wire.JupyterCell, *, on_event: EventSink | None = None
    ) -> tuple[wire.Execution, dict[str, Any] | None]:
        """:meth:`execute` as the notebook cell ``cell`` (the ``jupyter-cells`` extension).

        Also returns the session kernel's ``execute_reply`` content (``None``
        when the kernel never answered: crash, kill after a timeout).
        """
        return await self._execute(s, req, cell, on_event, None)

    async def _execute(
        self,
        s: PoolSession,
        req: wire.ExecutionRequest,
        cell: wire.JupyterCell | None,
        on_event: EventSink | None,
        execution_id: str | None,
    ) -> tuple[wire.Execution, dict[str, Any] | None]:
        execution_id = execution_id or str(uuid.uuid4())
        started = time.monotonic()
        async with s.lock:
            s.touch()
            await self._stop_drain(s)
            try:
                if s.closed:
                    raise _SessionGone("The session was deleted while this execution waited for it; the code did not run.")
                if not s.sandbox.is_alive():
                    raise _SessionGone(self._crash_message(s, during=False))
                try:
                    outcome = await self._run(s, req, cell, on_event)
                except BaseException:
                    if not _deleted_under(s):
                        raise
                    # DELETE session (or expiry) closed the kernel's channels under this execution.
                    return self._finish(s, req, execution_id, started, _Collected(), None, error=("SessionDeleted", (
                        "The session was deleted while this code ran: its variables and files are gone, and the next "
                        "execution runs in a fresh session."))), None  # fmt: skip
            except _SessionGone as gone:
                if self.sessions.get(s.identifier) is s:  # not a new session under the same identifier
                    await self.delete(s.identifier)
                return self._finish(s, req, execution_id, started, _Collected(), None, error=("SessionCrashed", str(gone))), None
            finally:
                s.running_msg_id = None
                s.touch()
                self._start_drain(s)
        collected, reply, error = outcome
        return self._finish(s, req, execution_id, started, collected, reply, error=error), reply

    async def _run(
        self, s: PoolSession, req: wire.ExecutionRequest, cell: wire.JupyterCell | None, on_event: EventSink | None
    ) -> tuple[_Collected, dict[str, Any] | None, tuple[str, str] | None]:
        kc = s.kc
        as_cell = cell or wire.JupyterCell()  # a plain execution: what the Azure routes always did
        msg = kc.session.msg(
            "execute_request",
            {
                "code": req.code,
                "silent": as_cell.silent,
                "store_history": as_cell.store_history,
                "user_expressions": dict(as_cell.user_expressions),
                "allow_stdin": as_cell.allow_stdin and on_event is not None,
                "stop_on_error": False,
            },
        )
        # Read by the runner (pool/runner/session_kernel.py): strings as repr
        # (returnJupyterFormatExecutionResult); for a notebook cell, its count
        # and no Azure result (the notebook has the outputs themselves).
        options: dict[str, Any] = {"jupyter_format": req.return_jupyter_format}
        if cell is not None:
            options.update(execution_count=cell.execution_count, result=False)
        if cell is not None and cell.msg_id:
            # The notebook's own id: what the session publishes later names this cell.
            msg["header"]["msg_id"] = msg["msg_id"] = cell.msg_id
        msg["metadata"]["azure_sessions"] = options
        kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        s.running_msg_id = msg_id
        collected = _Collected()
        # A notebook cell's own timeout (extension route) is not capped at Azure's 220 s; 0: none.
        limit = float(req.timeout_in_seconds) if cell is None or cell.timeout is None else cell.timeout
        deadline = time.monotonic() + limit if limit > 0 else float("inf")
        s.waiting_input = False
        reply: dict[str, Any] | None = None
        reply_at = 0.0
        idle = False
        interrupted_at: float | None = None

        while not (idle and reply is not None):
            now = time.monotonic()
            if reply is not None and now > reply_at + IDLE_AFTER_REPLY:
                # The transport dropped messages (an oversized one, or a flood past
                # the receive limit), the final 'idle' among them: end here.
                cap = self.config.output_cap // 2**20
                note = {"name": "stderr", "text": f"\n[output truncated: some output of this execution was larger than the {cap} MiB the pool accepts and was dropped]\n"}
                collected.events.append(("stream", note))
                if on_event is not None:
                    r = on_event("stream", note)
                    if asyncio.iscoroutine(r):
                        await r
                break
            if interrupted_at is None and now >= deadline:
                await self.interrupt(s)
                interrupted_at = now
            wait = min(0.2, max(0.01, (interrupted_at or deadline) - now + 0.01))
            if as_cell.allow_stdin and on_event is not None:
                wait = min(wait, 0.05)  # an input_request must not wait behind a quiet iopub
            got_any = False
            if not idle:
                with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                    m = await kc.get_iopub_msg(timeout=wait)
                    got_any = True
                    if m.get("parent_header", {}).get("msg_id") == msg_id:
                        mt = m["header"]["msg_type"]
                        if mt == "status" and m["content"].get("execution_state") == "idle":
                            idle = True
                        elif mt in wire.STREAM_MSG_TYPES:
                            was_truncated = collected.truncated
                            self._collect(collected, mt, m["content"])
                            if on_event is not None and (not collected.truncated or not was_truncated):
                                # Past the cap, only the truncation notice goes out, once.
                                relayed_type, relayed = (mt, m["content"]) if not collected.truncated else collected.events[-1]
                                r = on_event(relayed_type, relayed)
                                if asyncio.iscoroutine(r):
                                    await r
                        elif mt in wire.COMM_MSG_TYPES and on_event is not None and cell is not None:
                            event = _event_of(m)
                            r = on_event(mt, m["content"], {"metadata": event["metadata"], "buffers": event["buffers"]})
                            if asyncio.iscoroutine(r):
                                await r
                    else:  # an earlier cell's thread, a widget: the events route hands it out
                        _keep_event(s, m)
            if as_cell.allow_stdin and on_event is not None and not idle:
                with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                    m = await kc.get_stdin_msg(timeout=0)
                    got_any = True
                    if m.get("parent_header", {}).get("msg_id") == msg_id and m["header"]["msg_type"] == "input_request":
                        s.waiting_input = True
                        r = on_event("input_request", m["content"])
                        if asyncio.iscoroutine(r):
                            await r
            if reply is None:
                # Once idle, the reply is all that is left: block on it instead of iopub. Read what is queued: a
                # late reply to an earlier request (a completion that timed out) may stand before this one.
                with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                    while reply is None:
                        r = await kc.get_shell_msg(timeout=wait if idle else 0)
                        got_any = True
                        if r.get("parent_header", {}).get("msg_id") == msg_id:
                            reply, reply_at = r["content"], time.monotonic()
            if reply is None and interrupted_at is not None and now >= interrupted_at + self.config.interrupt_grace:
                # User code ignored SIGINT: the only way out is to end the session. Decided after reading shell:
                # with the reply in, the kernel did stop, and a flood's iopub backlog is bounded by IDLE_AFTER_REPLY.
                await self.delete(s.identifier)
                return collected, None, ("Timeout", f"The execution exceeded its timeout of {limit:g} s and did not stop when interrupted; the session was ended and its state lost.")
            if not got_any and not s.sandbox.is_alive():
                raise _SessionGone(self._crash_message(s, during=True))
        if interrupted_at is not None:
            return collected, reply, ("Timeout", f"The execution exceeded its timeout of {limit:g} s and was interrupted; the session's state was kept.")
        return collected, reply, None

    def _collect(self, c: _Collected, msg_type: str, content: dict[str, Any]) -> None:
        if c.truncated:
            return
        size = len(str(content))
        if c.size + size > self.config.output_cap:
            c.truncated = True
            note = f"\n[output truncated: this execution produced more than {self.config.output_cap // 1024} KiB of output]\n"
            c.events.append(("stream", {"name": "stderr", "text": note}))
            return
        c.size += size
        c.events.append((msg_type, content))

    def _crash_message(self, s: PoolSession, *, during: bool) -> str:
        """One sentence for a dead interpreter; says whether this execution's code ran."""
        reason = s.sandbox.death_reason() or "its Python process exited"
        when = "while running this code" if during else "before this execution, so the code did not run"
        return (f"The session's Python interpreter died {when}: {reason}. Its variables and files are lost; "
                "the session was restarted and the next execution runs in a fresh one.")

    def _finish(
        self,
        s: PoolSession,
        req: wire.ExecutionRequest,
        execution_id: str,
        started: float,
        collected: _Collected,
        reply: dict[str, Any] | None,
        *,
        error: tuple[str, str] | None,
    ) -> wire.Execution:
        stdout, stderr, images, text_result = [], [], [], None
        for mt, content in collected.events:
            if mt == "stream":
                (stdout if content.get("name") == "stdout" else stderr).append(content.get("text", ""))
            elif mt in ("display_data", "update_display_data"):
                png = content.get("data", {}).get("image/png")
                if isinstance(png, str):
                    images.append(png)
            elif mt == "execute_result":
                text_result = content.get("data", {}).get("text/plain")
                png = content.get("data", {}).get("image/png")
                if isinstance(png, str):
                    images.append(png)
            elif mt == "error":
                tb = "\n".join(content.get("traceback") or [])
                stderr.append(_ANSI.sub("", tb or f"{content.get('ename')}: {content.get('evalue')}") + "\n")
        failed = error is not None or (reply is not None and reply.get("status") != "ok")
        if error is not None:
            stderr.append(error[1] + "\n")
        result: Any = ""
        info = (reply or {}).get("azure_sessions") or {}
        kind = info.get("kind")
        if not failed:
            if kind == "json":
                result = info.get("value")
            elif images:
                result = wire.ImageResult("png", images[0]).to_json()
            elif kind == "text" and text_result is not None:
                result = text_result
            elif kind == "none":
                result = None
        out, err = "".join(stdout), "".join(stderr)
        if req.output_streams_max_length is not None:
            out, err = out[: req.output_streams_max_length], err[: req.output_streams_max_length]
        err_info = None
        if error is not None:
            err_info = wire.ErrorInfo(error[0], error[1])
        elif failed and reply is not None:
            err_info = wire.ErrorInfo(str(reply.get("ename") or "ExecutionError"), str(reply.get("evalue") or ""))
        ex = wire.Execution(
            status=wire.ExecutionStatus.FAILED if failed else wire.ExecutionStatus.SUCCEEDED,
            stdout=out,
            stderr=err,
            result=result,
            duration_ms=int((time.monotonic() - started) * 1000),
            id=execution_id,
            identifier=s.identifier,
            asynchronous=req.asynchronous,
            error=err_info,
        )
        self._remember(s, ex)
        return ex

    def _remember(self, s: PoolSession, ex: wire.Execution) -> None:
        if ex.id is None:
            return
        s.executions[ex.id] = ex
        s.executions.move_to_end(ex.id)
        while len(s.executions) > self.config.executions_kept:
            s.executions.popitem(last=False)

    def start_async(self, s: PoolSession, req: wire.ExecutionRequest) -> wire.Execution:
        """Begin an asynchronous execution; poll it with :meth:`get_execution`."""
        execution_id = str(uuid.uuid4())
        running = wire.Execution(status=wire.ExecutionStatus.RUNNING, id=execution_id, identifier=s.identifier, asynchronous=True)
        self._remember(s, running)
        task = asyncio.create_task(self.execute(s, req, execution_id=execution_id))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        return running

    def get_execution(self, s: PoolSession, execution_id: str) -> wire.Execution | None:
        return s.executions.get(execution_id)

    async def send_input(self, s: PoolSession, value: str) -> None:
        """Answer the ``input()`` the running cell waits in (the ``stdin`` extension).

        Raises :class:`NoInputRequested` (409) when no cell of the session waits for input.
        Does not take the session lock: the cell that waits holds it.
        """
        if s.running_msg_id is None or not s.waiting_input:
            raise NoInputRequested("No cell of this session is waiting for input.")
        s.waiting_input = False
        s.kc.input(value)

    async def interrupt(self, s: PoolSession) -> bool:
        """Send ``interrupt_request`` on the control channel (KeyboardInterrupt inside; state kept).

        Returns whether an execution was running. Does not take the session
        lock: it must reach a session that is busy.
        """
        running = s.running_msg_id is not None
        if running:
            s.kc.control_channel.send(s.kc.session.msg("interrupt_request", {}))
        return running

    async def kernel_request(self, s: PoolSession, msg_type: str, content: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """``complete_request``/``inspect_request`` to the session's kernel; the reply content.

        Called by the ``.local/complete`` and ``.local/inspect`` routes. Runs
        under the session lock so that shell replies are not read by an
        execution; a busy session answers once its execution ends. When the
        session is deleted (or expires) meanwhile, raises
        :class:`SessionNotFound`: :meth:`delete` stops the kernel client
        under this read without taking the lock.
        """
        async with s.lock:
            try:
                return await self._kernel_request(s, msg_type, content, timeout)
            except BaseException:
                if not _deleted_under(s):
                    raise
        raise SessionNotFound(f"The session with identifier '{s.identifier}' was deleted before its kernel answered {msg_type}.")

    async def _kernel_request(self, s: PoolSession, msg_type: str, content: dict[str, Any], timeout: float) -> dict[str, Any]:
        if s.closed:
            raise _SessionGone()
        s.touch()
        msg = s.kc.session.msg(msg_type, content)
        s.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelTimeout(f"The session's kernel did not answer {msg_type} within {timeout:.0f} s.")
            with contextlib.suppress(queue.Empty, asyncio.TimeoutError):
                r = await s.kc.get_shell_msg(timeout=min(left, 0.5))
                if r.get("parent_header", {}).get("msg_id") == msg_id:
                    return dict(r["content"])

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        return {
            "activeSessions": len(self.sessions),
            "readySessions": len(self._ready),
            "startingSessions": self._starting,
            "maxSessions": self.config.max_sessions,
        }


class _SessionGone(Exception):
    """The session's kernel died or the session was deleted under an execution."""


def _deleted_under(s: PoolSession) -> bool:
    """Whether the error being handled came from :meth:`SessionManager.delete` stopping the
    session's kernel client under a read (CancelledError or AssertionError from the channel),
    rather than from this request being cancelled."""
    task = asyncio.current_task()
    return s.closed and not (task is not None and task.cancelling())


def _short(identifier: str) -> str:
    # Identifiers are secrets (reference §7): log only a prefix.
    return identifier[:6] + "…" if len(identifier) > 6 else identifier


def _event_of(m: dict[str, Any]) -> dict[str, Any]:
    """An iopub message as the comms extension hands it out (buffers base64)."""
    return {
        "msgType": m["header"]["msg_type"],
        "content": m["content"],
        "metadata": m.get("metadata") or {},
        "buffers": [base64.b64encode(bytes(b)).decode("ascii") for b in m.get("buffers") or ()],
        "parentMsgId": (m.get("parent_header") or {}).get("msg_id"),
    }


def _keep_event(s: PoolSession, m: dict[str, Any]) -> None:
    """Keep an output the session published outside a request (bounded); drop everything else."""
    if not s.keep_events or m["header"]["msg_type"] not in wire.STREAM_MSG_TYPES | wire.COMM_MSG_TYPES:
        return
    event = _event_of(m)
    size = len(str(event["content"])) + sum(len(b) for b in event["buffers"])
    if len(s.events) >= EVENTS_KEPT or s.events_size + size > EVENTS_BYTES:
        return
    event["seq"], event["size"] = s.events_next, size
    s.events_next += 1
    s.events_size += size
    s.events.append(event)
    s.events_changed.set()
