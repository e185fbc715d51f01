"""Run notebooks/csv-chart.ipynb headless on the Python 3 (Azure Sessions) kernel.

``python notebooks/run_demo.py --out DIR`` (what ``make demo`` runs after
installing the kernelspec): copies the notebook's data into DIR, executes the
notebook there with nbclient (so ``%download`` lands in DIR), writes the
executed notebook next to the downloaded chart, and prints where both are.
Exits non-zero with one clear message when anything fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "csv-chart.ipynb"
DATA = HERE / "data" / "quarterly_results.csv"
CHART = "transportation_operating_profit.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DemoError(Exception):
    """The demo failed; the message says why and what to do."""


def execute_notebook(notebook: Path, workdir: Path, *, kernel_name: str = "azure-sessions", timeout: int = 600) -> nbformat.NotebookNode:
    """Execute ``notebook`` with ``workdir`` as the kernel's working directory; returns it executed.

    The notebook's ``data/`` folder is copied into ``workdir`` first, so that
    its relative ``%upload data/...`` lines work as they do next to the notebook.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    source_data = notebook.parent / "data"
    if source_data.is_dir():
        shutil.copytree(source_data, workdir / "data", dirs_exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=timeout, startup_timeout=180, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except NoSuchKernel:
        raise DemoError(
            f"The {kernel_name!r} kernelspec is not installed; install it with "
            f"`{sys.executable} -m azure_sessions_kernel.kernel.install --sys-prefix`."
        ) from None
    except CellExecutionError as exc:
        raise DemoError(f"A cell of {notebook.name} failed ({exc.ename}: {exc.evalue}).") from exc
    except (CellTimeoutError, DeadKernelError, RuntimeError, TimeoutError) as exc:
        raise DemoError(f"{notebook.name} could not run to the end: {exc}") from exc
    finally:
        nbformat.write(nb, workdir / notebook.name)  # also when it failed: the outputs show where
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="directory for the executed notebook and the chart (default: out)")
    parser.add_argument("--kernel", default="azure-sessions", help="kernelspec name (default: azure-sessions)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may take, including the pool's first start (default: 600)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    try:
        execute_notebook(NOTEBOOK, out, kernel_name=args.kernel, timeout=args.timeout)
        chart = out / CHART
        if not chart.is_file() or not chart.read_bytes().startswith(PNG_SIGNATURE):
            raise DemoError(f"The notebook ran, but {chart} is missing or not a PNG.")
    except DemoError as exc:
        print(f"make demo failed: {exc}", file=sys.stderr)
        if (out / NOTEBOOK.name).exists():
            print(f"The partly executed notebook is {out / NOTEBOOK.name}.", file=sys.stderr)
        return 1
    print(f"Executed notebook: {out / NOTEBOOK.name}")
    print(f"Chart (PNG):       {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
