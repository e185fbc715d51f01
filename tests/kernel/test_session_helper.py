"""The in-session helper, run in a plain local IPython shell through the exact
snippets the kernel sends (``_calls``), as a session would run them."""

from __future__ import annotations

import builtins
import sys

import pytest
from IPython.core.interactiveshell import InteractiveShell

from azure_sessions_kernel.kernel import _calls
from azure_sessions_kernel.kernel import _session_helper as helper


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    shell.colors = "nocolor"  # plain tracebacks, so their text can be checked
    result = shell.run_cell(_calls.install_code(), store_history=True)
    assert _calls.decode_install(result.result) == _calls.INSTALLED
    yield shell
    sys.modules.pop(helper.MODULE_NAME, None)


def run(shell, code, count=1, **kwargs):
    """Run ``code`` as the kernel would and return the decoded helper reply."""
    outer = shell.run_cell(_calls.run_code(code, count, **kwargs), store_history=True)
    assert outer.success, outer.error_in_exec
    return _calls.decode_cell_reply(outer.result)


def kinds(reply):
    return [o["msg_type"] for o in reply["outputs"]]


def test_install_is_idempotent_and_leaves_the_namespace_alone(shell):
    names = {k for k in shell.user_ns if not k.startswith("_")}
    again = shell.run_cell(_calls.install_code(), store_history=True)
    assert _calls.decode_install(again.result) == _calls.INSTALLED
    assert {k for k in shell.user_ns if not k.startswith("_")} == names


def test_outputs_arrive_in_produced_order(shell):
    reply = run(
        shell,
        "import sys\nprint('one')\nprint('two')\nprint('oops', file=sys.stderr)\n"
        "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\nprint('three')\n6 * 7",
        count=5,
    )
    assert reply["status"] == "ok"
    assert kinds(reply) == ["stream", "stream", "display_data", "stream", "execute_result"]
    out = reply["outputs"]
    assert out[0]["content"] == {"name": "stdout", "text": "one\ntwo\n"}  # consecutive writes merged
    assert out[1]["content"] == {"name": "stderr", "text": "oops\n"}
    assert out[2]["content"]["data"]["text/html"] == "<b>x</b>"
    assert out[4]["content"] == {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 5}


def test_full_mime_bundles_and_metadata(shell):
    reply = run(
        shell,
        "class Rich:\n"
        "    def _repr_html_(self): return '<i>rich</i>'\n"
        "    def _repr_markdown_(self): return '*rich*'\n"
        "    def _repr_latex_(self): return r'$\\alpha$'\n"
        "    def _repr_json_(self): return {'a': [1, 2]}\n"
        "    def _repr_svg_(self): return '<svg xmlns=\"http://www.w3.org/2000/svg\"/>'\n"
        "    def __repr__(self): return 'Rich()'\n"
        "from IPython.display import display\n"
        "display(Rich(), metadata={'isolated': True})\n"
        "Rich()",
        count=6,
    )
    shown, result = reply["outputs"]
    expected = {"text/plain", "text/html", "text/markdown", "text/latex", "application/json", "image/svg+xml"}
    assert set(shown["content"]["data"]) == expected
    assert shown["content"]["data"]["application/json"] == {"a": [1, 2]}
    assert shown["content"]["metadata"] == {"isolated": True}
    assert result["msg_type"] == "execute_result" and set(result["content"]["data"]) == expected


def test_display_updates_keep_their_display_id(shell):
    reply = run(
        shell,
        "from IPython.display import display\nh = display('first', display_id=True)\nh.update('second')",
    )
    first, update = reply["outputs"]
    assert (first["msg_type"], update["msg_type"]) == ("display_data", "update_display_data")
    display_id = first["content"]["transient"]["display_id"]
    assert display_id and update["content"]["transient"] == {"display_id": display_id}
    assert update["content"]["data"]["text/plain"] == "'second'"


def test_clear_output_is_recorded_in_place(shell):
    reply = run(shell, "from IPython.display import clear_output\nprint('a')\nclear_output(wait=True)\nprint('b')")
    assert [(o["msg_type"], o["content"]) for o in reply["outputs"]] == [
        ("stream", {"name": "stdout", "text": "a\n"}),
        ("clear_output", {"wait": True}),
        ("stream", {"name": "stdout", "text": "b\n"}),
    ]


def test_an_exception_is_an_error_with_an_ipython_traceback(shell):
    reply = run(shell, "print('before')\nx = 1\n1 / 0", count=12)
    assert reply["status"] == "error"
    assert (reply["ename"], reply["evalue"]) == ("ZeroDivisionError", "division by zero")
    assert kinds(reply) == ["stream", "error"]
    error = reply["outputs"][1]["content"]
    assert error["ename"] == "ZeroDivisionError" and error["traceback"] == reply["traceback"]
    text = "\n".join(error["traceback"])
    assert "Cell In[12], line 3" in text  # the notebook's count and the cell's own line number
    assert "_session_helper" not in text and "azure-sessions-kernel helper" not in text


