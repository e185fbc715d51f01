"""Clients we did not write work against the local pool unchanged.

LangChain's ``langchain-azure-dynamic-sessions`` (PyPI) is the most used
Python client of this API (reference §11): ``SessionsPythonREPLTool`` speaks
2024-02-02-preview (``code/execute``, ``files/upload``, ``files/content``,
``files``) and deletes sessions with 2025-10-02-preview; ``SessionsBashTool``
uses 2025-02-02-preview ``executions``. Only its token provider is replaced,
exactly as its documentation tells users to do for a custom identity.
"""

from __future__ import annotations

import base64
import json

import pytest

sessions = pytest.importorskip("langchain_azure_dynamic_sessions", reason="test extra 'langchain-azure-dynamic-sessions' is not installed")

pytestmark = pytest.mark.slow


@pytest.fixture
def tool(local_pool, identifier):
    t = sessions.SessionsPythonREPLTool(
        pool_management_endpoint=local_pool.endpoint,  # no trailing slash: the tool adds it
        access_token_provider=lambda: local_pool.token,
        session_id=identifier,
    )
    yield t
    t.close()


def test_langchain_python_tool_executes_keeps_state_and_returns_images(tool):
    assert tool.execute("x = 6")["status"] == "Success"
    content, artifact = tool._run("x * 7")
    assert json.loads(content) == {"result": 42, "stdout": "", "stderr": ""}
    _, artifact = tool._run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert artifact["result"]["type"] == "image"
    assert base64.b64decode(artifact["result"]["base64_data"]).startswith(b"\x89PNG")
    out = json.loads(tool.invoke("print('hello from langchain')"))
    assert out["stdout"] == "hello from langchain\n" and out["result"] == ""


def test_langchain_python_tool_files_round_trip(tool, tmp_path):
    src = tmp_path / "quarterly.csv"
    src.write_text("q,profit\nQ1,10\n")
    meta = tool.upload_file(local_file_path=str(src), remote_file_path="quarterly.csv")
    assert meta.filename == "quarterly.csv" and meta.size_in_bytes == src.stat().st_size
    assert [f.filename for f in tool.list_files()] == ["quarterly.csv"]
    assert json.loads(tool.invoke("open('/mnt/data/quarterly.csv').read()"))["result"] == "q,profit\nQ1,10\n"
    data = tool.download_file(remote_file_path="quarterly.csv")
    assert data.read() == src.read_bytes()
    tool.delete_session()  # DELETE session @ 2025-10-02-preview
    assert tool.list_files() == []  # the same identifier starts afresh


def test_langchain_bash_tool_reaches_the_pool_and_gets_a_clear_refusal(local_pool, identifier):
    import requests

    bash = sessions.SessionsBashTool(
        pool_management_endpoint=local_pool.endpoint,
        access_token_provider=lambda: local_pool.token,
        session_id=identifier,
    )
    # Ours is a Python (PythonLTS) pool, like Azure's code interpreter: Shell bodies are refused, clearly.
    with pytest.raises(requests.HTTPError) as err:
        bash.execute("echo hi")
    assert err.value.response.status_code == 400
    assert "Shell pools" in err.value.response.json()["error"]["message"]
