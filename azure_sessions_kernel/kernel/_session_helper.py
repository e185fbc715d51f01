"""The in-session helper: the session side of the long-poll channel.

This file is *sent to the remote session* (never imported there from this
package): the kernel executes its source once per session through the normal
execute call, registering it as the module :data:`MODULE_NAME`. It depends on
nothing but the standard library and IPython, and never touches the user's
namespace.

Why it exists: the Azure contract offers execute calls (serialised per
session, at most 220 s each) and file routes -- no stream, no cancel, no
stdin. But a session is one persistent IPython kernel whose *threads* live on
between execute calls. So:

* :func:`start` runs the notebook cell in a **worker thread** and returns as
  soon as the cell ends, or with what it has printed so far after a short
  wait: a short cell still takes ONE execute call.
* While the cell runs, the kernel calls :func:`poll` ("what was produced since
  cursor N; wait up to W s") and relays each output as it arrives. A poll also
  carries an interrupt (``KeyboardInterrupt`` raised in the worker) or the
  answer to the ``input()`` the worker waits in.
* No single execute call is long, so no cell is bound by the 220 s cap.

Outputs go to one :class:`_Outbox` per session, each with a sequence number
and the id of the cell it belongs to; the kernel acknowledges what it has
published, and unacknowledged outputs are sent again. So a poll may be
repeated (after a lost response) without losing or duplicating anything, and
output a thread prints after its cell ended reaches the notebook with the
next call.

How outputs reach the outbox: the session's IPython machinery is shared with
the thread that runs the execute calls (the *home* thread, which runs only
this helper's calls while a cell runs). When the helper is installed, those
objects are made thread-aware: ``sys.stdout``/``sys.stderr``, the display
publisher, the displayhook, ``_showtraceback``, the payload manager, the event
manager, ``input``/``getpass``, ``time.sleep`` and ``signal.signal``. In the
home thread they behave exactly as before (the session's own answer to each
call is untouched); in every other thread they feed the outbox.

What needs the main thread: ``signal.signal`` in a cell raises ``ValueError``
saying why (as Python does in any thread but the main one); GUI toolkits
that need the main thread do not work. ``time.sleep`` in the cell's thread
wakes up for an interrupt; other blocking calls (a socket read, a C
extension) delay the ``KeyboardInterrupt`` until they return, and the poll
answer says where the worker is.

The cell's code arrives base64-encoded and runs unmodified, so quoting never
matters and traceback line numbers match the notebook cell (``Cell In[n]``).
"""

import base64
import builtins
import ctypes
import getpass as _getpass_module
import json
import os
import signal as _signal_module
import sys
import threading
import time as _time_module
import uuid

#: Name under which the helper lives in the session's ``sys.modules``.
MODULE_NAME = "_azure_sessions_kernel_session"
#: Bumped whenever the kernel/helper JSON shape changes; the kernel re-installs on mismatch.
PROTOCOL = 3
#: Answers larger than this travel as a file instead of the result value:
#: pools cap what one execution returns (the local pool at 8 MiB, Azure at an
#: undocumented size), while the files API streams any size.
SPILL_BYTES = 1 << 20
#: Outputs handed out by one call, at most (one larger output goes alone).
BATCH_BYTES = 512 * 1024
#: Unacknowledged output the session keeps; past it, output is dropped with a notice.
OUTBOX_BYTES = 64 << 20
#: Where spilled answers are written: the session's file area (reference §5),
#: or where the session started when it has none at that path (a local pool
#: without a sandbox), which is then its file area.
SPILL_DIR = "/mnt/data" if os.path.isdir("/mnt/data") else os.getcwd()
#: A display or result bundle larger than this (characters over all its MIME types)
#: becomes the head of its text/plain form and a notice (as the local pool's session
#: kernel does): nothing can carry, or show, a 30 MB table usefully.
DISPLAY_LIMIT = 4 << 20
DISPLAY_HEAD = 64 << 10
#: A second interrupt within this many seconds of the first is not raised again.
INTERRUPT_SPACING = 1.0

