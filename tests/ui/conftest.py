"""Fixtures of the browser tests: a JupyterLab server, a headless Chromium, the kernels under test.

The kernels (``kernel_name``'s parameters):

* ``reference``: a plain local ipykernel with ipywidgets and tqdm, from ``.venv-ui-ref``
  (``make ui-deps``). It shows that the harness and the tests are right.
* ``azure-sessions`` / ``azure-sessions-strict``: our kernel on the session-wide local pool /
  ``--azure-strict`` pool (``tests/conftest.py``), whose sessions' comms it relays (issue 10).

Screenshots go to ``out/ui/`` and are listed at the end of the run.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from azure_sessions_kernel.kernel.install import write_kernelspec as write_azure_kernelspec

from ..kernel._support import write_kernel_config
from ._browser import Browser, BrowserError, launch, missing_prerequisites
from ._lab import Lab, start_lab, write_kernelspec
from ._notebook import Notebook, open_notebook

REPO = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = REPO / ".venv-ui-ref" / "bin" / "python"
SCREENSHOTS = REPO / "out" / "ui"

KERNELS = [
    pytest.param("reference", id="reference"),
    pytest.param("azure-sessions", id="azure-sessions-local"),
    pytest.param("azure-sessions-strict", id="azure-sessions-strict"),
]

#: The pool fixture (tests/conftest.py) behind each of our kernelspecs.
POOLS = {"azure-sessions": "local_pool", "azure-sessions-strict": "strict_pool"}

_saved: list[Path] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.ui)


def pytest_terminal_summary(terminalreporter) -> None:
    if _saved:
        terminalreporter.section("UI screenshots")
        for path in _saved:
            terminalreporter.line(str(path))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    server = start_lab(tmp_path_factory.mktemp("jupyterlab"))
    yield server
    assert server.stop() == 0, f"JupyterLab exited with {server.process.returncode}:\n{server.log_tail()}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    problem = missing_prerequisites()
    if problem:
        pytest.fail(problem, pytrace=False)  # never a skip: `make test` must have installed it
    driver = launch(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.close()


@pytest.fixture(params=KERNELS)
def kernel_name(request: pytest.FixtureRequest, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The kernelspec under test, written into the server's JUPYTER_PATH."""
    name = request.param
    ipython_dir = tmp_path_factory.mktemp("ipython")  # no user profile leaks into the kernels
    if name == "reference":
        if not REFERENCE_PYTHON.exists():
            pytest.fail(f"the reference kernel's venv is missing ({REFERENCE_PYTHON}): run `make ui-deps`", pytrace=False)
        spec = {"argv": [str(REFERENCE_PYTHON), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Reference ipykernel (ipywidgets)", "language": "python"}
    else:
        pool = request.getfixturevalue(POOLS[name])
        write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
        spec = write_azure_kernelspec(lab.kernels / name, display_name=f"Azure Sessions ({POOLS[name]})")
    return write_kernelspec(lab, name, {**spec, "env": {"IPYTHONDIR": str(ipython_dir)}})


@pytest.fixture
def notebook(request: pytest.FixtureRequest, browser: Browser, lab: Lab, kernel_name: str) -> Iterator[Callable[[list[str]], Notebook]]:
    """Factory: ``notebook(cells)`` opens a new notebook of ``cells`` for the kernel under test.

    At the end a screenshot of each is kept (``<test>-final.png``, whatever the outcome) and
    its kernel is shut down.
    """
    opened: list[Notebook] = []

    def open_(cells: list[str]) -> Notebook:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")  # test_x[reference] -> test_x-reference
        name = f"{stem}-{len(opened)}.ipynb" if opened else f"{stem}.ipynb"
        opened.append(open_notebook(browser, lab, kernel_name, cells, name=name, screenshots=SCREENSHOTS))
        return opened[-1]

    yield open_
    for nb in opened:
        try:
            nb.screenshot("final")
        except BrowserError as error:
            print(f"no final screenshot: {error}", file=sys.stderr)
        _saved.extend(nb.saved)
        print("screenshots:", *map(str, nb.saved), sep="\n  ")
        nb.close()
