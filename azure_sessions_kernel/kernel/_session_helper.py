"""The in-session helper: runs a cell with the session's IPython and reports every output.

This file is *sent to the remote session* (never imported there from this
package): the kernel executes its source once per session through the normal
execute call, registering it as the module :data:`MODULE_NAME`. It must
therefore depend on nothing but the standard library and IPython, and must
not touch the user's namespace.

Why it exists: the Azure contract returns only stdout, stderr and ONE result
value per execution. To give a notebook full Jupyter fidelity anyway, the
kernel runs each cell through :func:`run`, which executes the cell with
``get_ipython().run_cell`` while capturing, in the order they happen, stream
writes, ``display_data`` / ``update_display_data`` / ``clear_output`` (with
``transient`` display ids), the ``execute_result`` bundle and the ``error``
(ename, evalue, IPython-formatted traceback), and returns them as one JSON
string: the cell's result value, which Azure passes back unchanged (a reply
over :data:`SPILL_BYTES` is written to a file in ``/mnt/data`` instead, and
the result value points to it).

On the local pool the kernel does not use the helper for cells: they run
as themselves there, and their outputs travel natively (the pool's
``jupyter-cells`` extension).

The user's code arrives base64-encoded and is run unmodified, so quoting
never matters and traceback line numbers match the notebook cell.
"""

import base64
import builtins
import contextlib
import getpass
import io
import json
import os
import sys
import uuid

#: Name under which the helper lives in the session's ``sys.modules``.
MODULE_NAME = "_azure_sessions_kernel_session"
#: Bumped whenever the kernel/helper JSON shape changes; the kernel re-installs on mismatch.
PROTOCOL = 2
#: Replies larger than this travel as a file instead of the result value:
#: pools cap what one execution returns (the local pool at 8 MiB, Azure at an
#: undocumented size), while the files API streams any size.
SPILL_BYTES = 1 << 20
#: Where spilled replies are written: the session's file area (reference §5),
#: or where the session started when it has none at that path (a local pool
#: without a sandbox), which is then its file area.
SPILL_DIR = "/mnt/data" if os.path.isdir("/mnt/data") else os.getcwd()

_STDIN_MESSAGE = (
    "input() is not available: this cell runs in a remote session, which has no stdin. "
    "Set the value in the code instead, or %upload a file and read it."
)


def _shell():
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("The azure-sessions-kernel helper needs an IPython session.")
    return shell


def _decode(b64):
    return base64.b64decode(b64).decode("utf-8")


def _jsonable(value):
    # Display bundles are JSON already, except for raw image bytes some
    # formatters return; Jupyter sends those base64-encoded.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)


def _dumps(obj):
    return json.dumps(obj, default=_jsonable)


class _OutputLog:
    """Every output of one cell, in order, as Jupyter iopub message contents."""

    def __init__(self):
        self.outputs = []

    def add(self, msg_type, content):
        self.outputs.append({"msg_type": msg_type, "content": content})

    def write(self, name, text):
        last = self.outputs[-1] if self.outputs else None
        if last and last["msg_type"] == "stream" and last["content"]["name"] == name:
            last["content"]["text"] += text  # merge consecutive writes like ipykernel does
        else:
            self.add("stream", {"name": name, "text": text})


