"""The kernel that runs inside a session's sandbox.

Started by the pool's launchers (``pool/sandbox/bwrap.py``, ``pool/sandbox/insecure.py``) with
the session image's interpreter, by file path::

    <image>/bin/python session_kernel.py -f <connection file>

It imports nothing from ``azure_sessions_kernel`` (that package is not inside
the sandbox) and nothing that touches the network. It is an ordinary
ipykernel with the differences a remote code-interpreter session needs:

* the working directory is ``/mnt/data`` (``$AZURE_SESSIONS_DATA_DIR`` when
  the launcher runs it outside a sandbox), plots use the inline backend and
  the IPython history database is off;
* ``input()`` and ``getpass()`` raise at once, saying that remote sessions have
  no stdin (a session has nobody at a keyboard: waiting would only hang),
  unless the pool runs a notebook cell with ``allow_stdin`` (its ``stdin``
  extension), which relays the ``input_request`` to the notebook;
* every ``execute_reply`` carries, under the key ``"azure_sessions"``, what an
  Azure session would put in the execution's ``result`` field:

  ``{"kind": "json", "value": V}``
      the cell ended with an expression whose value is an ``int``, ``bool``,
      finite ``float`` or ``str`` (``V`` is the value itself); a non-finite
      float gives its ``str``: ``"nan"``, ``"inf"``, ``"-inf"``;
  ``{"kind": "text"}``
      any other value: the pool uses the ``text/plain`` of the cell's
      ``execute_result``;
  ``{"kind": "none"}``
      the trailing expression evaluated to ``None`` (Azure: ``null``), unless
      it is a call: ``print(...)``, ``df.info()`` and ``display(...)`` return
      ``None`` too, and Azure answers ``""`` for print-only cells;
  ``{"kind": "empty"}``
      no trailing expression (print-only cells, assignments, a trailing
      ``;``), or the cell failed (Azure: ``""``).

  With ``returnJupyterFormatExecutionResult`` Azure shows strings as their
  ``repr``. The pool asks for that per execution through the request's
  *metadata* (``jupyter_client``'s ``execute()`` cannot set it, so the pool
  builds the message itself)::

      msg = client.session.msg("execute_request", content,
                               metadata={"azure_sessions": {"jupyter_format": True}})
      client.shell_channel.send(msg)

  and the reply then says ``{"kind": "json", "value": "'abc'"}`` for ``"abc"``.

  The same metadata may carry ``"execution_count": n`` (run the cell as the
  notebook's cell ``n``: tracebacks say ``Cell In[n]``, ``Out[n]`` is set) and
  ``"result": false`` (a notebook cell: no Azure result, the key is absent);
* only the pool reads this kernel's iopub: it publishes no ``execute_input``
  echo and no ``busy`` status (``idle`` still ends every request);
* with the pool's ``--egress``, a small process forked before the kernel
  starts relays ``127.0.0.1:3128`` (the session's ``HTTPS_PROXY``) to the
  pool's egress proxy through the Unix socket the launcher binds in
  (``$AZURE_SESSIONS_EGRESS_SOCKET``): the session has no other network.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from typing import Any

#: Key of the Azure result description in ``execute_reply`` content.
RESULT_KEY = "azure_sessions"
#: ``metadata[RESULT_KEY][JUPYTER_FORMAT]`` of an ``execute_request``: strings as ``repr``
#: (Azure's ``returnJupyterFormatExecutionResult``).
JUPYTER_FORMAT = "jupyter_format"
#: ``metadata[RESULT_KEY][EXECUTION_COUNT]``: run the cell under this execution count.
EXECUTION_COUNT = "execution_count"
#: ``metadata[RESULT_KEY][AZURE_RESULT]``: ``False`` skips working out the Azure result.
AZURE_RESULT = "result"
#: Working directory when not ``/mnt/data`` (set by the insecure launcher).
DATA_DIR_ENV = "AZURE_SESSIONS_DATA_DIR"
#: The image's pre-built matplotlib cache, copied into ``$MPLCONFIGDIR`` at start.
MPL_CACHE_ENV = "AZURE_SESSIONS_MPL_CACHE"
DEFAULT_DATA_DIR = "/mnt/data"
#: Longest stream message the kernel publishes (characters; a print of more is split).
STREAM_CHUNK = 1 << 20
#: A display or result bundle larger than this (characters over all its MIME types) is
#: replaced by the head of its text/plain form and a notice: the pool refuses single
#: messages past its output cap, and a notebook cannot use a 30 MB table anyway.
DISPLAY_LIMIT = 4 << 20
#: How much of the text/plain form such a bundle keeps.
DISPLAY_HEAD = 64 << 10

STDIN_MESSAGE = (
    "input() is not available: this code runs in a remote session, which has no stdin (nobody is at a keyboard). "
    "Set the value in the code instead, or put it in a file under /mnt/data and read it."
)


# --------------------------------------------------------------------------
# The Azure ``result`` of one execution
# --------------------------------------------------------------------------


def _trailing_expression(transformed_cell: str) -> ast.expr | None:
    """The cell's last statement if IPython displays it (an expression without ``;``)."""
    try:
        body = ast.parse(transformed_cell).body
    except SyntaxError:
        return None
    if not body or not isinstance(body[-1], ast.Expr):
        return None
    from IPython.core.displayhook import DisplayHook

    if DisplayHook.semicolon_at_end_of_expression(transformed_cell):
        return None
    return body[-1].value


