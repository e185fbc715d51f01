"""The installed kernel end to end, through jupyter_client and nbclient, against real local pools.

Every test runs twice: on a normal local pool ("live": the stream,
interrupt and completion extensions) and on an Azure-strict pool ("strict":
nothing but the Azure contract, as on Azure itself).
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from azure_sessions_kernel.client import SessionNotFoundError, SessionsClient

from ._support import KERNEL_NAME, Kernel, Setup, content, environment, execute, kinds, png_info, write_kernel_config

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def local_ipykernel(jupyter_path: Path) -> Iterator[Any]:
    """A plain ipykernel on the session image's Python (same IPython, ipykernel and matplotlib as a
    session, inline plots): the reference for what a cell's outputs look like in Jupyter."""
    from azure_sessions_kernel.pool.image import find_image

    spec_dir = jupyter_path / "kernels" / "reference-ipykernel"
    spec_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(find_image().python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "reference", "language": "python",
                                                       "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}}))
    with environment(JUPYTER_PATH=str(jupyter_path)):
        km, kc = start_new_kernel(kernel_name="reference-ipykernel", startup_timeout=90)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


RICH_CELL = """\
import sys
from IPython.display import HTML, JSON, Latex, Markdown, SVG, clear_output, display
import matplotlib.pyplot as plt
import pandas as pd
print("to stdout")
print("to stderr", file=sys.stderr)
display(HTML("<b>bold</b>"), metadata={"isolated": True})
display(Markdown("*md*"))
display(Latex(r"$\\alpha$"))
display(JSON({"k": [1, 2]}))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'))
handle = display("first", display_id=True)
handle.update("second")
print("to be cleared")
clear_output(wait=True)
print("after clear")
for n in (1, 2):
    plt.figure(figsize=(2, 2))
    plt.plot([0, n], [0, n])
    plt.show()
display(pd.DataFrame({"a": [1, 2]}))
{"result": 42}
"""


def test_every_output_kind_in_order_with_full_bundles(kernel: Kernel) -> None:
    reply, outputs = kernel.run(RICH_CELL)
    assert reply["content"]["status"] == "ok"
    assert kinds(outputs) == [
        "stream:stdout",
        "stream:stderr",
        *["display_data"] * 6,
        "update_display_data",
        "stream:stdout",
        "clear_output",
        "stream:stdout",
        "display_data",
        "display_data",
        "display_data",
        "execute_result",
    ]
    shown = content(outputs, "display_data")
    assert shown[0]["data"]["text/html"] == "<b>bold</b>" and shown[0]["metadata"] == {"isolated": True}
    assert shown[1]["data"]["text/markdown"] == "*md*"
    assert shown[2]["data"]["text/latex"] == "$\\alpha$"
    assert shown[3]["data"]["application/json"] == {"k": [1, 2]}
    assert shown[4]["data"]["image/svg+xml"].startswith("<svg")
    display_id = shown[5]["transient"]["display_id"]
    update = content(outputs, "update_display_data")[0]
    assert update["transient"]["display_id"] == display_id and update["data"]["text/plain"] == "'second'"
    assert content(outputs, "clear_output") == [{"wait": True}]
    for figure in shown[6:8]:
        width, height, distinct_rows = png_info(base64.b64decode(figure["data"]["image/png"]))
        assert 150 <= width <= 300 and 150 <= height <= 300 and distinct_rows > 20  # 2x2 inches, tight bbox
    assert "<table" in shown[8]["data"]["text/html"] and "text/plain" in shown[8]["data"]
    result = content(outputs, "execute_result")[0]
    assert result["data"]["text/plain"] == "{'result': 42}"
    assert result["execution_count"] == reply["content"]["execution_count"]


def test_large_outputs_arrive_whole(kernel: Kernel) -> None:
    """Over the helper's 1 MiB result limit, the Azure-contract path goes through a file."""
    reply, outputs = kernel.run("big = 'y' * 3_000_000\nprint(big)")
    assert reply["content"]["status"] == "ok"
    assert "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream") == "y" * 3_000_000 + "\n"
    _, outputs = kernel.run("%files")
    assert "azure-sessions-kernel-reply" not in content(outputs, "display_data")[0]["data"]["text/plain"]


