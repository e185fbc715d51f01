"""The in-session helper (the session side of the long-poll channel), run in a real ipykernel on
the session image's Python -- what a session is -- through the exact snippets the kernel sends
(``_calls``). The result value of each call is read the way a pool reads it: from the kernel's
``execute_result`` of that call.

No pool is involved: these pin the helper's protocol (ordering, acknowledgement, repeated calls,
interrupts, input) fast; tests/kernel/test_kernel_e2e.py runs it through real pools.
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from azure_sessions_kernel.kernel import _calls
from azure_sessions_kernel.kernel import _session_helper as helper

from ._support import environment

pytestmark = pytest.mark.slow


class Session:
    """A session kernel driven like the kernel drives one: each call's value is its answer."""

    def __init__(self, kc: Any) -> None:
        self.kc = kc
        self.ack = 0
        self.count = 0

    def call(self, code: str, timeout: float = 60) -> tuple[Any, str]:
        """Run ``code`` in the session; (its result value, what reached its stdout)."""
        msg_id = self.kc.execute(code, silent=False, store_history=True, allow_stdin=False)
        value, stdout = None, ""
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "execute_result":
                value = ast.literal_eval(msg["content"]["data"]["text/plain"])
            elif kind == "stream" and msg["content"]["name"] == "stdout":
                stdout += msg["content"]["text"]
            elif kind == "error":
                raise AssertionError("the call itself failed: " + "\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return value, stdout

    def answer(self, code: str) -> dict[str, Any]:
        value, _ = self.call(code)
        answer = _calls.decode_answer(value)
        for output in answer["outputs"]:
            self.ack = max(self.ack, output["seq"])
        return answer

    def start(self, code: str, *, cell_id: str | None = None, wait: float = 1.0, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        self.count += 1
        cell_id = cell_id or uuid.uuid4().hex
        kwargs.setdefault("user_expressions", None)
        start = _calls.start_code(cell_id, code, kwargs.pop("count", self.count), ack=self.ack, wait=wait, linger=0.1, **kwargs)
        return cell_id, self.answer(start)

    def poll(self, cell_id: str, *, wait: float = 1.0, ack: int | None = None, **kwargs: Any) -> dict[str, Any]:
        return self.answer(_calls.poll_code(cell_id, ack=self.ack if ack is None else ack, wait=wait, linger=0.1, **kwargs))

    def run(self, code: str, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        """Start a cell and poll until it is done: (reply, outputs, number of calls)."""
        cell_id, answer = self.start(code, **kwargs)
        outputs, calls = list(answer["outputs"]), 1
        while not answer.get("done"):
            answer = self.poll(cell_id)
            outputs += answer["outputs"]
            calls += 1
        return answer["reply"], outputs, calls


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    from azure_sessions_kernel.pool.image import find_image

    root = tmp_path_factory.mktemp("session-kernel")
    spec = root / "kernels" / "session"
    spec.mkdir(parents=True)
    argv = [str(find_image().python), "-m", "ipykernel_launcher", "-f", "{connection_file}", "--colors=nocolor"]
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "session", "language": "python", "env": env}))
    with environment(JUPYTER_PATH=str(root)):
        km, kc = start_new_kernel(kernel_name="session", startup_timeout=90, cwd=str(root))
    s = Session(kc)
    value, _ = s.call(_calls.install_code())
    assert _calls.decode_install(value) == _calls.INSTALLED
    yield s
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def kinds(outputs: list[dict[str, Any]]) -> list[str]:
    return [o["msg_type"] for o in outputs]


def text(outputs: list[dict[str, Any]], name: str = "stdout") -> str:
    return "".join(o["content"]["text"] for o in outputs if o["msg_type"] == "stream" and o["content"]["name"] == name)


def test_install_is_idempotent_and_leaves_the_namespace_alone(session: Session) -> None:
    before, _ = session.call("sorted(k for k in globals() if not k.startswith('_'))")
    value, _ = session.call(_calls.install_code())
    assert _calls.decode_install(value) == _calls.INSTALLED
    after, _ = session.call("sorted(k for k in globals() if not k.startswith('_'))")
    assert before == after