class _CapturedStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr`` while a cell runs."""

    def __init__(self, log, name, original):
        super().__init__()
        self._log = log
        self._name = name
        self._original = original

    @property
    def name(self):
        return "<%s>" % self._name

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if text:
            self._log.write(self._name, text)
        return len(text)

    def fileno(self):
        # Code that writes to the file descriptor itself (subprocesses, C
        # libraries) reaches the session's own stream; the kernel relays that
        # as the execution's stdout/stderr after the captured outputs.
        return self._original.fileno()


def _make_display_publisher(shell, log):
    from IPython.core.displaypub import DisplayPublisher

    class CapturingDisplayPublisher(DisplayPublisher):
        """Records display_data / update_display_data / clear_output, keeping transient ids."""

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            log.add(
                "update_display_data" if update else "display_data",
                {"data": data, "metadata": metadata or {}, "transient": transient or {}},
            )

        def clear_output(self, wait=False):
            log.add("clear_output", {"wait": bool(wait)})

    # No ``shell=``: the capturing publisher must not register execution
    # event hooks on the shell that would outlive this cell.
    return CapturingDisplayPublisher()


@contextlib.contextmanager
def _instance_overrides(obj, **methods):
    """Shadow methods of one object (not its class) for the duration of a cell."""
    for name, method in methods.items():
        setattr(obj, name, method)
    try:
        yield
    finally:
        for name in methods:
            with contextlib.suppress(AttributeError):
                delattr(obj, name)


def _no_stdin(*args, **kwargs):
    from IPython.core.error import StdinNotImplementedError

    raise StdinNotImplementedError(_STDIN_MESSAGE)


@contextlib.contextmanager
def _without_stdin():
    saved_input, saved_getpass = builtins.input, getpass.getpass
    builtins.input = getpass.getpass = _no_stdin
    try:
        yield
    finally:
        builtins.input, getpass.getpass = saved_input, saved_getpass


@contextlib.contextmanager
def _capturing(shell, log, execution_count):
    """Route every output of the cell into ``log`` instead of the session's channels."""
    hook = shell.displayhook

    def write_format_data(format_dict, md_dict=None):
        log.add("execute_result", {"data": format_dict, "metadata": md_dict or {}, "execution_count": execution_count})

    def show_traceback(etype, evalue, stb):
        shell._last_traceback = stb
        log.add("error", {"ename": etype.__name__, "evalue": str(evalue), "traceback": list(stb)})

    def nothing(*args, **kwargs):
        return None

    saved = sys.stdout, sys.stderr, shell.display_pub
    sys.stdout = _CapturedStream(log, "stdout", sys.stdout)
    sys.stderr = _CapturedStream(log, "stderr", sys.stderr)
    shell.display_pub = _make_display_publisher(shell, log)
    try:
        with _instance_overrides(
            hook,
            start_displayhook=nothing,
            write_output_prompt=nothing,
            write_format_data=write_format_data,
            finish_displayhook=nothing,
        ), _instance_overrides(shell, _showtraceback=show_traceback):
            yield
    finally:
        sys.stdout, sys.stderr, shell.display_pub = saved


def _reply(shell, result, log, user_expressions):
    """The execute_reply fields of a finished cell (everything but the outputs)."""
    reply = {"status": "ok" if result.success else "error"}
    if not result.success:
        error = next((o["content"] for o in reversed(log.outputs) if o["msg_type"] == "error"), None)
        exc = result.error_before_exec or result.error_in_exec
        reply.update(
            ename=error["ename"] if error else type(exc).__name__,
            evalue=error["evalue"] if error else str(exc),
            traceback=error["traceback"] if error else list(getattr(shell, "_last_traceback", None) or []),
        )
    reply["user_expressions"] = shell.user_expressions(user_expressions) if result.success and user_expressions else {}
    payload_manager = getattr(shell, "payload_manager", None)
    reply["payload"] = payload_manager.read_payload() if payload_manager else []
    if payload_manager:
        payload_manager.clear_payload()  # the session's own execute_reply must not repeat them
    return reply


def _ends_with_semicolon(shell, code):
    try:
        return shell.displayhook.semicolon_at_end_of_expression(shell.transform_cell(code))
    except Exception:  # code that does not tokenize shows its SyntaxError, not a result
        return False


@contextlib.contextmanager
def _cell(shell, code, execution_count, user_expressions):
    """Set up one cell: capture, no stdin; yields a dict the caller fills with ``result``.

    The cell runs with ``store_history=False``: the displayhook decides
    whether a trailing ``;`` silences a result by reading the *last history
    entry*, which must stay the session's own cell (our call) so that our
    reply is never silenced; the user's ``;`` is honoured by ``quiet`` below.
    """
    log = _OutputLog()
    box = {}
    hook = shell.displayhook
    quiet = _ends_with_semicolon(shell, code)
    # The nested run_cell resets the displayhook's ExecutionResult; the
    # session's own cell (our call) needs it back to report its value.
    outer_result = hook.exec_result
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, hook, "exec_result", outer_result)
        if execution_count is not None:
            # The notebook's count while the cell runs: tracebacks say "Cell In[n]"
            # and Out[n] matches. Restored after, so that the session's own
            # history keeps numbering its cells (our calls) without collisions.
            stack.callback(setattr, shell, "execution_count", shell.execution_count)
            shell.execution_count = int(execution_count)
        stack.enter_context(_instance_overrides(hook, quiet=lambda: quiet))
        stack.enter_context(_without_stdin())
        stack.enter_context(_capturing(shell, log, execution_count))
        yield box
    reply = _reply(shell, box["result"], log, json.loads(_decode(user_expressions)) if user_expressions else {})
    reply["outputs"] = log.outputs
    box["value"] = _spill_if_large(_dumps({"azure_sessions_kernel": PROTOCOL, **reply}))