def test_state_persists_and_execution_count_follows_the_cells(kernel: Kernel) -> None:
    first, _ = kernel.run("counter = 40")
    second, outputs = kernel.run("counter + 2")
    assert second["content"]["execution_count"] == first["content"]["execution_count"] + 1
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "42"
    silent, outputs = kernel.run("counter + 3", silent=True)
    assert silent["content"]["status"] == "ok" and outputs == []
    after, _ = kernel.run("counter")
    assert after["content"]["execution_count"] == second["content"]["execution_count"] + 1


def test_an_exception_is_an_error_output_and_an_error_reply(kernel: Kernel) -> None:
    reply, outputs = kernel.run("print('before')\nvalue = 1\nraise ValueError('bad value')")
    assert kinds(outputs) == ["stream:stdout", "error"]
    error = content(outputs, "error")[0]
    assert (error["ename"], error["evalue"]) == ("ValueError", "bad value")
    assert reply["content"]["status"] == "error"
    assert (reply["content"]["ename"], reply["content"]["evalue"]) == ("ValueError", "bad value")
    count = reply["content"]["execution_count"]
    assert f"Cell In[{count}], line 3" in ANSI.sub("", "\n".join(error["traceback"]))


def test_input_without_a_stdin_frontend_is_a_clear_error_not_a_hang(kernel: Kernel) -> None:
    reply, outputs = kernel.run("name = input('Your name? ')", timeout=20, allow_stdin=False)
    assert reply["content"]["status"] == "error"
    assert content(outputs, "error")[0]["ename"] == "StdinNotImplementedError"
    assert "does not support input requests" in reply["content"]["evalue"] or "no stdin" in reply["content"]["evalue"]


