"""``AzureSessionsKernel``: an IPython kernel whose cells run in a remote session.

ipykernel keeps the protocol (sockets, message parsing, ``execute_input``,
busy/idle, history, ``is_complete`` by IPython's rules, comm plumbing); this
class overrides only the ``do_*`` hooks whose meaning changes when code runs
elsewhere. Its own IPython shell runs nothing but the magics of
:mod:`._magics`; everything else goes to the session through
:class:`._remote.RemoteSession`.

Interrupts: ``interrupt_mode`` is ``message`` (see ``kernelspec/kernel.json``).
ipykernel answers an ``interrupt_request`` by sending SIGINT to its own
process; while a cell waits for the session, :meth:`_sigint_sets` turns that
SIGINT into an :class:`asyncio.Event` instead of a ``KeyboardInterrupt``
thrown into the event loop, and the remote session decides what an interrupt
can do there: stop the run, through the local pool's interrupt extension or, on Azure, the
next poll of the long-poll channel.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from textwrap import dedent
from typing import Any

from IPython.core.error import UsageError
from IPython.utils.tokenutil import line_at_cursor
from ipykernel.ipkernel import IPythonKernel
from ipykernel.iostream import OutStream
from ipykernel.kernelapp import IPKernelApp
from traitlets import Bool, Float, List, TraitError, Unicode, default, validate

from .. import __version__
from .._runtime import EgressListError, parse_egress
from ..wire import DEFAULT_API_VERSION
from ._identifiers import named_identifier, random_identifier
from ._lazy import client as sessions_client
from ._magics import MAGIC_NAMES, SessionMagicError, SessionMagics, magic_errors, needs_connection, plan_cell, show_magic_error
from ._remote import BackendError, CellInterrupted, KernelSessionError, RemoteSession

#: Setting this environment variable selects an Azure session pool (the name Azure's samples use).
ENDPOINT_ENV = "AZURE_CONTAINER_APP_SESSION_POOL_MANAGEMENT_ENDPOINT"
_MAGIC_AT_START = re.compile(r"\s*%(\w+)")
#: Remote cells whose parent header is kept for output their threads print after they end.
CELL_PARENTS_KEPT = 64
#: While the session has comms (widgets) open and no cell runs, the kernel fetches what the
#: session publishes (a thread moving a progress bar, a widget callback) this often: on Azure
#: one short execute call per interval. It stops this long after the notebook's last cell or
#: widget message, so an idle notebook lets its session reach its idle cooldown.
BETWEEN_CELLS_EVERY = 1.0
BETWEEN_CELLS_FOR = 300.0


class AzureSessionsKernel(IPythonKernel):
    """Python 3 (Azure Sessions): every cell runs in an Azure Container Apps dynamic session or the local pool."""

    implementation = "azure_sessions_kernel"
    implementation_version = __version__

    # ipykernel sleeps 0.5 ms after every execution so that local stdout flushed
    # just before the reply gets out first. Remote outputs are published directly
    # (and local magics flush their output before returning): no need to wait.
    _execute_sleep = Float(0.0).tag(config=True)

    endpoint = Unicode(
        help=dedent(
            f"""
            Pool management endpoint of the Azure Container Apps session pool to run cells in,
            e.g. https://<region>.dynamicsessions.io/subscriptions/.../sessionPools/<pool>.
            Defaults to the environment variable {ENDPOINT_ENV}. When empty, cells run in the
            local session pool, which is started on demand (or reused when one is already
            running for this user) and stops when its last kernel ends.
            """
        ),
    ).tag(config=True)

    @default("endpoint")
    def _default_endpoint(self) -> str:
        return os.environ.get(ENDPOINT_ENV, "").strip()

    api_version = Unicode(
        DEFAULT_API_VERSION,
        help=dedent(
            """
            Data-plane api-version sent to the pool. The newest documented version is the
            default; older ones (down to 2024-02-02-preview) work with fewer features
            (no %session age, no recursive listings).
            """
        ),
    ).tag(config=True)

    token = Unicode(
        help=dedent(
            """
            A static bearer token for pools that use one. Empty means: the local pool's own
            token, or for Azure a Microsoft Entra token from azure-identity's
            DefaultAzureCredential (az login, managed identity, environment variables), which
            needs the "Azure ContainerApps Session Executor" role on the pool.
            """
        ),
    ).tag(config=True)

    session_id = Unicode(
        help=dedent(
            """
            The session identifier to use. Empty (the default) gives each kernel a random,
            unguessable identifier of its own. A session chosen here is never deleted at
            shutdown. Identifiers are secrets: whoever knows one can run code in the session.
            """
        ),
    ).tag(config=True)

    session_name = Unicode(
        help=dedent(
            """
            Use the named session NAME, as `%session use NAME` does: the identifier is derived
            from the name with a key private to this user, so the same name finds the same
            session again after a kernel restart. Named sessions are never deleted at shutdown.
            Takes precedence over session_id.
            """
        ),
    ).tag(config=True)

    execution_timeout = Float(
        None,
        allow_none=True,
        help=dedent(
            """
            Seconds one cell may run in the session before it is interrupted (its variables are
            kept) and reported as a TimeoutError; any positive number, or None (the default) for
            no timeout, as in any Jupyter kernel. On Azure no single execute call is long (cells
            run through the long-poll channel), so Azure's 220 s cap per call does not bound a
            cell. `%timeout SECONDS` and `%timeout off` change it from the notebook.
            """
        ),
    ).tag(config=True)

    @validate("execution_timeout")
    def _check_timeout(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is None:
            return None
        value = float(value)
        if not 0 < value < float("inf"):
            raise TraitError(f"execution_timeout must be a number of seconds more than 0 (or None for no timeout), got {value:g}.")
        return value

    delete_session_on_shutdown = Bool(
        True,
        help=dedent(
            """
            Delete the kernel's own session when the kernel shuts down or restarts, so that it
            stops holding a slot (and, on Azure, billing) until its idle cooldown ends. Sessions
            chosen with session_id, session_name or `%session use` are always kept.
            """
        ),
    ).tag(config=True)

    use_extensions = Bool(
        True,
        help=dedent(
            """
            Use the local pool's extensions beyond the Azure contract when it offers them: live
            output while a cell runs, interrupting a running cell, completion and inspection
            through the session kernel. Turn off to see exactly what a notebook gets on Azure.
            """
        ),
    ).tag(config=True)

    local_pool_args = List(
        Unicode(),
        help=dedent(
            """
            Extra `azure-sessions-kernel serve` options used when this kernel has to start the
            local pool, e.g. ["--azure-strict"] or ["--cooldown", "600"]. A pool that is already
            running is reused as it is.
            """
        ),
    ).tag(config=True)

    image = Unicode(
        help=dedent(
            """
            The session image of the local pool this kernel starts or joins: a name from
            `azure-sessions-kernel image list` (built with `azure-sessions-kernel image build
            --requirements FILE --name NAME`: the default packages plus FILE's), or an image
            directory. Empty means the default image. Kernels share one local pool per image, so
            a kernel never runs in another image than the one it names; an unknown name fails
            the first cell with the pool's error, naming the built images. Set it at install time
            with `azure-sessions-kernel install --image NAME`. Azure pools choose their own image:
            there it has no effect.
            """
        ),
    ).tag(config=True)

    egress = Unicode(
        help=dedent(
            """
            The hosts that sessions of the local pool this kernel starts or joins may reach,
            comma-separated: host names, `HOST:PORT`, `*.DOMAIN` for its subdomains, or an alias:
            `pypi` for the package index (so that `%pip install` works), `github`. Empty (or
            `none`) means no network, as on Azure. Kernels share one local pool per image and
            egress list, so a kernel never gets more or less network than it names. Set it at
            install time with `azure-sessions-kernel install --egress pypi`. On Azure the
            session pool's own network setting (EgressEnabled or EgressDisabled) decides: there
            it has no effect.
            """
        ),
    ).tag(config=True)

    @validate("egress")
    def _check_egress(self, proposal: Any) -> str:
        """Normalise ``egress`` as ``serve --egress`` reads it, so the same list finds the same pool.

        Traitlets calls this whenever ``egress`` is set: from the kernelspec's
        argv or a config file while the kernel is created. A bad list is kept
        as written: refusing it here would stop the kernel before it could say
        why (a frontend shows only "kernel died"), so the first cell fails
        instead, with the entry named, when the pool is looked up.
        """
        try:
            return ",".join(parse_egress(proposal["value"]))
        except EgressListError:
            return str(proposal["value"])

    def _pool_args(self) -> list[str]:
        """``local_pool_args`` plus ``--image`` and ``--egress`` when this kernel names them (the last ones count).

        Called once, by ``__init__``, for the options the kernel's remote
        session starts or looks up its local pool with.
        """
        return [
            *self.local_pool_args,
            *(["--image", self.image] if self.image else []),
            *(["--egress", self.egress] if self.egress else []),
        ]

    @property
    def banner(self) -> str:  # type: ignore[override]
        return (
            f"Python 3 (Azure Sessions) {__version__}: cells run in a remote session "
            f"({'Azure session pool' if self.endpoint else 'local session pool'}). "
            "%session shows where; %upload, %download and %files move files.\n"
        )

    @property
    def kernel_info(self) -> dict[str, Any]:
        info = super().kernel_info
        # A debugger would attach to this process, which runs only the magics.
        info["supported_features"] = [f for f in info.get("supported_features", []) if f != "debugger"]
        return info

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert self.shell is not None
        self.shell.register_magics(SessionMagics(self.shell, self))
        self._magic_errors_registered = False  # see _run_local
        #: The execute_request parent of recent remote cells, by cell id, for output
        #: a thread of a finished cell prints later (it goes to that cell).
        self._cell_parents: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        # Comm messages from the frontend go to the session's comms, not to this process's.
        for msg_type in ("comm_open", "comm_msg", "comm_close"):
            self.shell_handlers[msg_type] = self._relay_comm
        self._cell_running = False
        self._last_activity = time.monotonic()
        self._between_cells: asyncio.Future[None] | None = None
        self._warming_up = False  # see start
        self.remote = RemoteSession(
            endpoint=self.endpoint,
            token=self.token,
            api_version=self.api_version,
            identifier=self._initial_identifier(),
            use_extensions=self.use_extensions,
            local_pool_args=self._pool_args(),
            log=self.log,
        )

    def _initial_identifier(self) -> str:
        if self.session_name:
            return named_identifier(self.session_name)
        return self.session_id or random_identifier()

    @property
    def _owns_session(self) -> bool:
        """The session is this kernel's alone, so ending it with the kernel loses nothing."""
        return not (self.session_name or self.session_id)

    def start(self) -> None:
        super().start()
        # Connect and prepare the session while the user is still typing: right after the
        # frontend's first kernel_info_request (see there), or after a second at the latest.
        self.io_loop.call_later(1.0, self._begin_warm_up)

    async def kernel_info_request(self, stream: Any, ident: Any, parent: Any) -> None:  # type: ignore[override]
        # Answer first: frontends wait for this reply, then for iopub to go quiet
        # (~0.2 s with jupyter_client), which is when the warm-up's work is free.
        await super().kernel_info_request(stream, ident, parent)
        self._begin_warm_up()

    def _begin_warm_up(self) -> None:
        if not self._warming_up:
            self._warming_up = True
            self.io_loop.add_callback(self._warm_up)

    async def _warm_up(self) -> None:
        try:
            await self.remote.ensure_ready()
        except (KernelSessionError, sessions_client.SessionsError) as exc:
            self.log.warning("Could not prepare the session yet (the first cell will retry): %s", exc)
        except Exception:
            self.log.exception("Unexpected error while preparing the session")

    # -- execute ----------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: Any = None,
        cell_id: Any = None,
    ) -> dict[str, Any]:
        count = self.shell.execution_count
        try:
            plan = plan_cell(code)
        except SessionMagicError as exc:
            return self._finish(code, store_history, silent, self._fail("UsageError", str(exc), count), count)
        if needs_connection(plan.before + "\n" + plan.after):
            try:
                await self._connect_interruptibly()
            except KernelSessionError as exc:
                return self._finish(code, store_history, silent, self._fail(exc.ename, str(exc), count, exc.traceback), count)
        if not plan.remote:  # nothing for the session: ipykernel runs it as usual
            return await self._run_local(code, silent, store_history, user_expressions, allow_stdin, cell_meta, cell_id)
        if plan.before:
            reply = await self._run_local(plan.before, silent, False, {}, allow_stdin, cell_meta, cell_id)
            if reply["status"] != "ok":
                return self._finish(code, store_history, silent, reply, count)
        reply = await self._run_remote(plan.remote, count, silent, store_history, user_expressions, allow_stdin)
        if plan.after and reply["status"] == "ok":
            after = await self._run_local(plan.after, silent, False, {}, allow_stdin, cell_meta, cell_id)
            if after["status"] != "ok":
                reply = after
        return self._finish(code, store_history, silent, reply, count)

    async def _run_local(
        self,
        code: str,
        silent: bool,
        store_history: bool,
        user_expressions: dict[str, str] | None,
        allow_stdin: bool,
        cell_meta: Any,
        cell_id: Any,
    ) -> dict[str, Any]:
        if not self._magic_errors_registered:
            # Registered here rather than at start: naming the client's errors imports it.
            self.shell.set_custom_exc((*magic_errors(), UsageError), show_magic_error)
            self._magic_errors_registered = True
        reply = await super().do_execute(
            code, silent, store_history, user_expressions, allow_stdin, cell_meta=cell_meta, cell_id=cell_id
        )
        # Local prints are buffered by ipykernel; flush them before any remote output follows.
        sys.stdout.flush()
        sys.stderr.flush()
        return reply

    async def _run_remote(
        self, code: str, count: int, silent: bool, store_history: bool, user_expressions: dict[str, str] | None, allow_stdin: bool
    ) -> dict[str, Any]:
        interrupted = asyncio.Event()
        parent = self.get_parent("shell")
        cell_id = str(parent.get("header", {}).get("msg_id") or uuid.uuid4().hex)
        self._remember_parent(cell_id, parent)
        # ipykernel sets this in its own do_execute, which remote cells bypass.
        self._allow_stdin = allow_stdin
        self._cell_running = True
        self._last_activity = time.monotonic()
        try:
            with self._sigint_sets(interrupted):
                cell = await self.remote.run_cell(
                    code,
                    cell_id=cell_id,
                    execution_count=count,
                    timeout=self.execution_timeout,
                    emit=self._publish,
                    interrupted=interrupted,
                    silent=silent,
                    store_history=store_history,
                    user_expressions=user_expressions,
                    allow_stdin=allow_stdin,
                    ask_input=self._ask_input,
                )
        except KernelSessionError as exc:
            return self._fail(exc.ename, str(exc), count, exc.traceback)
        except Exception as exc:  # a reply must always go out, or the notebook hangs
            self.log.exception("Running a cell in the session failed")
            return self._fail(BackendError.ename, f"The kernel failed while running the cell: {exc!r}", count)
        finally:
            self._cell_running = False
            self._last_activity = time.monotonic()
            self._watch_between_cells()
        reply: dict[str, Any] = {"status": cell.status, "execution_count": count}
        if cell.status != "ok":
            reply.update(ename=cell.ename, evalue=cell.evalue, traceback=cell.traceback)
        reply.update(payload=cell.payload, user_expressions=cell.user_expressions)
        return reply

    async def _ask_input(self, prompt: str, password: bool) -> str:
        """The frontend's answer to an ``input()``/``getpass()`` of the session (stdin channel).

        Called by the remote session while a cell waits in ``input()``. Blocks
        this thread as ipykernel's own ``input()`` does; an interrupt raises
        ``KeyboardInterrupt`` here (the remote session then stops the cell).
        """
        saved = signal.signal(signal.SIGINT, signal.default_int_handler) if threading.current_thread() is threading.main_thread() else None
        try:
            return self.getpass(prompt) if password else self.raw_input(prompt)
        finally:
            if saved is not None:
                signal.signal(signal.SIGINT, saved)

    def _finish(self, code: str, store_history: bool, silent: bool, reply: dict[str, Any], count: int) -> dict[str, Any]:
        """Record the cell as IPython would: history and the next execution count."""
        if store_history and not silent:
            self.shell.history_manager.store_inputs(count, code, code)
            self.shell.execution_count = count + 1
        reply["execution_count"] = count
        reply.setdefault("payload", [])
        reply.setdefault("user_expressions", {})
        return reply

    def _publish(
        self, msg_type: str, content: dict[str, Any], cell_id: str | None = None, metadata: dict[str, Any] | None = None, buffers: list[str] | None = None
    ) -> None:
        """Publish a remote output under its own parent.

        Called by the remote session for every output. ``cell_id`` names the
        cell (or frontend comm message) it belongs to, which may be an earlier
        one (a thread it started); ``metadata`` and base64 ``buffers`` come with
        comm messages.
        """
        parent = self._cell_parents.get(cell_id) if cell_id is not None else None
        raw = [base64.b64decode(b) for b in buffers or ()]
        if parent is None:
            parent = self.get_parent("shell")
        self.session.send(self.iopub_socket, msg_type, content, parent, ident=self._topic(msg_type), metadata=metadata, buffers=raw or None)

    # -- comms (widgets): relayed to the session's comm manager ----------------------------------

    async def _relay_comm(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        """Shell handler of ``comm_open``/``comm_msg``/``comm_close``: the session's comms answer them."""
        header = parent["header"]
        self._remember_parent(header["msg_id"], parent)
        self._last_activity = time.monotonic()
        try:
            await self.remote.comm(
                header["msg_id"], header["msg_type"], dict(parent.get("content") or {}), dict(parent.get("metadata") or {}),
                list(parent.get("buffers") or ()), self._publish,
            )  # fmt: skip
        except KernelSessionError as exc:
            self._publish("error", {"ename": exc.ename, "evalue": str(exc), "traceback": [f"{exc.ename}: {exc}"]}, header["msg_id"])
        except Exception:  # a comm message has no reply to carry an error: log it, keep serving
            self.log.warning("Relaying %s to the session failed", header["msg_type"], exc_info=True)
        self._watch_between_cells()

    async def comm_info_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:  # type: ignore[override]
        """The session's comms (frontends rebuild widgets from them after a reload)."""
        reply: dict[str, Any] | None = None
        try:
            reply = await self.remote.comm(parent["header"]["msg_id"], "comm_info_request", dict(parent.get("content") or {}), {}, [], self._publish)
        except Exception as exc:
            self.log.info("comm_info_request: the session's comms are unknown (%s)", exc)
        self.session.send(stream, "comm_info_reply", reply or {"status": "ok", "comms": {}}, parent, ident)

    def _remember_parent(self, msg_id: str, parent: dict[str, Any]) -> None:
        self._cell_parents[msg_id] = parent
        while len(self._cell_parents) > CELL_PARENTS_KEPT:
            self._cell_parents.popitem(last=False)

    def _watch_between_cells(self) -> None:
        """While the session has comms open, fetch what it publishes between cells (a light poll)."""
        if self.remote.comms_open and (self._between_cells is None or self._between_cells.done()):
            self._between_cells = asyncio.ensure_future(self._poll_between_cells())

    async def _poll_between_cells(self) -> None:
        while self.remote.comms_open and time.monotonic() - self._last_activity < BETWEEN_CELLS_FOR:
            await asyncio.sleep(BETWEEN_CELLS_EVERY)
            if self._cell_running:
                continue
            try:
                await self.remote.between_cells(self._publish)
            except Exception as exc:  # the next cell reports a lost session; keep quiet here
                self.log.info("Polling the session between cells failed: %s", exc)
                return

    def _fail(self, ename: str, evalue: str, count: int, traceback: list[str] | None = None) -> dict[str, Any]:
        """Report a failure as IPython reports an exception: an ``error`` output and an error reply."""
        error = {"ename": ename, "evalue": evalue, "traceback": traceback or [f"{ename}: {evalue}"]}
        self._publish("error", error)
        return {"status": "error", "execution_count": count, **error, "payload": [], "user_expressions": {}}

    async def _connect_interruptibly(self) -> None:
        """Connect for our magics; the first connection may start the local pool, so let it be interrupted."""
        interrupted = asyncio.Event()
        with self._sigint_sets(interrupted):
            connect = asyncio.ensure_future(self.remote.connect())
            stop = asyncio.ensure_future(interrupted.wait())
            done, _ = await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
        if connect not in done:
            connect.cancel()  # the connection itself goes on (shielded) and serves the next cell
            raise CellInterrupted("Interrupted while connecting to the session pool; the cell did not run.")
        connect.result()

    @contextlib.contextmanager
    def _sigint_sets(self, event: asyncio.Event) -> Iterator[None]:
        """While a cell waits for the session, SIGINT sets ``event`` instead of raising.

        A KeyboardInterrupt raised inside the event loop would unwind the
        loop itself, not the awaiting cell.
        """
        if threading.current_thread() is not threading.main_thread():
            yield  # subshells cannot receive signals
            return
        loop = asyncio.get_running_loop()

        def on_sigint(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(event.set)

        saved = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, saved)

    # -- sessions (used by %session) --------------------------------------------------------

    def switch_session(self, name: str | None) -> None:
        """Use the named session ``name``, or a fresh one of the kernel's own for ``None``."""
        if self._owns_session:
            self._delete_session_quietly()
        self.session_name, self.session_id = name or "", ""
        self.remote.switch_to(named_identifier(name) if name else random_identifier())

    def delete_current_session(self) -> None:
        self.remote.sync_client().delete_session(self.remote.identifier)
        self.remote.forget_helper()

    def _delete_session_quietly(self) -> None:
        try:
            self.delete_current_session()
        except sessions_client.SessionsError as exc:
            self.log.info("Could not delete the previous session: %s", exc)

    # -- history ---------------------------------------------------------------------------------

    def do_history(self, hist_access_type: str, output: bool, raw: bool, session: int | None = None, **query: Any) -> dict[str, Any]:  # type: ignore[override]
        reply = super().do_history(hist_access_type, output, raw, session, **query)
        if hist_access_type == "range" and session and session > 0:
            # IPython labels lines of the running session with its alias 0; answer
            # with the session number the client asked for (as tail/search give it).
            reply["history"] = [(session if number == 0 else number, *rest) for number, *rest in reply["history"]]
        return reply

    # -- completion and inspection -----------------------------------------------------------

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:  # type: ignore[override]
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        line, _ = line_at_cursor(code, cursor_pos)
        word = line.lstrip().split(" ", 1)
        if word[0].startswith("%") and word[0][1:] in MAGIC_NAMES and len(word) > 1:
            return super().do_complete(code, cursor_pos)  # arguments of our magics: local paths
        reply = await self.remote.complete(code, cursor_pos)
        if reply is None:
            reply = {"status": "ok", "matches": [], "cursor_start": cursor_pos, "cursor_end": cursor_pos, "metadata": {}}
        if line.lstrip().startswith("%") and len(word) == 1:
            ours = [f"%{name}" for name in MAGIC_NAMES if f"%{name}".startswith(word[0])]
            reply["matches"] = ours + [m for m in reply["matches"] if m not in ours]
            if ours:
                reply["cursor_start"] = cursor_pos - len(word[0])
        return reply

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Any = ()) -> dict[str, Any]:  # type: ignore[override]
        line, offset = line_at_cursor(code, cursor_pos)
        magic = _MAGIC_AT_START.match(line)
        if magic and magic.group(1) in MAGIC_NAMES and cursor_pos - offset <= magic.end():
            return super().do_inspect(code, cursor_pos, detail_level, omit_sections)
        reply = await self.remote.inspect(code, cursor_pos, detail_level, tuple(omit_sections or ()))
        return reply or {"status": "ok", "data": {}, "metadata": {}, "found": False}

    # -- shutdown --------------------------------------------------------------------------------

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        if self._between_cells is not None:  # it belongs to the shell thread's loop
            self.io_loop.asyncio_loop.call_soon_threadsafe(self._between_cells.cancel)
        close = self.remote.close(delete=self.delete_session_on_shutdown and self._owns_session)
        shell_loop = self.io_loop.asyncio_loop
        if asyncio.get_running_loop() is shell_loop:
            await close
        else:
            # shutdown_request arrives on the control thread; the session's
            # HTTP client belongs to the shell thread's loop.
            try:
                await asyncio.wait_for(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(close, shell_loop)), 15)
            except Exception as exc:
                self.log.warning("Closing the session connection failed: %s", exc)
        return super().do_shutdown(restart)


class _OutStream(OutStream):
    """ipykernel's stdout/stderr, without the round trip to the IOPub thread when nothing is pending.

    ipykernel flushes both streams around every execution and each flush waits
    for the IOPub thread; this kernel's cells print nothing here (their output
    comes from the session), so those waits were pure latency.
    """

    def flush(self) -> None:
        try:
            with self._buffer_lock:
                pending = self._flush_pending or self._subprocess_flush_pending or any(b.tell() for b in self._buffers.values())
        except AttributeError:  # another ipykernel's internals: flush as it does
            pending = True
        if pending:
            super().flush()


class AzureSessionsKernelApp(IPKernelApp):
    """ipykernel's application, starting the kernel without subshells.

    Subshells (JEP 91) run a notebook's requests concurrently in this process,
    but its cells all run in the one remote session, which takes one execution
    at a time. Without them a request reaches the kernel without a hop between
    threads, and ``kernel_info`` does not promise concurrency the session cannot give.
    """

    @default("outstream_class")
    def _default_outstream_class(self) -> str:
        return f"{__name__}._OutStream"

    def init_sockets(self) -> None:
        super().init_sockets()
        self.shell_channel_thread = None
