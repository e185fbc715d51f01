"""Sessions with egress (``serve --egress pypi``): %pip and HTTP clients through the pool's proxy.

Through the installed kernel, on a normal and an Azure-strict pool with the
allow-list (egress is a property of the pool's sandboxes, not of the API: on
Azure the session pool's EgressEnabled decides). The packages come from the
real package index, through this machine's gateway; the refusals are attacked
from inside in ``tests/test_attacks.py`` (``test_e*``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from ..conftest import launch_pool
from ._support import KERNEL_NAME, environment, execute, first_cell, install_kernelspec, readable_text, write_kernel_config

pytestmark = pytest.mark.slow

#: Small, pure Python, not in the default image.
PACKAGE, MODULE = "pyjokes==0.8.3", "pyjokes"
PACKAGE_2, MODULE_2 = "tomli-w==1.2.0", "tomli_w"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_kernelspec(tmp_path_factory.mktemp("prefix"))


@pytest.fixture(scope="module", params=["live", "strict"])
def kernel(request: pytest.FixtureRequest, jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pool = launch_pool("--cooldown", "600", "--egress", "pypi", strict=request.param == "strict")
    ipython_dir = tmp_path_factory.mktemp("ipython")
    write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
    workdir = tmp_path_factory.mktemp("work")
    try:
        with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
            km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(workdir))
            yield kc
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    finally:
        assert pool.stop() == 0


def test_pip_installs_from_the_index_through_the_proxy_and_imports_at_once(kernel) -> None:
    reply, outputs = execute(kernel, f"%pip install {PACKAGE}\nimport {MODULE}\nisinstance({MODULE}.get_joke(), str)", timeout=180)
    assert reply["content"]["status"] == "ok", readable_text(outputs)
    assert "Successfully installed pyjokes-0.8.3" in readable_text(outputs) and readable_text(outputs).rstrip().endswith("True")
    reply, outputs = execute(kernel, f"!pip install -q {PACKAGE_2}\nimport {MODULE_2}\n{MODULE_2}.dumps({{'a': 1}})", timeout=180)
    assert reply["content"]["status"] == "ok", readable_text(outputs)
    assert "a = 1" in readable_text(outputs)


def test_http_clients_reach_listed_hosts_with_the_host_ca_and_nothing_else(kernel) -> None:
    reply, outputs = execute(kernel, "import requests\nrequests.get('https://pypi.org/simple/pyjokes/', timeout=30).status_code", timeout=60)
    assert reply["content"]["status"] == "ok" and readable_text(outputs).strip().endswith("200"), readable_text(outputs)
    reply, outputs = execute(kernel, "requests.get('https://example.com/', timeout=30)", timeout=60)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "ProxyError"
    assert "example.com is not on this pool's egress allow-list" in reply["content"]["evalue"]


def test_an_index_off_the_list_fails_at_once_naming_the_list(kernel) -> None:
    execute(kernel, "import os\nos.environ['PIP_INDEX_URL'] = 'https://example.org/simple'")
    try:
        started = time.monotonic()
        reply, outputs = execute(kernel, "%pip install tabulate2", timeout=60)
        took = time.monotonic() - started
    finally:
        execute(kernel, "del os.environ['PIP_INDEX_URL']")
    assert reply["content"]["status"] == "error" and took < 5, (took, readable_text(outputs))
    assert reply["content"]["evalue"] == (
        "pip cannot reach example.org: example.org is not on this pool's egress allow-list. This pool allows pypi; "
        "add the index host to the pool's --egress (pypi is the package index).")


# --------------------------------------------------------------------------
# The one-line way: a kernelspec whose kernels start a pool with egress
# --------------------------------------------------------------------------


def test_install_egress_pypi_gives_the_kernel_a_pool_with_egress(tmp_path) -> None:
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "install", "--prefix", str(prefix), "--egress", "pypi"],
                   check=True, capture_output=True)
    runtime = tmp_path / "runtime"
    with environment(JUPYTER_PATH=str(prefix / "share" / "jupyter"), IPYTHONDIR=str(tmp_path / "ipython"),
                     AZURE_SESSIONS_KERNEL_RUNTIME_DIR=str(runtime)):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
        try:
            reply, outputs = execute(kc, f"%pip install -q {PACKAGE}\nimport {MODULE}\n{MODULE}.__name__", timeout=180)
            assert reply["content"]["status"] == "ok", readable_text(outputs)
            _, outputs = execute(kc, "%session")
            assert re.search(r"^egress\s+pypi$", readable_text(outputs), re.M), readable_text(outputs)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    [pool_file] = runtime.glob("local-pool*.json")
    assert pool_file.name != "local-pool.json"  # not the shared pool without egress


def test_a_bad_egress_option_fails_the_first_cell_naming_the_entry(tmp_path) -> None:
    reply, outputs = first_cell(tmp_path, "1 + 1", egress="pypi,169.254.169.254")
    assert reply["content"]["status"] == "error"
    assert "'169.254.169.254' is an IP address" in readable_text(outputs) + reply["content"]["evalue"]
    assert not list((tmp_path / "runtime").glob("local-pool*.json"))  # no pool was started