def run_with_stdin(kernel: Kernel, code: str, answers: list[str], timeout: float = 60) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``code`` as a frontend that allows stdin: answer each ``input_request`` in turn."""
    kc = kernel.kc
    msg_id = kc.execute(code, allow_stdin=True)
    requests: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    idle = False
    while not idle:
        assert time.monotonic() < deadline, "the cell did not finish"
        with contextlib.suppress(queue.Empty):
            request = kc.get_stdin_msg(timeout=0.05)
            if request["parent_header"].get("msg_id") == msg_id and request["msg_type"] == "input_request":
                requests.append(request["content"])
                kc.input(answers[len(requests) - 1])
        with contextlib.suppress(queue.Empty):
            msg = kc.get_iopub_msg(timeout=0.05)
            if msg["parent_header"].get("msg_id") == msg_id:
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
                elif msg["msg_type"] not in ("status", "execute_input"):
                    outputs.append(msg)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply, outputs, requests


def test_input_and_getpass_are_asked_on_the_stdin_channel(kernel: Kernel) -> None:
    reply, outputs, requests = run_with_stdin(
        kernel, "import getpass\nname = input('Your name? ')\nsecret = getpass.getpass('Secret: ')\nprint(name, len(secret))\nname", ["Ada", "xyz"]
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    assert requests == [{"prompt": "Your name? ", "password": False}, {"prompt": "Secret: ", "password": True}]
    assert "".join(c["text"] for c in content(outputs, "stream")) == "Ada 3\n"
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "'Ada'"


def test_output_is_live_on_every_pool(kernel: Kernel) -> None:
    """A cell printing once a second for 6 s: each line reaches the notebook as it is printed."""
    reply, outputs = kernel.run("import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(1)")
    assert reply["content"]["status"] == "ok"
    lines = [m for m in outputs if m["msg_type"] == "stream"]
    assert "".join(m["content"]["text"] for m in lines) == "".join(f"{i}\n" for i in range(6))
    assert len(lines) == 6, "one message per printed line: each arrives on its own"
    assert lines[0]["at"] < 1.5, f"the first line arrived {lines[0]['at']:.2f} s after the cell started"
    for i, line in enumerate(lines):
        assert i - 0.2 < line["at"] < i + 1.5, f"line {i} arrived at {line['at']:.2f} s"


def _interrupt_after(kernel: Kernel, seconds: float) -> None:
    threading.Timer(seconds, kernel.km.interrupt_kernel).start()


def test_interrupt_stops_a_python_loop_and_keeps_the_state(kernel: Kernel) -> None:
    kernel.run("survivor = 'kept'\ncounter = 0")
    _interrupt_after(kernel, 1.5)
    reply, outputs = kernel.run("while True:\n    counter += 1")
    assert reply["at"] < 1.5 + 2.0, f"the interrupt took {reply['at'] - 1.5:.2f} s"
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert content(outputs, "error")[0]["ename"] == "KeyboardInterrupt"
    reply, outputs = kernel.run("seen = counter\nimport time\ntime.sleep(0.5)\n(seen == counter, seen > 0, survivor)")
    assert reply["at"] < 1.5, "the next cell starts at once"
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "(True, True, 'kept')"


def test_interrupt_wakes_a_sleeping_cell(kernel: Kernel) -> None:
    _interrupt_after(kernel, 1.0)
    reply, _ = kernel.run("import time\nbefore_sleep = True\ntime.sleep(60)")
    assert reply["at"] < 1.0 + 2.0
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    _, outputs = kernel.run("before_sleep")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "True"


def test_a_cell_timeout_interrupts_and_keeps_the_state(kernel: Kernel) -> None:
    _, outputs = kernel.run("%timeout")
    assert "no timeout" in outputs[0]["content"]["text"], "no per-cell timeout by default"
    kernel.run("%timeout 5")
    try:
        reply, outputs = kernel.run("import time\nbefore_timeout = True\nend = time.time() + 30\nwhile time.time() < end:\n    pass")
        assert 5 <= reply["at"] <= 6.5, f"reported after {reply['at']:.2f} s"
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "TimeoutError"
        errors = content(outputs, "error")
        assert len(errors) == 1 and "did not finish within its 5 s timeout" in errors[0]["evalue"]
        assert "variables are kept" in errors[0]["evalue"]
        _, outputs = kernel.run("before_timeout")
        assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "True"
    finally:
        kernel.run("%timeout off")


def test_timeout_accepts_any_positive_number_and_off(kernel: Kernel) -> None:
    try:
        reply, outputs = kernel.run("%timeout 600")
        assert reply["content"]["status"] == "ok" and "600 s" in outputs[0]["content"]["text"]
        reply, outputs = kernel.run("%timeout -1")
        assert reply["content"]["status"] == "error" and "more than 0" in reply["content"]["evalue"]
        reply, outputs = kernel.run("%timeout soon")
        assert reply["content"]["status"] == "error" and "'soon'" in reply["content"]["evalue"]
    finally:
        reply, outputs = kernel.run("%timeout off")
    assert "no timeout" in outputs[0]["content"]["text"]


LONG_CELL = """\
import sys, time
import matplotlib.pyplot as plt
from IPython.display import HTML, clear_output, display
print("start")
time.sleep(1.2)
print("to stderr", file=sys.stderr)
handle = display(HTML("<b>first</b>"), display_id=True)
time.sleep(1.2)
handle.update(HTML("<b>second</b>"))
print("to be cleared")
time.sleep(1.2)
clear_output(wait=True)
plt.figure(figsize=(2, 2))
plt.plot([0, 1], [0, 1])
time.sleep(1.2)
plt.title("drawn across polls")
plt.show()
print("done")
{"result": 42}
"""


def test_outputs_of_a_long_cell_keep_order_and_kinds_like_a_local_ipykernel(kernel: Kernel, local_ipykernel: Any) -> None:
    """Outputs spread over several polls arrive as a plain ipykernel on the session's Python sends them."""
    reply, outputs = kernel.run(LONG_CELL)
    expected_reply, expected = execute(local_ipykernel, LONG_CELL, 60)
    assert reply["content"]["status"] == expected_reply["content"]["status"] == "ok"
    assert kinds(outputs) == kinds(expected)
    figure = content(outputs, "display_data")[-1]
    width, height, rows = png_info(base64.b64decode(figure["data"]["image/png"]))
    assert rows > 20 and len(content(outputs, "display_data")) == len(content(expected, "display_data"))
    error_cell = "print('before')\ntime.sleep(1.2)\nraise ValueError('late failure')"
    reply, outputs = kernel.run(error_cell)
    expected_reply, expected = execute(local_ipykernel, error_cell, 60)
    assert kinds(outputs) == kinds(expected) == ["stream:stdout", "error"]
    assert reply["content"]["ename"] == "ValueError" and "late failure" in ANSI.sub("", "\n".join(content(outputs, "error")[0]["traceback"]))