def test_a_short_cell_takes_one_call_with_every_output_in_order(session: Session) -> None:
    reply, outputs, calls = session.run(
        "import sys\nprint('one')\nprint('two')\nprint('oops', file=sys.stderr)\n"
        "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\nprint('three')\n6 * 7",
        count=5,
    )
    assert calls == 1 and reply["status"] == "ok"
    assert kinds(outputs) == ["stream", "stream", "display_data", "stream", "execute_result"]
    assert outputs[0]["content"] == {"name": "stdout", "text": "one\ntwo\n"}  # consecutive writes merged
    assert outputs[2]["content"]["data"]["text/html"] == "<b>x</b>"
    assert outputs[4]["content"] == {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 5}
    assert [o["seq"] for o in outputs] == sorted({o["seq"] for o in outputs})


def test_full_mime_bundles_updates_and_clear_output(session: Session) -> None:
    reply, outputs, _ = session.run(
        "class Rich:\n"
        "    def _repr_html_(self): return '<i>rich</i>'\n"
        "    def _repr_json_(self): return {'a': [1, 2]}\n"
        "    def __repr__(self): return 'Rich()'\n"
        "from IPython.display import display, clear_output\n"
        "display(Rich(), metadata={'isolated': True})\n"
        "h = display('first', display_id=True)\nh.update('second')\n"
        "clear_output(wait=True)\nRich()"
    )
    shown, first, update, cleared, result = outputs
    assert set(shown["content"]["data"]) == {"text/plain", "text/html", "application/json"}
    assert shown["content"]["metadata"] == {"isolated": True}
    assert (first["msg_type"], update["msg_type"]) == ("display_data", "update_display_data")
    assert update["content"]["transient"] == first["content"]["transient"] and first["content"]["transient"]["display_id"]
    assert cleared == {**cleared, "msg_type": "clear_output", "content": {"wait": True}}
    assert result["msg_type"] == "execute_result" and "text/html" in result["content"]["data"]


def test_an_exception_is_an_error_with_the_notebooks_cell_number(session: Session) -> None:
    reply, outputs, _ = session.run("print('before')\nx = 1\n1 / 0", count=12)
    assert (reply["status"], reply["ename"], reply["evalue"]) == ("error", "ZeroDivisionError", "division by zero")
    assert kinds(outputs) == ["stream", "error"]
    trace = "\n".join(outputs[1]["content"]["traceback"])
    assert "Cell In[12], line 3" in trace and outputs[1]["content"]["traceback"] == reply["traceback"]
    assert "_session_helper" not in trace and "azure-sessions-kernel helper" not in trace
    reply, outputs, _ = session.run("def f(:\n    pass")
    assert reply["ename"] == "SyntaxError" and kinds(outputs) == ["error"]


def test_output_streams_while_the_cell_runs(session: Session) -> None:
    started = time.monotonic()
    cell_id, answer = session.start("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.6)")
    assert not answer["done"] and text(answer["outputs"]) == "0\n"
    assert time.monotonic() - started < 0.6, "the start call answers with the first line, not at the end"
    seen = text(answer["outputs"])
    while not answer["done"]:
        answer = session.poll(cell_id)
        seen += text(answer["outputs"])
    assert seen == "0\n1\n2\n"


def test_a_repeated_poll_sends_unacknowledged_outputs_again_and_never_twice_after_ack(session: Session) -> None:
    cell_id, answer = session.start("import time\nprint('a')\ntime.sleep(0.5)\nprint('b')\ntime.sleep(0.5)")
    first = answer["outputs"]
    before = first[0]["seq"] - 1
    again = session.poll(cell_id, ack=before, wait=0)  # the first answer was "lost": ask again
    assert [o["seq"] for o in again["outputs"]][: len(first)] == [o["seq"] for o in first]
    answer = again
    while not answer["done"]:
        answer = session.poll(cell_id)
    later = session.poll(cell_id, wait=0)
    assert later["outputs"] == [] and later["done"]


def test_a_repeated_start_never_runs_the_cell_twice(session: Session) -> None:
    session.run("starts = 0")
    cell_id, answer = session.start("starts += 1\nstarts")
    assert answer["done"]
    _, again = session.start("starts += 1\nstarts", cell_id=cell_id)
    assert again["done"] and again["reply"]["status"] == "ok"
    value, _ = session.call("starts")
    assert value == 1