_NO_STDIN = "input was called, but this frontend does not support input requests."
_SIGNAL_MESSAGE = (
    "signal only works in main thread of the main interpreter: in this session (a pool that speaks only "
    "the Azure contract) notebook cells run in a worker thread, so that their output can stream and an "
    "interrupt can stop them. Code that must install signal handlers cannot run here."
)

# The thread that installed the helper and runs its calls, and the original
# functions it routes around. Set by _install(), once per session.
_home = threading.current_thread()
_local = threading.local()
_cond = threading.Condition()
_original_sleep = _time_module.sleep
_original_signal = _signal_module.signal


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


# --------------------------------------------------------------------------
# The outbox: every output, in order, until the kernel acknowledges it
# --------------------------------------------------------------------------


class _Outbox:
    """Outputs of cells and of threads, numbered; guarded by ``_cond``.

    Consecutive writes to one stream of one cell are merged (as ipykernel
    does) until the entry has been handed to the kernel: an entry the kernel
    may have seen never changes.
    """

    def __init__(self):
        self.entries = []  # [seq, owner id, msg_type, JSON {"content", ...} | stream [name, chunks]]
        self.next_seq = 1
        self.handed = 0
        self.size = 0
        self.dropped = False

    def add(self, cell_id, msg_type, content, extra=None):
        """Queue one output; ``extra`` (comm messages): ``metadata`` and base64 ``buffers``."""
        with _cond:
            if msg_type == "stream":
                name, text = content
                last = self.entries[-1] if self.entries else None
                if last and last[0] > self.handed and last[2] == "stream" and last[1] == cell_id and last[3][0] == name:
                    if self._room(len(text)):
                        last[3][1].append(text)
                    return
                body, size = [name, [text]], len(text)
            else:
                body = _dumps(dict(extra or {}, content=content))
                size = len(body)
            if self._room(size):
                self.entries.append([self.next_seq, cell_id, msg_type, body])
                self.next_seq += 1
            _cond.notify_all()

    def _room(self, size):
        if self.size + size <= OUTBOX_BYTES:
            self.size += size
            self.dropped = False
            return True
        if not self.dropped:  # one notice per overflow, so the notebook knows output is missing
            self.dropped = True
            note = "\n[output dropped: more than %d MiB of output waited in the session]\n" % (OUTBOX_BYTES >> 20)
            self.entries.append([self.next_seq, _running_or_last(), "stream", ["stderr", [note]]])
            self.next_seq += 1
            self.size += len(note)
        return False

    def pending_after(self, cursor):
        return bool(self.entries) and self.entries[-1][0] > cursor

    def take(self, ack, budget=None):
        """Forget what the kernel acknowledged; the outputs after it, within ``budget`` (:data:`BATCH_BYTES`)."""
        budget = BATCH_BYTES if budget is None else budget
        keep = 0
        while keep < len(self.entries) and self.entries[keep][0] <= ack:
            self.size -= _entry_size(self.entries[keep])
            keep += 1
        del self.entries[:keep]
        out, used = [], 0
        for entry in self.entries:
            seq, cell_id, msg_type, body = entry
            if msg_type == "stream":
                body[1][:] = ["".join(body[1])]
                fields = '"content":' + json.dumps({"name": body[0], "text": body[1][0]})
            else:
                fields = body[1:-1]
            if out and used + len(fields) > budget:
                break
            out.append('{"seq":%d,"cell":%s,"msg_type":%s,%s}' % (seq, json.dumps(cell_id), json.dumps(msg_type), fields))
            used += len(fields)
            self.handed = max(self.handed, seq)
        more = len(out) < len(self.entries)
        return out, more


def _entry_size(entry):
    return sum(len(t) for t in entry[3][1]) if entry[2] == "stream" else len(entry[3])


_outbox = _Outbox()


class _State:
    running = None  # the cell whose worker runs
    last = None  # the most recent cell


_state = _State()


def _running_or_last():
    cell = _state.running or _state.last
    return cell.id if cell is not None else None