def test_a_session_deleted_during_a_long_cell_ends_it_with_one_clear_error(kernel: Kernel) -> None:
    kernel.run("doomed = 1")
    identifier = kernel.identifier()
    pool = kernel.setup.pool

    def delete() -> None:
        SessionsClient(pool.endpoint, token=pool.token).delete_session(identifier)

    threading.Timer(2.0, delete).start()
    reply, outputs = kernel.run("import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(1)")
    assert reply["at"] < 2.0 + 5.0, f"reported {reply['at'] - 2:.2f} s after the deletion"
    errors = content(outputs, "error")
    assert reply["content"]["ename"] == "SessionLostError" and len(errors) == 1 and len(errors[0]["traceback"]) == 1
    assert "lost" in errors[0]["evalue"] or "gone" in errors[0]["evalue"]
    reply, outputs = kernel.run("'doomed' in globals()")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "False"


@pytest.fixture(scope="module")
def strict_kernel(jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Kernel]:
    """Our kernel on the Azure-strict pool, for what only the long-poll channel does."""
    pool = request.getfixturevalue("strict_pool")
    workdir = tmp_path_factory.mktemp("strict-only")
    write_kernel_config(workdir / "ipython", endpoint=pool.endpoint, token=pool.token)
    with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(workdir / "ipython")):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(workdir))
    yield Kernel(km, kc, Setup("strict", pool, workdir))
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def test_a_thread_printing_after_its_cell_ended_reaches_that_cell_through_the_channel(strict_kernel: Kernel) -> None:
    """The long-poll channel keeps what a thread prints after its cell ended and publishes it with
    that cell's parent. (On the local pool's native path such output reaches the notebook through
    the events route while widgets are open.)"""
    _check_late_thread_output(strict_kernel)


def test_an_interrupt_that_a_blocking_call_delays_is_explained_and_the_next_cell_waits(strict_kernel: Kernel) -> None:
    """In the channel's worker thread a C call (here select) holds the KeyboardInterrupt until it returns."""
    _interrupt_after(strict_kernel, 1.0)
    reply, outputs = strict_kernel.run("import select\nselect.select([], [], [], 7)\nafter_select = True", timeout=30)
    assert reply["at"] < 1.0 + 1.5 + 3.5, f"stopped waiting after {reply['at']:.2f} s"
    error = content(outputs, "error")[0]
    assert error["ename"] == "KeyboardInterrupt" and "cannot stop" in error["evalue"] and "select" in error["evalue"]
    reply, outputs = strict_kernel.run("'after_select' in globals()", timeout=30)
    notices = "".join(c["text"] for c in content(outputs, "stream"))
    assert "Waiting for the previous cell" in notices
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "False", "the pending interrupt stopped it"


def _check_late_thread_output(kernel: Kernel) -> None:
    first, _ = kernel.run("import threading, time\nthreading.Timer(0.5, lambda: print('late', flush=True)).start()")
    time.sleep(1.5)
    msg_id = kernel.kc.execute("'next'")
    late = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = kernel.kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "stream" and "late" in msg["content"]["text"]:
            late = msg
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    kernel.kc.get_shell_msg(timeout=30)
    assert late is not None and late["parent_header"]["msg_id"] == first["parent_header"]["msg_id"]


def test_completion_and_inspection_see_the_remote_namespace(kernel: Kernel) -> None:
    kernel.run("remote_only_value = 1\ndef remote_documented():\n    'Docstring from the session.'")
    kernel.kc.complete("x = remote_on", 13)
    reply = kernel.kc.get_shell_msg(timeout=20)["content"]
    assert "remote_only_value" in reply["matches"] and reply["cursor_start"] == 4
    kernel.kc.inspect("remote_documented", 5)
    reply = kernel.kc.get_shell_msg(timeout=20)["content"]
    assert reply["found"] and "Docstring from the session." in reply["data"]["text/plain"]
    kernel.kc.complete("%uplo", 5)
    assert kernel.kc.get_shell_msg(timeout=20)["content"]["matches"] == ["%upload"]
    kernel.kc.is_complete("for i in range(3):")
    assert kernel.kc.get_shell_msg(timeout=20)["content"]["status"] == "incomplete"