def describe_result(value: Any, succeeded: bool, transformed_cell: str, strings_as_repr: bool = False) -> dict[str, Any]:
    """What Azure would return as ``result`` for a cell (see the module docstring)."""
    expression = _trailing_expression(transformed_cell) if succeeded else None
    if expression is None:
        return {"kind": "empty"}
    if value is None:
        # A call that returns None (print(), df.info(), display()) is used as a
        # statement: Azure answers "" for print-only cells, null for `None`.
        return {"kind": "empty" if isinstance(expression, ast.Call) else "none"}
    # Exact types only: subclasses (IntEnum, numpy.float64...) print differently
    # from the JSON value, so their text/plain is the faithful rendering.
    kind = type(value)
    if kind is str:
        return {"kind": "json", "value": repr(value) if strings_as_repr else value}
    if kind is bool or kind is int:
        return {"kind": "json", "value": value}
    if kind is float:
        return {"kind": "json", "value": value if math.isfinite(value) else str(value)}
    return {"kind": "text"}


# --------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------


def _request_options(parent: Any) -> dict[str, Any]:
    """``metadata["azure_sessions"]`` of an ``execute_request``, or ``{}``."""
    metadata = (parent or {}).get("metadata") or {}
    options = metadata.get(RESULT_KEY) if isinstance(metadata, dict) else None
    return options if isinstance(options, dict) else {}


def _make_kernel_class() -> type:
    """Build the kernel class; ipykernel is imported here so the module imports cheaply."""
    from ipykernel.ipkernel import IPythonKernel
    from IPython.core.error import StdinNotImplementedError
    from traitlets import Float

    from ipykernel.zmqshell import ZMQInteractiveShell
    from traitlets import Type

    guarded_publisher, guarded_displayhook = _make_guarded_display_classes()

    class SessionShell(ZMQInteractiveShell):
        """ipykernel's shell with the large-output guard (see :func:`degrade_large_bundle`)."""

        display_pub_class = Type(guarded_publisher)
        displayhook_class = Type(guarded_displayhook)

    class SessionKernel(IPythonKernel):
        """An IPython kernel that answers like an Azure dynamic session."""

        shell_class = Type(SessionShell)

        # ipykernel installs these as builtins.input / getpass.getpass for each
        # execution. A notebook cell the pool runs with allow_stdin (the stdin
        # extension) asks through the stdin channel; any other execution has
        # nobody at a keyboard, and says so at once instead of hanging.
        def raw_input(self, prompt=""):
            if not self._allow_stdin:
                raise StdinNotImplementedError(STDIN_MESSAGE)
            return super().raw_input(prompt)

        def getpass(self, prompt="", stream=None, **kwargs):
            if not self._allow_stdin:
                raise StdinNotImplementedError(STDIN_MESSAGE)
            return super().getpass(prompt, stream, **kwargs)

        def _no_raw_input(self):
            raise StdinNotImplementedError(STDIN_MESSAGE)

        # ipykernel sleeps 0.5 ms after each execution so that stdout flushed
        # just before the reply has left first; the pool waits for "idle", which
        # comes after every output on the same channel, so it loses nothing.
        _execute_sleep = Float(0.0).tag(config=True)

        # Only the pool listens to this kernel's iopub, and it needs neither the
        # echo of its own code nor "busy" (it waits for "idle"): two messages
        # less to sign, send, receive and check on every execution.
        def _publish_execute_input(self, code, parent, execution_count):
            pass

        def _publish_status(self, status, channel, parent=None):
            if status != "busy":
                super()._publish_status(status, channel, parent)

        async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, **kwargs):
            options = _request_options(self.get_parent("shell"))
            count = options.get(EXECUTION_COUNT)
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                self.shell.execution_count = count  # the notebook's number: "Cell In[n]", Out[n]
            reply = await super().do_execute(code, silent, store_history, user_expressions, allow_stdin, **kwargs)
            if options.get(AZURE_RESULT, True):
                reply[RESULT_KEY] = self._azure_result(code, reply.get("status") == "ok", options)
            return reply

        def _azure_result(self, code: str, succeeded: bool, options: dict[str, Any]) -> dict[str, Any]:
            result = self.shell.last_execution_result
            try:
                transformed = self.shell.transform_cell(code)
            except Exception:
                return {"kind": "empty"}
            return describe_result(
                result.result if result is not None else None,
                succeeded and result is not None and result.success,
                transformed,
                strings_as_repr=bool(options.get(JUPYTER_FORMAT)),
            )

    return SessionKernel


