"""Widgets and comms end to end, through jupyter_client, on the local pool and on an Azure-strict one.

The test plays the frontend's part of the comm protocol: it reads the
``comm_open`` messages the session publishes, sends ``comm_msg`` updates as a
widget view does when the user moves it, and checks what comes back and under
which parent. (tests/ui does the same in a real JupyterLab.)
"""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from typing import Any

import pytest
from azure_sessions_kernel.client import SessionsClient

from ._support import Kernel, content

pytestmark = pytest.mark.slow


def models(outputs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The ``comm_open`` contents of widget models called ``name`` (e.g. ``IntSliderModel``)."""
    return [m["content"] for m in outputs if m["msg_type"] == "comm_open" and m["content"]["data"]["state"].get("_model_name") == name]


def send_comm(kernel: Kernel, comm_id: str, data: dict[str, Any], msg_type: str = "comm_msg") -> str:
    """Send a comm message as a frontend does; its msg_id."""
    msg = kernel.kc.session.msg(msg_type, {"comm_id": comm_id, "data": data})
    kernel.kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def collect(kernel: Kernel, until: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """iopub messages until ``until(messages)`` holds (or ``timeout``: then it fails)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"gave up waiting; got {[(m['msg_type'], m['content']) for m in got][-10:]}"
        try:
            got.append(kernel.kc.get_iopub_msg(timeout=0.2))
        except queue.Empty:
            pass
    return got


def idle_for(msg_id: str) -> Any:
    return lambda got: any(m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in got)


def update(value: Any) -> dict[str, Any]:
    return {"method": "update", "state": {"value": value}, "buffer_paths": []}


def test_a_slider_opens_its_model_and_a_frontend_update_reaches_the_session(kernel: Kernel) -> None:
    reply, outputs = kernel.run(
        "import ipywidgets\ns = ipywidgets.IntSlider(value=3)\nseen = []\n"
        "s.observe(lambda change: (seen.append(change['new']), print('moved to', change['new'])), names='value')\ns"
    )
    assert reply["content"]["status"] == "ok"
    (slider,) = models(outputs, "IntSliderModel")
    assert slider["target_name"] == "jupyter.widget" and slider["data"]["state"]["value"] == 3
    view = content(outputs, "execute_result")[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == slider["comm_id"]

    msg_id = send_comm(kernel, slider["comm_id"], update(7))
    got = collect(kernel, idle_for(msg_id))
    printed = [m for m in got if m["msg_type"] == "stream"]
    assert [m["content"]["text"] for m in printed] == ["moved to 7\n"], "the observer ran once"
    assert printed[0]["parent_header"]["msg_id"] == msg_id, "its output has the update as parent"
    echo = [m for m in got if m["msg_type"] == "comm_msg"]
    assert echo and echo[0]["content"]["data"]["method"] == "echo_update"
    _, outputs = kernel.run("(s.value, seen)")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == "(7, [7])"

    kernel.kc.comm_info(target_name="jupyter.widget")
    info = kernel.kc.get_shell_msg(timeout=30)
    assert info["msg_type"] == "comm_info_reply" and info["content"]["comms"][slider["comm_id"]] == {"target_name": "jupyter.widget"}


def test_a_state_change_in_the_session_reaches_the_frontend(kernel: Kernel) -> None:
    _, outputs = kernel.run("import ipywidgets\nt = ipywidgets.Text(value='a')\nt")
    (model,) = models(outputs, "TextModel")
    _, outputs = kernel.run("t.value = 'from the session'")
    updates = [m["content"] for m in outputs if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == model["comm_id"]]
    assert updates and updates[-1]["data"]["state"] == {"value": "from the session"}


def test_binary_buffers_cross_in_both_directions(kernel: Kernel) -> None:
    _, outputs = kernel.run("import ipywidgets\nimage = ipywidgets.Image(value=bytes(range(256)), format='png')\nimage")
    (model,) = models(outputs, "ImageModel")
    opened = [m for m in outputs if m["msg_type"] == "comm_open" and m["content"]["comm_id"] == model["comm_id"]][0]
    assert opened["buffers"] and bytes(opened["buffers"][0]) == bytes(range(256))
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": model["comm_id"], "data": {"method": "update", "state": {}, "buffer_paths": [["value"]]}})
    kernel.kc.session.send(kernel.kc.shell_channel.socket, msg, buffers=[b"\x00\x01binary\xff"])
    collect(kernel, idle_for(msg["header"]["msg_id"]))
    _, outputs = kernel.run("bytes(image.value)  # a memoryview, as with ipykernel")
    assert content(outputs, "execute_result")[0]["data"]["text/plain"] == repr(b"\x00\x01binary\xff")


def test_tqdm_notebook_opens_a_progress_model_and_a_thread_moves_a_bar_after_its_cell(kernel: Kernel) -> None:
    reply, outputs = kernel.run("from tqdm.notebook import tqdm\nimport time\nfor i in tqdm(range(50)):\n    time.sleep(0.005)")
    assert reply["content"]["status"] == "ok"
    assert models(outputs, "FloatProgressModel") or models(outputs, "IntProgressModel")
    assert not any("IProgress not found" in m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")

    reply, outputs = kernel.run(
        "import threading, time, ipywidgets\nbar = ipywidgets.IntProgress(max=5)\ndisplay(bar)\n"
        "def work():\n    for i in range(5):\n        time.sleep(0.3)\n        bar.value = i + 1\n"
        "threading.Thread(target=work).start()"
    )
    (bar,) = models(outputs, "IntProgressModel")
    ended = reply["at"]

    def at_five(got: list[dict[str, Any]]) -> bool:
        return any(m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == bar["comm_id"] and m["content"]["data"].get("state", {}).get("value") == 5 for m in got)

    got = collect(kernel, at_five, timeout=20)
    values = [m["content"]["data"]["state"]["value"] for m in got if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == bar["comm_id"]]
    assert values == [1, 2, 3, 4, 5] and ended < 1.0, "the bar moved after its cell had ended"


def test_interact_with_an_output_widget_renders_again_when_the_slider_moves(kernel: Kernel) -> None:
    reply, outputs = kernel.run("import ipywidgets\ndef square(x):\n    print('square is', x * x)\nipywidgets.interact(square, x=(0, 10));")
    assert reply["content"]["status"] == "ok"
    (slider,) = models(outputs, "IntSliderModel")
    (out,) = models(outputs, "OutputModel")
    msg_id = send_comm(kernel, slider["comm_id"], update(6))
    got = collect(kernel, idle_for(msg_id))
    # The Output widget is told to capture this message's outputs, and they come under it.
    captures = [m for m in got if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == out["comm_id"]
                and m["content"]["data"].get("state", {}).get("msg_id") == msg_id]
    printed = [m for m in got if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id]
    assert captures, f"the Output widget's msg_id names the slider update: {[(m['msg_type'], m['content']) for m in got]}"
    assert "".join(m["content"]["text"] for m in printed) == "square is 36\n"


def test_matplotlib_widget_backend_opens_its_canvas(kernel: Kernel) -> None:
    reply, outputs = kernel.run("%matplotlib widget\nimport matplotlib.pyplot as plt\nfig = plt.figure()\nplt.plot([1, 2, 3])\nfig.canvas")
    assert reply["content"]["status"] == "ok", reply["content"].get("evalue")
    assert models(outputs, "MPLCanvasModel"), "ipympl's canvas model is opened"
    kernel.run("plt.close('all')\n%matplotlib inline")


def test_a_widget_of_a_replaced_session_gets_one_clear_error(kernel: Kernel) -> None:
    _, outputs = kernel.run("import ipywidgets\ndoomed = ipywidgets.IntSlider()\ndoomed")
    (slider,) = models(outputs, "IntSliderModel")
    pool = kernel.setup.pool
    SessionsClient(pool.endpoint, token=pool.token).delete_session(kernel.identifier())
    kernel.run("'a fresh session'")  # the notebook goes on in a new session
    msg_id = send_comm(kernel, slider["comm_id"], update(4))
    got = collect(kernel, idle_for(msg_id))
    errors = [m for m in got if m["msg_type"] == "error"]
    assert len(errors) == 1 and errors[0]["parent_header"]["msg_id"] == msg_id
    assert "session that has ended" in errors[0]["content"]["evalue"]


def test_the_kernel_itself_needs_no_widget_package() -> None:
    code = "import sys, azure_sessions_kernel.kernel.kernel; print([m for m in ('ipywidgets', 'tqdm.notebook', 'ipympl') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