def test_file_magics_round_trip(kernel: Kernel) -> None:
    work = kernel.setup.workdir
    (work / "numbers.csv").write_text("n\n1\n2\n3\n")
    reply, outputs = kernel.run(
        "%upload numbers.csv inputs/\n"
        "import pandas as pd\n"
        "total = pd.read_csv('inputs/numbers.csv')['n'].sum()\n"
        "open('total.txt', 'w').write(str(total))\n"
        "%download total.txt --force"
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    assert (work / "total.txt").read_text() == "6"
    texts = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
    assert "Uploaded numbers.csv -> /mnt/data/inputs/numbers.csv" in texts and "Downloaded /mnt/data/total.txt" in texts
    _, outputs = kernel.run("%files inputs")
    table = content(outputs, "display_data")[0]["data"]
    assert "numbers.csv" in table["text/plain"] and "<table>" in table["text/html"]
    reply, outputs = kernel.run("%download total.txt")
    assert reply["content"]["status"] == "error"
    assert content(outputs, "error") == [
        {"ename": "TransferError", "evalue": f"{work / 'total.txt'} already exists, so nothing was downloaded; add --force to overwrite.",
         "traceback": [f"TransferError: {work / 'total.txt'} already exists, so nothing was downloaded; add --force to overwrite."]}
    ]
    reply, outputs = kernel.run("%upload no-such-file.csv")
    assert reply["content"]["status"] == "error" and len(content(outputs, "error")) == 1
    reply, outputs = kernel.run("x = 1\n%files\ny = 2")
    assert reply["content"]["ename"] == "UsageError" and "start or the end of a cell" in reply["content"]["evalue"]


def test_a_lost_session_is_reported_in_one_line_and_replaced(kernel: Kernel) -> None:
    kernel.run("doomed = 1")
    pool = kernel.setup.pool
    SessionsClient(pool.endpoint, token=pool.token).delete_session(kernel.identifier())
    reply, outputs = kernel.run("doomed")
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "SessionLostError"
    errors = content(outputs, "error")
    assert len(errors) == 1 and len(errors[0]["traceback"]) == 1 and "This cell did not run" in errors[0]["evalue"]
    reply, outputs = kernel.run("fresh = 'yes'\nfresh")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "'yes'"


def test_top_level_await_runs_in_the_session(kernel: Kernel) -> None:
    reply, outputs = kernel.run("import asyncio\nawait asyncio.sleep(0)\n'awaited'")
    assert reply["content"]["status"] == "ok"
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "'awaited'"


def test_session_magic_before_any_cell_says_the_session_is_not_started(setup: Setup) -> None:
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(setup.workdir))
    try:
        reply, outputs = execute(kc, "%session", 60)
        text = outputs[0]["content"]["text"]
        # The kernel prepares its session right after starting: %session finds it not started yet, or
        # already made by that warm-up; either way it is described, never an HTTP error.
        assert reply["content"]["status"] == "ok" and "failed" not in text and "404" not in text
        assert "not started yet" in text or "(created " in text
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_input_error_shows_the_users_line_and_readable_frames(kernel: Kernel) -> None:
    reply, outputs = kernel.run("value = input('name? ')", allow_stdin=False)
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content(outputs, "error")[0]["traceback"]))
    assert reply["content"]["ename"] == "StdinNotImplementedError" and "input('name? ')" in traceback
    assert "Could not get source" not in traceback and "raise StdinNotImplementedError" in traceback


def test_a_memory_bomb_is_reported_as_out_of_memory_and_the_session_restarted(kernel: Kernel) -> None:
    kernel.run("before = 1")
    # The shared test pools give each session the default 1 GiB.
    reply, outputs = kernel.run("chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))", timeout=120)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "SessionLostError"
    evalue = content(outputs, "error")[0]["evalue"]
    assert "ran out of memory (limit 1 GiB)" in evalue and "restarted" in evalue and "while running this code" in evalue
    reply, outputs = kernel.run("'before' in globals()")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "False"


def test_session_new_and_delete_start_over_without_a_lost_session_error(kernel: Kernel) -> None:
    kernel.run("left_behind = 1")
    before = kernel.identifier()
    kernel.run("%session new")
    assert kernel.identifier() != before
    with pytest.raises(SessionNotFoundError):  # the kernel's own previous session was deleted
        SessionsClient(kernel.setup.pool.endpoint, token=kernel.setup.pool.token).get_session(before)
    reply, _ = kernel.run("left_behind")
    assert reply["content"]["ename"] == "NameError"
    kernel.run("again = 1")
    kernel.run("%session delete")
    reply, _ = kernel.run("again")
    assert reply["content"]["ename"] == "NameError"