def test_interrupt_stops_a_python_loop_and_keeps_the_state(session: Session) -> None:
    session.run("kept = 'yes'\ncounter = 0")
    cell_id, answer = session.start("while True:\n    counter += 1", wait=0.3)
    answer = session.poll(cell_id, interrupt=True, wait=2)
    assert answer["done"] and answer["reply"]["ename"] == "KeyboardInterrupt"
    assert kinds(answer["outputs"])[-1] == "error"
    value, _ = session.call("c = counter; import time; time.sleep(0.3); (c == counter, counter > 0, kept)")
    assert value == (True, True, "yes")


def test_interrupt_wakes_time_sleep(session: Session) -> None:
    cell_id, _ = session.start("import time\ntime.sleep(30)", wait=0.2)
    asked = time.monotonic()
    answer = session.poll(cell_id, interrupt=True, wait=2)
    assert answer["done"] and answer["reply"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - asked < 1.0
    reply, _, _ = session.run("import time\ntry:\n    time.sleep(-1)\nexcept ValueError as e:\n    print(e)")
    assert reply["status"] == "ok"


def test_an_interrupt_the_code_cannot_see_yet_says_where_it_waits(session: Session) -> None:
    cell_id, _ = session.start("import select\nselect.select([], [], [], 2.5)\nafter = 1", wait=0.2)
    answer = session.poll(cell_id, interrupt=True, wait=0.5)
    assert not answer["done"] and "select" in (answer.get("where") or "") or "<module>" in (answer.get("where") or "")
    # The next cell waits for it: "busy", with where the earlier one is.
    next_id, busy = session.start("'next'", wait=0.2)
    assert busy.get("busy") and busy["busy"]["cell"] == cell_id
    deadline = time.monotonic() + 10
    while busy.get("busy") and time.monotonic() < deadline:
        next_id, busy = session.start("'next'", cell_id=next_id)
    assert busy["done"] and busy["reply"]["status"] == "ok"
    value, _ = session.call("'after' in globals()")
    assert value is False, "the pending KeyboardInterrupt stopped the cell when select returned"


def test_input_is_asked_and_answered_through_polls(session: Session) -> None:
    cell_id, answer = session.start("name = input('Your name? ')\nname.upper()", allow_stdin=True)
    request = answer["input"]
    assert request["prompt"] == "Your name? " and request["password"] is False and not answer["done"]
    answer = session.poll(cell_id, answer=(request["id"], "ada"), wait=2)
    assert answer["done"] and answer["outputs"][-1]["content"]["data"]["text/plain"] == "'ADA'"
    cell_id, answer = session.start("import getpass\nsecret = getpass.getpass()", allow_stdin=True)
    assert answer["input"]["password"] is True
    answer = session.poll(cell_id, answer=(answer["input"]["id"], "\x04"), wait=2)
    assert answer["reply"]["ename"] == "EOFError"


def test_input_without_stdin_raises_stdin_not_implemented(session: Session) -> None:
    reply, outputs, _ = session.run("name = input('Your name? ')", allow_stdin=False)
    assert reply["ename"] == "StdinNotImplementedError" and "does not support input requests" in reply["evalue"]
    trace = "\n".join(outputs[-1]["content"]["traceback"])
    assert "input('Your name? ')" in trace and "Could not get source" not in trace


def test_top_level_await_runs_on_the_workers_own_loop(session: Session) -> None:
    reply, outputs, _ = session.run("import asyncio\nawait asyncio.sleep(0.05)\nprint('awaited')\n'done'")
    assert reply["status"] == "ok" and kinds(outputs) == ["stream", "execute_result"]


def test_signal_handlers_fail_with_a_sentence(session: Session) -> None:
    reply, _, _ = session.run("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)")
    assert reply["ename"] == "ValueError" and "worker thread" in reply["evalue"]


def test_the_session_own_answers_are_untouched_while_a_cell_runs(session: Session) -> None:
    """A call's own result value, stdout and figures stay the session's while a cell prints and draws."""
    cell_id, _ = session.start(
        "import time, matplotlib.pyplot as plt\nplt.plot([0, 1])\nfor i in range(8):\n    print('w', i)\n    time.sleep(0.1)\nplt.title('done')\nplt.show()",
        wait=0.1,
    )
    value, stdout = session.call("41 + 1")
    assert value == 42 and stdout == ""
    outputs = []
    answer = session.poll(cell_id, wait=3)
    outputs += answer["outputs"]
    while not answer["done"]:
        answer = session.poll(cell_id)
        outputs += answer["outputs"]
    figures = [o for o in outputs if o["msg_type"] == "display_data" and "image/png" in o["content"]["data"]]
    assert len(figures) == 1, "the figure is shown once, when the cell ends, not at every call"


def test_a_thread_printing_after_its_cell_ended_is_kept_for_the_next_call(session: Session) -> None:
    first, answer = session.start("import threading\nthreading.Timer(0.3, lambda: print('late')).start()")
    assert answer["done"]
    time.sleep(0.6)
    _, answer = session.start("'next'")
    late = [o for o in answer["outputs"] if o["msg_type"] == "stream"]
    assert late and late[0]["cell"] == first and late[0]["content"]["text"] == "late\n"


def test_user_expressions_silent_cells_and_semicolons(session: Session) -> None:
    reply, _, _ = session.run("base = 20", user_expressions={"double": "base * 2"})
    assert reply["user_expressions"]["double"]["data"]["text/plain"] == "40"
    reply, outputs, _ = session.run("7 * 6", count=None, silent=True)
    assert reply["status"] == "ok" and outputs == []
    _, outputs, _ = session.run("print('shown')\n40 + 2;")
    assert kinds(outputs) == ["stream"]


def test_a_large_answer_is_written_to_a_file_and_batches_are_bounded(session: Session, tmp_path: Path) -> None:
    session.call(f"import sys\nm = sys.modules[{helper.MODULE_NAME!r}]\nm.SPILL_BYTES, m.SPILL_DIR = 1000, {str(tmp_path)!r}")
    try:
        value, _ = session.call(_calls.start_code(uuid.uuid4().hex, "print('x' * 5000)", 1, ack=session.ack, wait=1, linger=0.1))
        pointer = _calls.decode_answer(value)
        assert set(pointer) == {"azure_sessions_kernel", "spilled"}
        spilled = _calls.decode_answer((tmp_path / pointer["spilled"]).read_text())
        assert text(spilled["outputs"]) == "x" * 5000 + "\n"
        session.ack = spilled["outputs"][-1]["seq"]
    finally:
        session.call("m.SPILL_BYTES = 1 << 20")
    session.call("m.BATCH_BYTES = 100")
    try:
        cell_id, answer = session.start("for i in range(3):\n    print(str(i) * 150, file=__import__('sys').stderr if i % 2 else __import__('sys').stdout)")
        assert answer["more"] and len(answer["outputs"]) == 1
        parts = [answer]
        while parts[-1]["more"]:
            parts.append(session.poll(cell_id, wait=0))
        assert sum(len(p["outputs"]) for p in parts) == 3
    finally:
        session.call("m.BATCH_BYTES = 512 * 1024")


def test_a_session_without_the_helper_runs_nothing(session: Session) -> None:
    session.call(f"import sys\n_saved_helper = sys.modules.pop({helper.MODULE_NAME!r})")
    try:
        value, _ = session.call(_calls.start_code("x", "side_effect = 1", 3, ack=0, wait=0, linger=0))
        with pytest.raises(_calls.HelperMissing):
            _calls.decode_answer(value)
        value, _ = session.call("'side_effect' in globals()")
        assert value is False
    finally:
        session.call(f"sys.modules[{helper.MODULE_NAME!r}] = _saved_helper\ndel _saved_helper")


def test_completion_and_inspection_see_the_session_namespace(session: Session) -> None:
    session.run("remote_only_variable = 3\ndef remote_function():\n    'Documented remotely.'")
    value, _ = session.call(_calls.complete_code("x = remote_on", 13))
    reply = _calls.decode(value)
    assert "remote_only_variable" in reply["matches"] and (reply["cursor_start"], reply["cursor_end"]) == (4, 13)
    value, _ = session.call(_calls.inspect_code("remote_function", 5))
    assert "Documented remotely." in _calls.decode(value)["data"]["text/plain"]


def test_decode_accepts_the_repr_a_jupyter_format_pool_returns() -> None:
    assert _calls.decode(repr('{"a": 1}')) == {"a": 1}
    assert _calls.decode('{"a": 1}') == {"a": 1}
    with pytest.raises(_calls.HelperMissing):
        _calls.decode(repr(_calls.HELPER_MISSING))
    with pytest.raises(ValueError):
        _calls.decode_answer('{"something": "else"}')