def test_syntax_error(shell):
    reply = run(shell, "def f(:\n    pass")
    assert reply["status"] == "error" and reply["ename"] == "SyntaxError"
    assert kinds(reply) == ["error"]


def test_keyboard_interrupt_in_a_cell_is_an_error_and_state_survives(shell):
    reply = run(shell, "kept = 'yes'\nraise KeyboardInterrupt")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert run(shell, "kept")["outputs"][0]["content"]["data"]["text/plain"] == "'yes'"


def test_input_raises_a_clear_error_and_is_restored(shell):
    saved = builtins.input
    reply = run(shell, "name = input('Your name? ')")
    assert reply["status"] == "error" and reply["ename"] == "StdinNotImplementedError"
    assert "remote session, which has no stdin" in reply["evalue"]
    assert builtins.input is saved


def test_state_persists_and_channels_are_restored(shell):
    stdout, stderr, display_pub = sys.stdout, sys.stderr, shell.display_pub
    before = shell.execution_count
    run(shell, "counter = 41", count=1)
    # Only the session's own cell (our call) counted: its history numbering never collides.
    assert shell.execution_count == before + 1
    reply = run(shell, "counter += 1\ncounter")
    assert reply["outputs"][-1]["content"]["data"]["text/plain"] == "42"
    assert (sys.stdout, sys.stderr, shell.display_pub) == (stdout, stderr, display_pub)
    assert "write_format_data" not in vars(shell.displayhook)
    assert "_showtraceback" not in vars(shell)


def test_user_expressions_are_evaluated_after_success(shell):
    reply = run(shell, "base = 20", user_expressions={"double": "base * 2"})
    assert reply["user_expressions"]["double"]["data"]["text/plain"] == "40"


def test_silent_cells_show_no_result(shell):
    reply = run(shell, "7 * 6", count=None, silent=True)
    assert reply["status"] == "ok" and reply["outputs"] == []


def test_a_trailing_semicolon_silences_the_result_but_never_the_reply(shell):
    reply = run(shell, "print('shown')\n40 + 2;")
    assert kinds(reply) == ["stream"]
    assert run(shell, "40 + 2")["outputs"][0]["msg_type"] == "execute_result"


def test_top_level_await(shell):
    reply = run(shell, "import asyncio\nawait asyncio.sleep(0)\nprint('awaited')\n'done'", top_level_await=True)
    assert kinds(reply) == ["stream", "execute_result"]


def test_a_large_reply_is_written_to_a_file_the_result_points_to(shell, tmp_path, monkeypatch):
    installed = sys.modules[helper.MODULE_NAME]
    monkeypatch.setattr(installed, "SPILL_BYTES", 1000)
    monkeypatch.setattr(installed, "SPILL_DIR", str(tmp_path))
    pointer = run(shell, "print('x' * 5000)")
    assert set(pointer) == {"azure_sessions_kernel", "spilled"}
    spilled = _calls.decode_cell_reply((tmp_path / pointer["spilled"]).read_text())
    assert spilled["outputs"] == [{"msg_type": "stream", "content": {"name": "stdout", "text": "x" * 5000 + "\n"}}]
    assert run(shell, "print('small')")["outputs"][0]["content"]["text"] == "small\n"


def test_missing_helper_is_reported_not_run(shell):
    module = sys.modules.pop(helper.MODULE_NAME)
    try:
        outer = shell.run_cell(_calls.run_code("side_effect = 1", 3))
        with pytest.raises(_calls.HelperMissing):
            _calls.decode_cell_reply(outer.result)
        assert "side_effect" not in shell.user_ns
    finally:
        sys.modules[helper.MODULE_NAME] = module


def test_completion_and_inspection_see_the_session_namespace(shell):
    run(shell, "remote_only_variable = 3\ndef remote_function():\n    'Documented remotely.'")
    outer = shell.run_cell(_calls.complete_code("x = remote_on", 13))
    reply = _calls.decode(outer.result)
    assert "remote_only_variable" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 13)
    outer = shell.run_cell(_calls.inspect_code("remote_function", 5))
    reply = _calls.decode(outer.result)
    assert reply["found"] and "Documented remotely." in reply["data"]["text/plain"]
    outer = shell.run_cell(_calls.inspect_code("no_such_name_here", 3))
    assert _calls.decode(outer.result)["found"] is False


def test_decode_accepts_the_repr_a_jupyter_format_pool_returns():
    assert _calls.decode(repr('{"a": 1}')) == {"a": 1}
    assert _calls.decode('{"a": 1}') == {"a": 1}
    with pytest.raises(_calls.HelperMissing):
        _calls.decode(repr(_calls.HELPER_MISSING))
    with pytest.raises(ValueError):
        _calls.decode_cell_reply('{"something": "else"}')