def _owner():
    """Whose output this thread produces: the frontend message a comm handler answers (home
    thread), the worker's cell, or, for any other thread, the running or the last cell."""
    owner = getattr(_local, "owner", None)
    if owner is not None:
        return owner
    cell = getattr(_local, "cell", None)
    return cell.id if cell is not None else _running_or_last()


def _routed():
    """Outputs of this thread go to the outbox: any thread but the home one (once a cell ran),
    and the home thread while it runs a frontend's comm message."""
    if getattr(_local, "owner", None) is not None:
        return True
    return threading.current_thread() is not _home and _state.last is not None


def _emit(msg_type, content, extra=None):
    _outbox.add(_owner(), msg_type, content, extra)


def _within_limit(data):
    """``data``, or the head of its text/plain form after a notice when it is too large."""
    size = sum(len(v) if isinstance(v, (str, bytes)) else len(str(v)) for v in data.values())
    if size <= DISPLAY_LIMIT:
        return data
    text = str(data.get("text/plain", ""))
    _emit("stream", ("stderr", "[output too large: a %.1f MB display (%s) was replaced by %sits text/plain form]\n" % (
        size / 1e6, ", ".join(sorted(data)), "the first %d KiB of " % (DISPLAY_HEAD // 1024) if len(text) > DISPLAY_HEAD else "")))
    return {"text/plain": text[:DISPLAY_HEAD]}


# --------------------------------------------------------------------------
# A cell running in its worker thread
# --------------------------------------------------------------------------


class _Cell:
    def __init__(self, spec):
        self.id = str(spec["id"])
        self.code = _decode(spec["code"])
        self.count = spec.get("count")
        self.silent = bool(spec.get("silent"))
        self.user_expressions = spec.get("user_expressions") or {}
        self.allow_stdin = bool(spec.get("allow_stdin"))
        self.done = False
        self.reply = None
        self.thread = None
        self.quiet = False
        self.exec_result = None
        self.last_error = None
        self.payload = []
        # Interrupts: raised asynchronously in the worker, or, while the
        # worker waits in our sleep/input, by waking that wait.
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.in_wait = False
        self.wake_interrupt = False
        self.finishing = False
        self.interrupted_at = None
        self.input_request = None
        self.input_answer = None
        self.input_reported = False
        self.input_serial = 0

    # -- called from the home thread (poll) --

    def interrupt(self):
        with self.lock:
            if self.finishing or self.done:
                return
            now = _time_module.monotonic()
            if self.interrupted_at is not None and now - self.interrupted_at < INTERRUPT_SPACING:
                return
            self.interrupted_at = now
            if self.in_wait:
                self.wake_interrupt = True
                self.wake.set()
                return
            # Raised at the worker's next bytecode; held by the lock, so the
            # worker cannot slip into one of our waits in between.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident), ctypes.py_object(KeyboardInterrupt))

    def answer(self, serial, value):
        with self.lock:
            if self.input_request is not None and self.input_request["id"] == serial:
                self.input_answer = value
                self.wake.set()

    def where(self):
        """Where the worker is, for a kernel waiting on an interrupt: ``file:line in function: source``."""
        frame = sys._current_frames().get(self.thread.ident) if self.thread is not None else None
        if frame is None:
            return None
        import linecache

        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno).strip()
        return "%s:%d in %s%s" % (code.co_filename, frame.f_lineno, code.co_name, ": " + line if line else "")

    # -- called from the worker --

    def wait(self, seconds=None, ready=None):
        """Sleep, or wait until ``ready()``; ``KeyboardInterrupt`` when interrupted.

        ``ready`` is checked under the lock that :meth:`answer` takes, so an
        answer that arrives just before the wait is never missed.
        """
        with self.lock:
            if self.wake_interrupt:
                self.wake_interrupt = False
                raise KeyboardInterrupt
            if ready is not None and ready():
                return
            self.in_wait = True
            self.wake.clear()
        try:
            self.wake.wait(seconds)
        finally:
            with self.lock:
                self.in_wait = False
                interrupted, self.wake_interrupt = self.wake_interrupt, False
        if interrupted:
            raise KeyboardInterrupt

    def ask(self, prompt, password):
        if not self.allow_stdin:
            from IPython.core.error import StdinNotImplementedError

            raise StdinNotImplementedError(_NO_STDIN)
        sys.stdout.flush()
        with _cond:
            self.input_serial += 1
            with self.lock:
                self.input_request = {"id": self.input_serial, "prompt": str(prompt), "password": bool(password)}
                self.input_answer = None
            self.input_reported = False
            _cond.notify_all()
        try:
            while self.input_answer is None:
                self.wait(None, ready=lambda: self.input_answer is not None)
            value = self.input_answer
        finally:
            with self.lock:
                self.input_request = None
        if value == "\x04":  # what frontends send for end of file, as ipykernel reads it
            raise EOFError
        return value


def _work(cell, shell):
    _local.cell = cell
    reply = None
    try:
        result = _run_cell(shell, cell)
        with cell.lock:
            cell.finishing = True
        reply = _reply(shell, cell, result)
    except BaseException as exc:  # a late KeyboardInterrupt, or a failure of ours: still one reply
        with cell.lock:
            cell.finishing = True
        name = type(exc).__name__
        _emit("error", {"ename": name, "evalue": str(exc), "traceback": ["%s: %s" % (name, exc)]})
        reply = {"status": "error", "ename": name, "evalue": str(exc), "traceback": ["%s: %s" % (name, exc)],
                 "user_expressions": {}, "payload": []}
    finally:
        _local.cell = None
        with _cond:
            cell.reply = reply
            cell.done = True
            if _state.running is cell:
                _state.running = None
            _cond.notify_all()


def _run_cell(shell, cell):
    """``shell.run_cell`` for the worker: same steps, our choice of coroutine runner.

    Cells with top-level ``await`` run on an event loop of the worker's own
    (the session's loop belongs to the home thread).
    """
    from IPython.core.interactiveshell import _pseudo_sync_runner

    code = cell.code
    try:
        transformed, preprocessing_exc = shell.transform_cell(code), None
    except Exception:
        transformed, preprocessing_exc = code, sys.exc_info()
    try:
        cell.quiet = shell.displayhook.semicolon_at_end_of_expression(transformed)
    except Exception:
        cell.quiet = False
    coro = shell.run_cell_async(
        code, store_history=False, silent=cell.silent, transformed_cell=transformed, preprocessing_exc_tuple=preprocessing_exc
    )
    try:
        if shell.should_run_async(code, transformed_cell=transformed, preprocessing_exc_tuple=preprocessing_exc):
            import asyncio

            return asyncio.run(coro)
        return _pseudo_sync_runner(coro)
    finally:
        shell.events.trigger("post_execute")
        if not cell.silent:
            shell.events.trigger("post_run_cell", None)


def _reply(shell, cell, result):
    """The execute_reply fields of a finished cell (everything but the outputs)."""
    success = result is not None and result.success
    reply = {"status": "ok" if success else "error"}
    if not success:
        error = cell.last_error
        exc = (result.error_before_exec or result.error_in_exec) if result is not None else None
        reply.update(
            ename=error["ename"] if error else type(exc).__name__,
            evalue=error["evalue"] if error else str(exc),
            traceback=error["traceback"] if error else [],
        )
    reply["user_expressions"] = shell.user_expressions(cell.user_expressions) if success and cell.user_expressions else {}
    reply["payload"] = cell.payload
    return reply


# --------------------------------------------------------------------------
# Making the session's IPython thread-aware (once per session)
# --------------------------------------------------------------------------


def _swap_class(obj, methods):
    """Give ``obj`` a subclass of its class with ``methods`` (keeps its state and isinstance)."""
    base = type(obj)
    if getattr(base, "_ask_routed", False):
        return
    obj.__class__ = type(base.__name__, (base,), dict(methods, _ask_routed=True, __module__=base.__module__))


def _route_streams():
    # ``write`` becomes a property of a subclass: IPython 9 tees each cell's
    # output into its history by *assigning* ``stream.write`` on the instance
    # (and assigning back what it found), which would hide a plain method.
    # Assignments become the "layer" our write calls in the home thread, so
    # the tee keeps working there; other threads' writes go to the outbox.
    def write_get(self):
        return self.__dict__["_ask_router"]

    def write_set(self, value):
        self.__dict__["_ask_layer"] = None if value is self.__dict__["_ask_router"] else value

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        base = type(stream)
        if getattr(base, "_ask_routed", False):
            continue

        def router(text, _stream=stream, _name=name, _base_write=base.write):
            if _routed():
                if not isinstance(text, str):
                    raise TypeError("write() argument must be str, not %s" % type(text).__name__)
                if text:
                    _emit("stream", (_name, text))
                return len(text)
            layer = _stream.__dict__.get("_ask_layer")
            if layer is None or getattr(_local, "in_layer", False):
                return _base_write(_stream, text)
            _local.in_layer = True  # the layer (IPython's tee) calls back into us
            try:
                return layer(text)
            finally:
                _local.in_layer = False

        try:
            stream.__dict__["_ask_router"] = router
            stream.__dict__["_ask_layer"] = None
            stream.__dict__.pop("write", None)
            _swap_class(stream, {"write": property(write_get, write_set)})
        except (AttributeError, TypeError):  # a C-level stream (no ipykernel): leave it as it is
            pass


def _route_display(shell):
    def publish(self, data, metadata=None, *args, **kwargs):
        if not _routed():
            return super(type(self), self).publish(data, metadata, *args, **kwargs)
        kind = "update_display_data" if kwargs.get("update") else "display_data"
        _emit(kind, {"data": _within_limit(data), "metadata": metadata or {}, "transient": kwargs.get("transient") or {}})

    def clear_output(self, wait=False):
        if not _routed():
            return super(type(self), self).clear_output(wait)
        _emit("clear_output", {"wait": bool(wait)})

    _swap_class(shell.display_pub, {"publish": publish, "clear_output": clear_output})


def _route_displayhook(shell):
    per_thread = threading.local()

    def exec_result_get(self):
        return getattr(per_thread, "value", None) if _routed() else self.__dict__.get("_ask_exec_result")

    def exec_result_set(self, value):
        if _routed():
            per_thread.value = value
        else:
            self.__dict__["_ask_exec_result"] = value

    def prompt_count(self):
        cell = getattr(_local, "cell", None)
        if _routed() and cell is not None and cell.count is not None:
            return cell.count
        return self.shell.execution_count

    def quiet(self):
        cell = getattr(_local, "cell", None)
        return cell.quiet if _routed() and cell is not None else super(type(self), self).quiet()

    def nothing_if_routed(name):
        def method(self, *args, **kwargs):
            if not _routed():
                return getattr(super(type(self), self), name)(*args, **kwargs)

        method.__name__ = name
        return method

    def write_format_data(self, format_dict, md_dict=None):
        if not _routed():
            return super(type(self), self).write_format_data(format_dict, md_dict)
        _emit("execute_result", {"data": _within_limit(format_dict), "metadata": md_dict or {}, "execution_count": prompt_count(self)})

    hook = shell.displayhook
    current = getattr(hook, "exec_result", None)
    methods = {
        "exec_result": property(exec_result_get, exec_result_set),
        "prompt_count": property(prompt_count),
        "quiet": quiet,
        "write_format_data": write_format_data,
    }
    for name in ("start_displayhook", "write_output_prompt", "finish_displayhook", "log_output"):
        methods[name] = nothing_if_routed(name)
    hook.__dict__.pop("exec_result", None)
    _swap_class(hook, methods)
    hook.__dict__["_ask_exec_result"] = current


def _route_shell(shell):
    original_showtraceback = shell._showtraceback
    original_trigger = shell.events.trigger

    def showtraceback(etype, evalue, stb):
        if not _routed():
            return original_showtraceback(etype, evalue, stb)
        error = {"ename": getattr(etype, "__name__", str(etype)), "evalue": str(evalue), "traceback": list(stb)}
        cell = getattr(_local, "cell", None)
        if cell is not None:
            cell.last_error = error
        _emit("error", error)

    def trigger(event, *args, **kwargs):
        # The home thread runs only this helper's calls while a cell runs: their
        # pre/post_execute must not reach the cell's hooks (matplotlib's inline
        # backend would show the cell's half-drawn figures at every poll).
        if threading.current_thread() is _home and _state.running is not None:
            return None
        return original_trigger(event, *args, **kwargs)

    shell._showtraceback = showtraceback
    shell.events.trigger = trigger
    payloads = getattr(shell, "payload_manager", None)
    if payloads is not None:
        original_write = payloads.write_payload

        def write_payload(data, single=True):
            cell = getattr(_local, "cell", None)
            if _routed() and cell is not None:
                cell.payload.append(data)
                return None
            return original_write(data, single)

        payloads.write_payload = write_payload
    compiler = getattr(shell, "compile", None)
    if compiler is not None and hasattr(compiler, "cache"):
        original_cache = compiler.cache

        def cache(transformed_code, number=0, raw_code=None):
            cell = getattr(_local, "cell", None)
            if _routed() and cell is not None and cell.count is not None:
                number = cell.count  # tracebacks say "Cell In[n]" with the notebook's n
            return original_cache(transformed_code, number, raw_code)

        compiler.cache = cache


def _route_stdin(shell):
    def routed(original, password):
        def ask(prompt="", *args, **kwargs):
            cell = getattr(_local, "cell", None) or (_state.running if _routed() else None)
            if threading.current_thread() is _home or cell is None:
                return original(prompt, *args, **kwargs)
            return cell.ask(prompt, password)

        ask._ask_routed = True
        return ask

    if not getattr(builtins.input, "_ask_routed", False):
        builtins.input = routed(builtins.input, False)
    if not getattr(_getpass_module.getpass, "_ask_routed", False):
        _getpass_module.getpass = routed(_getpass_module.getpass, True)
    # ipykernel swaps builtins.input for its own raw_input during every execute
    # call (ours included): route that one too.
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        for name, password in (("raw_input", False), ("getpass", True)):
            method = getattr(kernel, name, None)
            if method is not None and not getattr(method, "_ask_routed", False):
                setattr(kernel, name, routed(method, password))


def _route_comms(shell):
    """Comm messages the session publishes go to the outbox (nobody but the kernel hears its iopub)."""
    try:
        from ipykernel.comm.comm import BaseComm
    except ImportError:  # not an ipykernel session: no comms to relay
        return
    if getattr(BaseComm.publish_msg, "_ask_routed", False):
        return

    from ipykernel.kernelbase import Kernel

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        if self.kernel is None and Kernel.initialized():
            self.kernel = Kernel.instance()  # ipywidgets sends only through comms that have a kernel
        content = dict(data={} if data is None else data, comm_id=self.comm_id, **keys)
        extra = {"metadata": metadata or {}}
        if buffers:
            extra["buffers"] = [base64.b64encode(bytes(b)).decode("ascii") for b in buffers]
        _emit(msg_type, content, extra)

    publish_msg._ask_routed = True
    BaseComm.publish_msg = publish_msg
    # ipywidgets' Output widget captures what is printed under the message its
    # kernel (or shell) says it is handling: that must be the notebook's cell
    # (or the frontend's comm message), whose id the kernel publishes those
    # outputs under. It also *sets* the shell's parent: in a routed thread that
    # must not touch the home thread's, which carries the session's own answers.
    def routed_parent(original):
        def get_parent(*args, **kwargs):
            owner = _owner() if _routed() else None
            if owner is not None:
                return {"header": {"msg_id": owner, "msg_type": "execute_request", "session": "", "username": "",
                                   "date": "", "version": "5.3"}, "parent_header": {}, "metadata": {}, "content": {}}
            return original(*args, **kwargs)

        get_parent._ask_routed = True
        return get_parent

    def routed_set_parent(original):
        def set_parent(*args, **kwargs):
            if not _routed():
                return original(*args, **kwargs)
            return None

        set_parent._ask_routed = True
        return set_parent

    for obj in (shell, getattr(shell, "kernel", None)):
        if obj is None:
            continue
        getter = getattr(obj, "get_parent", None)
        if getter is not None and not getattr(getter, "_ask_routed", False):
            obj.get_parent = routed_parent(getter)
    setter = getattr(shell, "set_parent", None)
    if setter is not None and not getattr(setter, "_ask_routed", False):
        shell.set_parent = routed_set_parent(setter)


def _sleep(seconds):
    cell = getattr(_local, "cell", None)
    if cell is None or threading.current_thread() is _home:
        return _original_sleep(seconds)
    seconds = float(seconds)  # TypeError for what time.sleep refuses too
    if seconds != seconds or seconds < 0:
        raise ValueError("sleep length must be non-negative")
    end = _time_module.monotonic() + seconds
    while True:  # Event.wait may return early; sleep the whole time, as time.sleep does
        left = end - _time_module.monotonic()
        if left <= 0:
            return None
        cell.wait(left)


def _signal(signalnum, handler):
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(_SIGNAL_MESSAGE)
    return _original_signal(signalnum, handler)


def _install():
    """Make the session's IPython thread-aware; called once, when the helper is installed."""
    shell = _shell()
    _route_streams()
    _route_display(shell)
    _route_displayhook(shell)
    _route_shell(shell)
    _route_stdin(shell)
    _route_comms(shell)
    _time_module.sleep = _sleep
    _signal_module.signal = _signal


# --------------------------------------------------------------------------
# The calls the kernel makes
# --------------------------------------------------------------------------


def _answer(cell, ack, wait, linger, extra=None):
    """Wait for news of ``cell``, then the JSON answer of a start or poll call.

    Returns at once when the cell is done or asks for input; with new output,
    after ``linger`` seconds since the call began (more output joins the same
    answer); otherwise after ``wait`` seconds.
    """
    began = _time_module.monotonic()
    deadline = began + max(0.0, float(wait))
    with _cond:
        while True:
            now = _time_module.monotonic()
            news = _outbox.pending_after(ack)
            if cell is None or cell.done or (cell.input_request is not None and not cell.input_reported):
                break
            if news and now >= began + linger:
                break
            until = min(deadline, began + linger) if news else deadline
            if now >= until:
                break
            try:
                _cond.wait(until - now)
            except KeyboardInterrupt:  # the pool interrupting this call: answer with what there is
                break
        outputs, more = _outbox.take(int(ack))
        answer = {"cell": cell.id if cell is not None else None, "more": more}
        if cell is not None:
            answer["done"] = cell.done
            if cell.done:
                answer["reply"] = cell.reply
            elif cell.input_request is not None:
                answer["input"] = cell.input_request
                cell.input_reported = True
            if not cell.done and cell.interrupted_at is not None:
                answer["where"] = cell.where()
        answer.update(extra or {})
    body = '{"azure_sessions_kernel":%d,%s,"outputs":[%s]}' % (PROTOCOL, _dumps(answer)[1:-1], ",".join(outputs))
    return _spill_if_large(body)


def start(spec_b64, wait=1.0, linger=0.1):
    """Run a notebook cell in a worker thread; answer like :func:`poll`.

    ``spec`` (base64 JSON): ``id`` (the kernel's, unique per cell), ``code``
    (base64), ``count`` (the notebook's execution count, or null),
    ``silent``, ``user_expressions``, ``allow_stdin`` and ``ack`` (the last
    output sequence number the kernel has published). A start repeated for
    the same ``id`` never runs the cell twice. While an earlier cell still
    runs (interrupted, but inside a blocking call) the answer says ``busy``
    and carries that cell's outputs; the kernel asks again.
    """
    spec = json.loads(_decode(spec_b64))
    shell = _shell()
    ack = int(spec.get("ack") or 0)
    with _cond:
        previous = _state.running
        if _state.last is not None and _state.last.id == str(spec["id"]):
            cell = _state.last
        elif previous is not None:
            cell = None
        else:
            cell = _Cell(spec)
            _state.running = _state.last = cell
            cell.thread = threading.Thread(target=_work, args=(cell, shell), name="azure-sessions-kernel cell", daemon=True)
            cell.thread.start()
    if cell is None:
        return _answer(previous, ack, wait, linger, {"busy": {"cell": previous.id, "where": previous.where()}})
    return _answer(cell, ack, wait, linger)


def poll(request_b64):
    """What the running (or last) cell produced since ``ack``; waits up to ``wait`` s for news.

    ``request`` (base64 JSON): ``cell``, ``ack``, ``wait``, ``linger``, and
    optionally ``interrupt: true`` and ``input: {"id", "value"}``. Safe to
    repeat: outputs after ``ack`` are sent again, an input answer is taken
    once, interrupts within :data:`INTERRUPT_SPACING` count once.
    """
    request = json.loads(_decode(request_b64))
    with _cond:
        cell = _state.last if _state.last is not None and _state.last.id == request.get("cell") else None
    if cell is not None:
        answer = request.get("input")
        if answer is not None:
            cell.answer(int(answer["id"]), str(answer["value"]))
        if request.get("interrupt") and not cell.done:
            cell.interrupt()
    return _answer(cell, int(request.get("ack") or 0), float(request.get("wait", 1.0)), float(request.get("linger", 0.1)))


def comm(request_b64):
    """Hand a frontend's comm message to the session's comm manager; answer with what it produced.

    ``request`` (base64 JSON): ``id`` (the frontend message's id: outputs of the
    handler, and ipywidgets' Output captures, go under it), ``msg_type``
    (``comm_open``, ``comm_msg``, ``comm_close`` or ``comm_info_request``),
    ``content``, ``metadata``, ``buffers`` (base64) and ``ack``. The answer is a
    poll answer; for ``comm_info_request`` its ``reply`` is the comm_info_reply
    content.
    """
    import comm as comm_package

    request = json.loads(_decode(request_b64))
    msg_type = request["msg_type"]
    msg = {
        "header": {"msg_id": request["id"], "msg_type": msg_type, "session": "", "username": "", "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": request.get("metadata") or {}, "content": request.get("content") or {},
        "buffers": [base64.b64decode(b) for b in request.get("buffers") or ()],
    }  # fmt: skip
    manager = comm_package.get_comm_manager()
    reply = None
    _local.owner = str(request["id"])
    try:
        if msg_type == "comm_info_request":
            target = msg["content"].get("target_name")
            comms = {k: {"target_name": v.target_name} for k, v in list(manager.comms.items()) if target is None or v.target_name == target}
            reply = {"status": "ok", "comms": comms}
        elif msg_type in ("comm_open", "comm_msg", "comm_close"):
            getattr(manager, msg_type)(None, None, msg)
        else:
            raise ValueError("not a comm message: %r" % msg_type)
    except Exception as exc:  # the handler's failure is the handler's output, as ipykernel logs it
        _emit("stream", ("stderr", "Exception in %s handler: %s: %s\n" % (msg_type, type(exc).__name__, exc)))
    finally:
        _local.owner = None
    return _answer(None, int(request.get("ack") or 0), 0, 0, {"reply": reply} if reply is not None else None)


def _spill_if_large(answer_json):
    """The answer itself, or a pointer to a file holding it; the kernel downloads and deletes the file."""
    if len(answer_json) <= SPILL_BYTES:
        return answer_json
    name = "azure-sessions-kernel-reply-%s.json" % uuid.uuid4().hex
    try:
        with open(os.path.join(SPILL_DIR, name), "w", encoding="utf-8") as f:
            f.write(answer_json)
    except OSError:  # no room for the file: the result value is the only way left
        return answer_json
    return _dumps({"azure_sessions_kernel": PROTOCOL, "spilled": name})


# --------------------------------------------------------------------------
# Introspection
# --------------------------------------------------------------------------


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
    start_, end = (completions[0].start, completions[0].end) if completions else (cursor_pos, cursor_pos)
    return _dumps(
        {
            "status": "ok",
            "matches": [c.text for c in completions],
            "cursor_start": start_,
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