def _spill_if_large(reply_json):
    """The reply itself, or a pointer to a file holding it; the kernel downloads and deletes the file."""
    if len(reply_json) <= SPILL_BYTES:
        return reply_json
    name = "azure-sessions-kernel-reply-%s.json" % uuid.uuid4().hex
    try:
        with open(os.path.join(SPILL_DIR, name), "w", encoding="utf-8") as f:
            f.write(reply_json)
    except OSError:  # no room for the file: the result value is the only way left
        return reply_json
    return _dumps({"azure_sessions_kernel": PROTOCOL, "spilled": name})


def run(code_b64, execution_count=None, silent=False, user_expressions=None):
    """Run one cell; return its JSON reply (outputs and execute-reply fields).

    ``execution_count`` is the notebook's (``None`` for cells outside the
    history, which the kernel keeps itself); ``user_expressions`` is base64
    JSON ``{name: expression}``, evaluated after a successful run as
    ipykernel does.
    """
    shell = _shell()
    code = _decode(code_b64)
    with _cell(shell, code, execution_count, user_expressions) as box:
        box["result"] = shell.run_cell(code, store_history=False, silent=silent)
    return box["value"]


async def run_async(code_b64, execution_count=None, silent=False, user_expressions=None):
    """:func:`run` for cells with top-level ``await``: awaited by the session's own loop."""
    shell = _shell()
    code = _decode(code_b64)
    try:
        transformed, preprocessing_exc = shell.transform_cell(code), None
    except Exception:
        transformed, preprocessing_exc = code, sys.exc_info()
    with _cell(shell, code, execution_count, user_expressions) as box:
        box["result"] = await shell.run_cell_async(
            code,
            store_history=False,
            silent=silent,
            transformed_cell=transformed,
            preprocessing_exc_tuple=preprocessing_exc,
        )
    return box["value"]


def complete(code_b64, cursor_pos):
    """A ``complete_reply`` content for the session's namespace, as JSON (ipykernel's algorithm)."""
    from IPython.core.completer import provisionalcompleter, rectify_completions

    shell = _shell()
    code = _decode(code_b64)
    with provisionalcompleter():
        completions = list(rectify_completions(code, shell.Completer.completions(code, cursor_pos)))
        details = [
            {"start": c.start, "end": c.end, "text": c.text, "type": c.type, "signature": c.signature}
            for c in completions
        ]
    start, end = (completions[0].start, completions[0].end) if completions else (cursor_pos, cursor_pos)
    return _dumps(
        {
            "status": "ok",
            "matches": [c.text for c in completions],
            "cursor_start": start,
            "cursor_end": end,
            "metadata": {"_jupyter_types_experimental": details},
        }
    )


def inspect(code_b64, cursor_pos, detail_level=0, omit_sections=()):
    """An ``inspect_reply`` content (``obj?`` / shift-tab) for the session's namespace, as JSON."""
    from IPython.utils.tokenutil import token_at_cursor

    shell = _shell()
    name = token_at_cursor(_decode(code_b64), cursor_pos)
    reply = {"status": "ok", "data": {}, "metadata": {}, "found": False}
    try:
        bundle = shell.object_inspect_mime(name, detail_level=detail_level, omit_sections=tuple(omit_sections))
    except KeyError:
        return _dumps(reply)
    if not getattr(shell, "enable_html_pager", False):
        bundle.pop("text/html", None)
    reply.update(data=bundle, found=True)
    return _dumps(reply)