def degrade_large_bundle(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``data`` itself, or the head of its text/plain form and a notice when it is too large."""
    size = sum(len(v) if isinstance(v, (str, bytes)) else len(str(v)) for v in data.values())
    if size <= DISPLAY_LIMIT:
        return data, None
    text = str(data.get("text/plain", ""))
    head = text[:DISPLAY_HEAD]
    notice = (
        f"[output too large: a {size / 1e6:.1f} MB display ({', '.join(sorted(data))}) was replaced by "
        f"{'the first ' + str(DISPLAY_HEAD // 1024) + ' KiB of ' if len(text) > DISPLAY_HEAD else ''}its text/plain form]\n"
    )
    return {"text/plain": head}, notice


def _make_guarded_display_classes() -> tuple[type, type]:
    """ipykernel's display publisher and displayhook, degrading bundles over DISPLAY_LIMIT.

    Classes (set through the shell's ``display_pub_class``/``displayhook_class``),
    not instance attributes, so that code that refines them by subclassing
    (the kernel's in-session helper does) still runs through the guard.
    """
    from ipykernel.displayhook import ZMQShellDisplayHook
    from ipykernel.zmqshell import ZMQDisplayPublisher

    class GuardedDisplayPublisher(ZMQDisplayPublisher):
        def publish(self, data, metadata=None, *args, **kwargs):  # type: ignore[no-untyped-def]
            data, notice = degrade_large_bundle(data)
            if notice:
                print(notice, end="", file=sys.stderr, flush=True)
            return super().publish(data, metadata, *args, **kwargs)

    class GuardedDisplayHook(ZMQShellDisplayHook):
        def write_format_data(self, format_dict, md_dict=None):  # type: ignore[no-untyped-def]
            format_dict, notice = degrade_large_bundle(format_dict)
            if notice:
                print(notice, end="", file=sys.stderr, flush=True)
            return super().write_format_data(format_dict, md_dict)

    return GuardedDisplayPublisher, GuardedDisplayHook


# --------------------------------------------------------------------------
# %pip and !pip in a session
# --------------------------------------------------------------------------
#
# The image is read-only and sessions normally have no network (no egress), so
# IPython's own %pip would retry the index for ten seconds and end "ok". Ours
# installs into a per-session directory put first on sys.path (the package
# imports at once), resolves against what the image already has, never
# touches the image, and fails the cell at once, saying what to do, when it
# would need an index it cannot reach.

PIP_NO_EGRESS = (
    "pip cannot reach the package index from this session (it has no network access): use a session image that "
    "has the package (azure-sessions-kernel image build --requirements FILE --name NAME), a pool with egress, or "
    "upload a wheel with %upload and run %pip install /mnt/data/<file>.whl."
)
#: How long the index (or proxy) may take to accept a connection before the session counts as offline.
PIP_PROBE_SECONDS = 3.0
#: pip subcommands that may reach the index.
_PIP_NETWORK_COMMANDS = ("install", "download", "wheel", "index")
#: pip options whose next argument is not a requirement.
_PIP_OPTIONS_WITH_VALUE = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-t", "--target", "--prefix",
                           "--root", "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--python-version",
                           "--platform", "--implementation", "--abi", "--report", "--log", "--proxy", "--cert", "--timeout",
                           "--retries", "--config-settings", "-C", "--progress-bar", "--src", "-d", "--dest"}
_PIP_COMMAND = re.compile(r"\s*(?:\S*/)?(?:pip3?|python3?(?:\.\d+)?\s+-m\s+pip)(?:\s+(?P<args>.*))?$", re.S)
_session_packages: list[str] = []  # the per-session directory, once created


class PipError(Exception):
    """%pip failed; shown as one line (no traceback), and the cell's status is error."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def session_packages_dir() -> str:
    """The per-session install directory, created and put first on ``sys.path`` at first use."""
    if not _session_packages:
        path = tempfile.mkdtemp(prefix="session-packages-")
        sys.path.insert(0, path)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)
        _session_packages.append(path)
    return _session_packages[0]


def _index_problem(timeout: float = PIP_PROBE_SECONDS) -> str | None:
    """Why pip cannot reach its index from here, or ``None`` when it can.

    Without a proxy: whether a TCP connection to the index opens within
    ``timeout``. Through the pool's egress proxy: whether it opens a tunnel
    to the index host, so an allow-list without the index is named at once.
    """
    index = urllib.parse.urlsplit(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    index_host, index_port = index.hostname or "pypi.org", index.port or (443 if index.scheme == "https" else 80)
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    outcome: list[str | None] = []

    def probe() -> None:
        if not proxy:
            try:
                socket.create_connection((index_host, index_port), timeout=timeout).close()
                outcome.append(None)
            except OSError:
                outcome.append(PIP_NO_EGRESS)
            return
        parsed = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
        try:
            with socket.create_connection((parsed.hostname or "", parsed.port or 80), timeout=timeout) as s:
                s.sendall(f"CONNECT {index_host}:{index_port} HTTP/1.1\r\nHost: {index_host}:{index_port}\r\n\r\n".encode())
                status = s.makefile("rb").readline(1024).decode("latin-1").strip()
        except OSError as exc:
            outcome.append(f"pip cannot reach its proxy {proxy}: {exc}")
            return
        code, _, reason = status.partition(" ")[2].partition(" ")
        if code == "200":
            outcome.append(None)
        elif code == "403" and os.environ.get(EGRESS_SOCKET_ENV):
            allowed = os.environ.get(EGRESS_LIST_ENV) or "nothing"
            outcome.append(f"pip cannot reach {index_host}: {reason}. This pool allows {allowed}; "
                           "add the index host to the pool's --egress (pypi is the package index).")
        else:
            outcome.append(f"pip cannot reach {index_host} through the proxy {proxy}: {status or 'no answer'}")

    thread = threading.Thread(target=probe, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(timeout + 1)
    return outcome[0] if outcome else PIP_NO_EGRESS


def _needs_index(args: list[str]) -> bool:
    """Whether ``pip install ARGS`` may look anything up in an index: not with --no-index, nor for local files only."""
    if "--no-index" in args:
        return False
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
        elif arg in ("-r", "--requirement"):
            return True
        elif arg in _PIP_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and not os.path.exists(arg):
            return True
    return False


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run_pip(args: list[str]) -> int:
    """Run the image's pip, streaming its output into the cell."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1"}
    with subprocess.Popen([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
    return proc.returncode


def pip_install(args: list[str]) -> None:
    """``pip install ARGS`` into :func:`session_packages_dir`, resolved against the image.

    A dry run first tells what the image lacks (pip never uninstalls in a dry
    run); only that is installed, without dependencies, into the session's
    directory. Local files are installed with ``--no-index``: an uploaded
    wheel installs offline, and wheels uploaded beside it serve as its
    dependencies (``--find-links`` their folder).
    """
    target = session_packages_dir()
    extra = []
    if not _needs_index(args):
        folders = {os.path.dirname(os.path.abspath(a)) for a in args[1:] if not a.startswith("-") and os.path.exists(a)}
        extra = ["--no-index", *(f"--find-links={f}" for f in sorted(folders))]
    fd, report_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        if _run_pip([*args, *extra, "--dry-run", "--quiet", "--report", report_path]) != 0:
            raise PipError("pip could not resolve these requirements (its output is above)")
        with open(report_path) as f:
            wanted = [item["download_info"]["url"] for item in json.load(f).get("install", [])]
    finally:
        os.unlink(report_path)
    if not wanted:
        print("Nothing to install: the session already has these packages.")
        return
    # Exact files or URLs now: no index lookups, nothing but these.
    if _run_pip(["install", "--no-deps", "--upgrade", "--no-index", "--target", target, *wanted]) != 0:
        raise PipError("pip install failed (its output is above)")
    importlib.invalidate_caches()
    print(f"Installed into {target}, which this session imports from first; it lasts as long as the session.")


def pip_command(line: str) -> None:
    """``%pip ARGS`` and ``!pip ARGS`` in a session."""
    args = shlex.split(line)
    if args and args[0] in _PIP_NETWORK_COMMANDS and (args[0] != "install" or _needs_index(args)):
        if (problem := _index_problem()) is not None:
            raise PipError(problem)
    if args and args[0] == "install":
        if any(a in ("-t", "--target", "--prefix", "--root", "--user") or a.startswith(("--target=", "--prefix=")) for a in args):
            raise PipError("the session image is read-only: %pip install puts packages in a per-session directory of its own; drop --target, --prefix, --root and --user")
        pip_install(args)
    elif args and args[0] == "uninstall":
        mine = {_canonical(d.metadata["Name"]) for d in importlib.metadata.distributions(path=_session_packages)}
        theirs = [a for a in args[1:] if not a.startswith("-") and _canonical(a) not in mine]
        if theirs:
            raise PipError(f"cannot uninstall {', '.join(theirs)}: only packages installed with %pip in this session can be "
                           "removed; the session image is read-only")
        if _run_pip([*args, "--yes"]) != 0:
            raise PipError("pip uninstall failed (its output is above)")
    elif _run_pip(args) != 0:
        raise PipError(f"pip {args[0] if args else ''} failed (its output is above)".replace("  ", " "))


def _with_pip_magic(kernel_class: type) -> type:
    """``kernel_class`` with %pip, and !pip routed to it, in its shell (native and helper-run cells alike)."""

    class PipKernel(kernel_class):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            shell = self.shell
            shell.register_magic_function(pip_command, magic_kind="line", magic_name="pip")
            system = shell.system

            def system_with_pip(cmd: str) -> Any:
                match = _PIP_COMMAND.match(cmd)
                if match is None:
                    return system(cmd)
                return pip_command(match.group("args") or "")

            shell.system = system_with_pip

    PipKernel.__name__ = PipKernel.__qualname__ = kernel_class.__name__
    return PipKernel


def _make_outstream_class() -> type:
    """ipykernel's stdout/stderr, without the round trip to the IOPub thread when nothing is pending.

    ipykernel flushes both streams after every execution, each flush waiting
    for the IOPub thread; most cells leave nothing to flush.
    """
    from ipykernel.iostream import OutStream

    class QuietOutStream(OutStream):
        def _flush_buffers(self):  # type: ignore[no-untyped-def]
            # One message per STREAM_CHUNK characters: the pool's transport refuses (and
            # disconnects on) a single message larger than its output cap.
            for parent, data in super()._flush_buffers():
                for start in range(0, max(len(data), 1), STREAM_CHUNK):
                    yield parent, data[start : start + STREAM_CHUNK]

        def flush(self) -> None:
            try:
                with self._buffer_lock:
                    pending = self._flush_pending or self._subprocess_flush_pending or any(b.tell() for b in self._buffers.values())
            except AttributeError:  # another ipykernel's internals: flush as it does
                pending = True
            if pending:
                super().flush()

    return QuietOutStream


#: Set by the bwrap launcher when the pool has --egress: the proxy's Unix socket, and the allow-list (for messages).
EGRESS_SOCKET_ENV = "AZURE_SESSIONS_EGRESS_SOCKET"
EGRESS_LIST_ENV = "AZURE_SESSIONS_EGRESS"
#: Where the session's HTTP(S)_PROXY points (loopback of the session's own network namespace).
EGRESS_RELAY_ADDRESS = ("127.0.0.1", 3128)


def _start_egress_relay() -> None:
    """Fork the process that relays the session's proxy port to the pool's egress socket.

    Called first thing in :func:`main`, while the process has one thread (a
    fork is then safe) and before IPython is imported (the relay shares few
    pages). It lives as long as the sandbox: its pid namespace ends with the
    kernel. A cell can kill it, and then only loses its own egress.
    """
    path = os.environ.get(EGRESS_SOCKET_ENV)
    if not path:
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(EGRESS_RELAY_ADDRESS)
    listener.listen(EGRESS_RELAY_BACKLOG)
    if os.fork() != 0:
        listener.close()
        return
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel
        import asyncio

        asyncio.run(_relay_egress(listener, path))
    finally:
        os._exit(0)


#: A burst of connections (pip opens several at once) waits in the kernel's queue instead of being dropped.
EGRESS_RELAY_BACKLOG = 512
#: How long a connection waits for room in the proxy's queue before the session is told it is busy.
EGRESS_CONNECT_PATIENCE = 10.0


async def _relay_egress(listener: socket.socket, path: str) -> None:
    """Serve ``listener`` forever, relaying each connection to the pool's proxy at Unix socket ``path``.

    Run by the process :func:`_start_egress_relay` forks (and by the tests, on
    their own listener). A connection the proxy cannot take is answered with
    an HTTP status line saying why, never closed silently: pip and requests
    print that line, where an empty answer reads as a broken network.
    """
    import asyncio

    loop = asyncio.get_running_loop()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        deadline, delay = loop.time() + EGRESS_CONNECT_PATIENCE, 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                # A Unix socket's connect either completes at once or fails with EAGAIN when the proxy's
                # queue is full; then nothing is queued and only trying again gets in.
                sock.connect(path)
            except BlockingIOError:
                sock.close()
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            except OSError:
                sock.close()
                raise
            return await asyncio.open_unix_connection(sock=sock)

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            proxy_reader, proxy_writer = await connect()
        except OSError as exc:
            if isinstance(exc, BlockingIOError):
                why = f"the pool's egress proxy is busy: no room in its queue for {EGRESS_CONNECT_PATIENCE:g} s"
            else:
                why = f"the pool's egress proxy is not answering ({os.strerror(exc.errno) if exc.errno else exc})"
            body = (why + "\n").encode()
            writer.write(f"HTTP/1.1 503 {why}\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        await asyncio.gather(pump(reader, proxy_writer), pump(proxy_reader, writer))
        proxy_writer.close()
        writer.close()

    server = await asyncio.start_server(relay, sock=listener)
    await server.serve_forever()


def _prepare_process() -> None:
    """Set the working directory and the environment defaults before IPython starts."""
    os.chdir(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Plotly's MIME bundle (JupyterLab, Notebook 7, VS Code) plus HTML that loads plotly.js from its CDN (classic
    # notebook, nbconvert), instead of its default of embedding all 4 MB of plotly.js in the first figure.
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook_connected")
    # Seed matplotlib's cache so the first plot does not spend seconds scanning fonts.
    seed, config_dir = os.environ.get(MPL_CACHE_ENV), os.environ.get("MPLCONFIGDIR")
    if seed and config_dir and os.path.isdir(seed):
        os.makedirs(config_dir, exist_ok=True)
        for name in os.listdir(seed):
            target = os.path.join(config_dir, name)
            if not os.path.exists(target):
                shutil.copyfile(os.path.join(seed, name), target)
    # User code must not import this file by accident.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]


def main(argv: list[str] | None = None) -> None:
    """Run the kernel until the client shuts it down (``argv``: ``-f <connection file>`` and traitlets)."""
    _start_egress_relay()
    _prepare_process()
    from ipykernel.kernelapp import IPKernelApp

    args = list(sys.argv[1:] if argv is None else argv)
    globals()["QuietOutStream"] = _make_outstream_class()  # found by name through IPKernelApp.outstream_class
    IPKernelApp.launch_instance(
        argv=["--HistoryManager.enabled=False", f"--IPKernelApp.outstream_class={__name__}.QuietOutStream", *args],
        kernel_class=_with_pip_magic(_make_kernel_class()),
    )


if __name__ == "__main__":
    main()
