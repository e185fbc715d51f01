"""Both notebooks executed headless, on both kinds of pool, and ``make demo``'s own path."""

from __future__ import annotations

import base64
import csv
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from ._support import KERNEL_NAME, environment, execute, install_kernelspec, png_info, write_kernel_config

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _load_run_demo():
    spec = importlib.util.spec_from_file_location("run_demo", NOTEBOOKS / "run_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_demo = _load_run_demo()


def _rows(sector: str | None = None) -> list[dict[str, str]]:
    with open(NOTEBOOKS / "data" / "quarterly_results.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if sector is None or r["sector"] == sector]


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_kernelspec(tmp_path_factory.mktemp("prefix"))


@pytest.fixture(scope="module", params=["local_pool", "strict_pool"])
def configured(request: pytest.FixtureRequest, jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    pool = request.getfixturevalue(request.param)
    ipython_dir = tmp_path_factory.mktemp("ipython")
    write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
    with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
        yield


def _outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


@pytest.mark.usefixtures("configured")
def test_csv_chart_notebook_makes_a_real_chart_of_the_data(tmp_path: Path) -> None:
    nb = run_demo.execute_notebook(run_demo.NOTEBOOK, tmp_path)
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    table = nb.cells[3].outputs[0]["data"]["text/html"]
    transportation = _rows("TRANSPORTATION")
    assert len(transportation) == 8
    for row in transportation:
        assert row["quarter"] in table and row["operating_profit_musd"] in table
    assert "TECHNOLOGY" not in table
    width, height, distinct_rows = png_info((tmp_path / run_demo.CHART).read_bytes())
    assert (width, height) == (960, 540) and distinct_rows > 100  # figsize 8x4.5 at 120 dpi, with content
    shown = [o for o in nb.cells[4].outputs if o.output_type == "display_data"]
    assert len(shown) == 1 and png_info(base64.b64decode(shown[0]["data"]["image/png"]))[2] > 100
    assert (tmp_path / "csv-chart.ipynb").exists()


@pytest.mark.usefixtures("configured")
def test_quickstart_notebook(tmp_path: Path) -> None:
    nb = run_demo.execute_notebook(NOTEBOOKS / "quickstart.ipynb", tmp_path)
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "execute_result" and o["data"]["text/plain"] == "42" for o in outputs)
    assert any(o.output_type == "execute_result" and "text/html" in o["data"] for o in outputs)  # DataFrame
    assert any(o.output_type == "display_data" and "image/png" in o["data"] for o in outputs)  # chart
    totals = {r["sector"]: r for r in csv.DictReader(open(tmp_path / "sector_totals.csv", newline=""))}
    expected = sum(float(r["revenue_musd"]) for r in _rows("ENERGY"))
    assert set(totals) == {r["sector"] for r in _rows()}
    assert abs(float(totals["ENERGY"]["revenue_musd"]) - expected) < 0.11


def test_make_demo_path_starts_and_stops_its_own_local_pool(tmp_path: Path, jupyter_path: Path, capsys) -> None:
    """No endpoint configured: kernels share a local pool started on demand; the last one to end stops it."""
    runtime = tmp_path / "runtime"
    ipython_dir = tmp_path / "ipython"  # no config file: the defaults
    with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir), AZURE_SESSIONS_KERNEL_RUNTIME_DIR=str(runtime)):
        first, second = (start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90) for _ in range(2))
        for km, kc in (first, second):
            reply, _ = execute(kc, "import os\nos.getcwd()", timeout=120)
            assert reply["content"]["status"] == "ok"
        pools = _processes_mentioning(str(runtime))
        assert len(pools) == 1, "both kernels use one pool"
        _stop(*first)
        time.sleep(2)
        assert _processes_mentioning(str(runtime)) == pools, "the pool stays while a kernel still uses it"
        _stop(*second)
        _wait_until_gone(runtime)

        assert run_demo.main(["--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"Executed notebook: {tmp_path / 'out' / 'csv-chart.ipynb'}" in printed
    assert f"Chart (PNG):       {tmp_path / 'out' / run_demo.CHART}" in printed
    _wait_until_gone(runtime)


def _stop(km, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def _wait_until_gone(runtime: Path) -> None:
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(runtime)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(runtime)) == [], "the local pool still runs after its last kernel ended"


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (the pool is started with its runtime file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_run_demo_explains_a_missing_kernelspec(tmp_path: Path, capsys) -> None:
    assert run_demo.main(["--out", str(tmp_path), "--kernel", "no-such-kernel"]) == 1
    assert "The 'no-such-kernel' kernelspec is not installed" in capsys.readouterr().err