def test_named_sessions_survive_a_kernel_restart(kernel: Kernel) -> None:
    kernel.run("%session use e2e-named")
    kernel.run("kept_across_restarts = 'still here'")
    kernel.km.restart_kernel(now=False)
    kernel.kc.wait_for_ready(timeout=60)
    kernel.run("%session use e2e-named")
    _, outputs = kernel.run("kept_across_restarts")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "'still here'"
    kernel.run("%session delete")


def _error_notebook() -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("ok = 1"), nbformat.v4.new_code_cell("1 / 0"), nbformat.v4.new_code_cell("never = 1")],
        metadata={"kernelspec": {"name": KERNEL_NAME, "display_name": "Python 3 (Azure Sessions)", "language": "python"}},
    )


def test_headless_runners_fail_on_an_error_cell(setup: Setup) -> None:
    nb = _error_notebook()
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=120, resources={"metadata": {"path": str(setup.workdir)}})
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "ZeroDivisionError"
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None

    path = setup.workdir / "error.ipynb"
    nbformat.write(_error_notebook(), path)
    with pytest.raises(papermill.PapermillExecutionError) as pm:
        papermill.execute_notebook(str(path), str(setup.workdir / "error-out.ipynb"), kernel_name=KERNEL_NAME, progress_bar=False)
    assert pm.value.ename == "ZeroDivisionError"
    run = subprocess.run(
        [sys.executable, "-m", "jupyter", "execute", f"--kernel_name={KERNEL_NAME}", str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0 and "ZeroDivisionError" in run.stderr


def test_shutdown_deletes_the_kernels_own_session(setup: Setup) -> None:
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(setup.workdir))
    kernel = Kernel(km, kc, setup)
    kernel.run("x = 1")
    identifier = kernel.identifier()
    client = SessionsClient(setup.pool.endpoint, token=setup.pool.token)
    assert client.get_session(identifier).identifier == identifier
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    with pytest.raises(SessionNotFoundError):
        client.get_session(identifier)


@pytest.mark.parametrize("api_version", ["2024-02-02-preview", "2024-10-02-preview"])
def test_older_api_versions(api_version: str, jupyter_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The kernel on an Azure-strict pool spoken to with an older data-plane generation."""
    pool = request.getfixturevalue("strict_pool")
    ipython_dir = tmp_path / "ipython"
    write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token, api_version=api_version)
    (tmp_path / "in.txt").write_text("payload")
    with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
        try:
            kernel = Kernel(km, kc, Setup("strict", pool, tmp_path))
            reply, outputs = kernel.run("from IPython.display import HTML, display\ndisplay(HTML('<i>x</i>'))\n6 * 7")
            assert kinds(outputs) == ["display_data", "execute_result"]
            reply, outputs = kernel.run("1 / 0")
            assert reply["content"]["ename"] == "ZeroDivisionError"
            reply, _ = kernel.run("%upload in.txt\ntext = open('in.txt').read().upper()\nopen('out.txt', 'w').write(text)\n%download out.txt")
            assert reply["content"]["status"] == "ok" and (tmp_path / "out.txt").read_text() == "PAYLOAD"
            _, outputs = kernel.run("%session")
            assert f"api version   {api_version}" in outputs[0]["content"]["text"]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


def test_an_unreachable_pool_gives_every_request_a_clear_answer(jupyter_path: Path, tmp_path: Path) -> None:
    ipython_dir = tmp_path / "ipython"
    write_kernel_config(ipython_dir, endpoint="http://127.0.0.1:9", token="unused")  # nothing listens on port 9
    with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
        try:
            for code in ("1 + 1", "%files"):
                reply, outputs = execute(kc, code, timeout=60)
                assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "SessionBackendError"
                assert reply["content"]["evalue"].startswith("Could not reach the session pool")
                assert len(content(outputs, "error")) == 1
            kc.complete("pri", 3)
            assert kc.get_shell_msg(timeout=60)["content"]["matches"] == []
            reply, _ = execute(kc, "%timeout 10")  # needs no pool
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


def test_kernel_info_promises_neither_a_debugger_nor_subshells(kernel: Kernel) -> None:
    """Both would act on this local process, not on the session where cells run."""
    kernel.kc.kernel_info()
    reply = kernel.kc.get_shell_msg(timeout=30)
    features = reply["content"].get("supported_features", [])
    assert reply["content"]["implementation"] == "azure_sessions_kernel"
    assert "debugger" not in features and "kernel subshells" not in features


def test_output_printed_by_a_local_magic_arrives_before_the_cell_ends(kernel: Kernel) -> None:
    """The kernel skips ipykernel's flush round trip only when nothing is pending."""
    for _ in range(3):
        reply, outputs = kernel.run("%timeout 7")
        assert reply["content"]["status"] == "ok"
        assert "7" in "".join(c["text"] for c in content(outputs, "stream"))
    kernel.run("%timeout off")


def test_a_pool_error_in_a_magic_is_one_line(kernel: Kernel) -> None:
    """The client's errors are registered as one-line magic errors when a magic first runs (not at start)."""
    reply, outputs = kernel.run("%download no-such-remote-file.txt --force")
    errors = content(outputs, "error")
    assert reply["content"]["status"] == "error" and len(errors) == 1 and len(errors[0]["traceback"]) == 1
    assert "no-such-remote-file.txt" in errors[0]["evalue"]


def test_the_kernel_module_imports_without_the_http_client() -> None:
    """httpx and the client load when the kernel connects, after it has answered kernel_info."""
    code = "import sys, azure_sessions_kernel.kernel.kernel; print(sorted(m for m in ('httpx', 'h11', 'tqdm', 'azure_sessions_kernel.client._async') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.timeout(480)
def test_a_cell_longer_than_azures_220_s_cap_completes_on_every_pool(jupyter_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Default settings, no %timeout: a 230 s cell ends ok on the local pool and on an Azure-strict one
    (whose every execute call stays capped at 220 s). Both run at once, so the suite waits 230 s, not 460."""
    cell = "import time\nbegan = time.time()\nwhile time.time() - began < 230:\n    print(round(time.time() - began), flush=True)\n    time.sleep(30)\n'finished'"
    results: dict[str, Any] = {}

    def run_on(mode: str) -> None:
        pool = request.getfixturevalue("local_pool" if mode == "live" else "strict_pool")
        ipython_dir = tmp_path / f"ipython-{mode}"
        write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
        with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
            km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
        try:
            results[mode] = execute(kc, cell, timeout=300)
        except BaseException as exc:  # reported by the main thread
            results[mode] = exc
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)

    request.getfixturevalue("local_pool"), request.getfixturevalue("strict_pool")  # started here, not in the threads
    threads = [threading.Thread(target=run_on, args=(mode,)) for mode in ("live", "strict")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=400)
    for mode in ("live", "strict"):
        assert not isinstance(results.get(mode), BaseException), f"{mode}: {results.get(mode)!r}"
        reply, outputs = results[mode]
        assert reply["content"]["status"] == "ok", f"{mode}: {reply['content']}"
        assert reply["at"] >= 230 and content(outputs, "execute_result")[0]["data"]["text/plain"] == "'finished'"
        assert len(content(outputs, "stream")) >= 8, f"{mode}: the progress lines arrived while the cell ran"


def _streams(outputs: list[dict[str, Any]], name: str) -> str:
    return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == name)


def test_twelve_megabytes_of_stdout_arrive_or_are_cut_with_a_notice_and_later_cells_are_unharmed(kernel: Kernel) -> None:
    reply, outputs = kernel.run("print('x' * 12_000_000)", timeout=180)
    assert reply["content"]["status"] == "ok"
    text, notices = _streams(outputs, "stdout"), _streams(outputs, "stderr")
    if text != "x" * 12_000_000 + "\n":
        assert "output truncated" in notices and set(text) <= {"x", "\n"} and len(text) >= 4_000_000, notices[:300]
    reply, outputs = kernel.run("print('next')")
    assert reply["at"] < 5 and _streams(outputs, "stdout") == "next\n"


@pytest.mark.timeout(400)
def test_a_32_megabyte_dataframe_degrades_to_its_text_with_a_notice(kernel: Kernel) -> None:
    code = "import numpy as np, pandas as pd\npd.set_option('display.max_rows', None)\nbig = pd.DataFrame(np.arange(3_200_000).reshape(-1, 4))\nbig"
    reply, outputs = kernel.run(code, timeout=300)
    assert reply["content"]["status"] == "ok"
    assert "output too large" in _streams(outputs, "stderr")
    (result,) = content(outputs, "execute_result")
    assert set(result["data"]) == {"text/plain"} and result["data"]["text/plain"].lstrip().startswith("0")
    reply, outputs = kernel.run("pd.reset_option('display.max_rows')\nprint('next')")
    assert reply["at"] < 5 and _streams(outputs, "stdout") == "next\n"
