"""What sessions have: the default image's packages and file types, %pip, and images users build.

Through the installed kernel against real local pools. %pip runs on both
kinds of pool: cells that run natively on the normal one, cells run through
the in-session helper on the Azure-strict one.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from azure_sessions_kernel.client import acquire_local_pool_sync
from azure_sessions_kernel.pool.image import find_image, resolve_image

from ._support import KERNEL_NAME, environment, execute, first_cell, install_kernelspec, readable_text, write_kernel_config
from .test_notebooks import NOTEBOOKS, run_demo

pytestmark = pytest.mark.slow

FOUNDRY_FILE_TYPES = ["csv", "json", "xml", "html", "md", "txt", "code", "docx", "pptx", "xlsx", "pdf", "png", "jpeg", "gif", "zip", "tar"]
NO_EGRESS = "pip cannot reach the package index from this session (it has no network access): use a session image"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_kernelspec(tmp_path_factory.mktemp("prefix"))


def _configure(pool: Any, jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    ipython_dir = tmp_path_factory.mktemp("ipython")
    write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
    return environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir))


# --------------------------------------------------------------------------
# The default image: every promised package and Foundry file type
# --------------------------------------------------------------------------


def test_the_default_image_has_every_package_and_round_trips_every_file_type(local_pool, jupyter_path, tmp_path_factory, tmp_path) -> None:
    with _configure(local_pool, jupyter_path, tmp_path_factory):
        nb = run_demo.execute_notebook(NOTEBOOKS / "packages-and-files.ipynb", tmp_path)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "imported 33 packages" in printed and "ipywidgets 8." in printed
    summary = nb.cells[-1].outputs
    assert summary[-1]["data"]["text/plain"] == str(len(FOUNDRY_FILE_TYPES))
    assert re.findall(r"^(\w+) +ok$", summary[0]["text"], re.M) == FOUNDRY_FILE_TYPES
    charts = [o for o in nb.cells[-2].outputs if o.output_type == "display_data"]
    plotly = [o["data"] for o in charts if "application/vnd.plotly.v1+json" in o["data"]]
    assert len(plotly) == 1, [list(o["data"]) for o in charts]
    figure = plotly[0]["application/vnd.plotly.v1+json"]
    assert figure["data"][0]["type"] == "bar" and list(figure["data"][0]["x"]) == ["Oslo", "Lima", "Pune"]
    assert "text/html" in plotly[0]  # for frontends without plotly's renderer: loads plotly.js from its CDN
    assert any("image/png" in o["data"] for o in charts)


# --------------------------------------------------------------------------
# %pip and !pip without egress
# --------------------------------------------------------------------------


def _wheel(directory: Path, name: str, version: str = "1.0") -> Path:
    """A minimal pure-Python wheel whose module has ANSWER = 42."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": b"ANSWER = 42\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
              for path, data in files.items()]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


@pytest.fixture(scope="module", params=["local_pool", "strict_pool"])
def kernel(request: pytest.FixtureRequest, jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    workdir = tmp_path_factory.mktemp("work")
    with _configure(request.getfixturevalue(request.param), jupyter_path, tmp_path_factory):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(workdir))
        kc.workdir = workdir
        yield kc
        kc.stop_channels()
        km.shutdown_kernel(now=False)


@pytest.mark.parametrize("command", ["%pip install tabulate2", "!pip install -q tabulate2", "!python -m pip install tabulate2"])
def test_pip_without_egress_fails_at_once_naming_the_ways_out(kernel, command) -> None:
    started = time.monotonic()
    reply, outputs = execute(kernel, f"{command}\nprint('not reached')")
    elapsed = time.monotonic() - started
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "PipError" and reply["content"]["evalue"].startswith(NO_EGRESS)
    assert "a pool with egress" in reply["content"]["evalue"] and "%upload" in reply["content"]["evalue"]
    assert "not reached" not in readable_text(outputs)
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_an_uploaded_wheel_installs_offline_and_imports_at_once(kernel) -> None:
    name = f"askwheel_{secrets.token_hex(4)}"
    wheel = _wheel(kernel.workdir, name)
    reply, outputs = execute(kernel, f"%upload {wheel}")
    assert reply["content"]["status"] == "ok", readable_text(outputs)
    reply, outputs = execute(kernel, f"%pip install /mnt/data/{wheel.name}\nimport {name}\n{name}.ANSWER", timeout=60)
    assert reply["content"]["status"] == "ok", readable_text(outputs)
    assert "Installed into " in readable_text(outputs) and "42" in readable_text(outputs)
    # Installed for this session only, outside the read-only image; pip list sees it.
    reply, outputs = execute(kernel, f"import {name}, sys\nprint({name}.__file__.startswith(sys.prefix))\n!pip list")
    assert reply["content"]["status"] == "ok" and "False" in readable_text(outputs) and name.replace("_", "-") in readable_text(outputs).replace("_", "-")


def test_pip_refuses_to_uninstall_image_packages(kernel) -> None:
    reply, _ = execute(kernel, "%pip uninstall numpy")
    assert reply["content"]["status"] == "error"
    assert "cannot uninstall numpy" in reply["content"]["evalue"] and "read-only" in reply["content"]["evalue"]
    reply, _ = execute(kernel, "import numpy; numpy.__version__")
    assert reply["content"]["status"] == "ok"


# --------------------------------------------------------------------------
# Images users shape
# --------------------------------------------------------------------------

EXTRA = "tomli-w>=1.0\n"  # small, pure Python, not in the default set


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "image", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def custom_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    requirements = tmp_path_factory.mktemp("image") / "requirements.txt"
    requirements.write_text(EXTRA)
    built = _cli("build", "--requirements", str(requirements), "--name", name)
    assert built.returncode == 0, built.stderr
    yield name
    removed = _cli("remove", name)
    assert removed.returncode == 0 and not resolve_image(name).exists(), removed.stderr


def test_a_custom_image_selected_by_the_kernel_option_has_its_package(custom_image, tmp_path) -> None:
    default = find_image()
    default_stamp = (default.path / "image.json").read_bytes()
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "install", "--prefix", str(prefix), "--image", custom_image],
                   check=True, capture_output=True)
    with environment(JUPYTER_PATH=str(prefix / "share" / "jupyter"), IPYTHONDIR=str(tmp_path / "ipython"),
                     AZURE_SESSIONS_KERNEL_RUNTIME_DIR=str(tmp_path / "runtime")):
        default_lease = acquire_local_pool_sync(["--ready-sessions", "0"])  # another kernel's pool, on the default image
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
        try:
            reply, outputs = execute(kc, "import tomli_w\ntomli_w.dumps({'a': 1})", timeout=120)
            assert reply["content"]["status"] == "ok", readable_text(outputs)
            assert "a = 1" in readable_text(outputs)
            _, outputs = execute(kc, "%session")
            assert re.search(rf"^image\s+{custom_image} \(\d+ packages", readable_text(outputs), re.M), readable_text(outputs)
            _, outputs = execute(kc, "%session packages")
            assert re.search(r"^tomli_w==\d", readable_text(outputs).replace("tomli-w", "tomli_w"), re.M)
            pools = sorted((tmp_path / "runtime").glob("local-pool*.json"))
            assert len(pools) == 2, "the kernel started a pool of its image instead of joining the default one"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
            default_lease.release()
    assert (default.path / "image.json").read_bytes() == default_stamp
    assert "tomli-w" not in {n.lower() for n, _ in find_image().packages}


def test_an_unknown_image_fails_the_cell_naming_it(tmp_path) -> None:
    reply, outputs = first_cell(tmp_path, "1 + 1", image="no-such-image")
    assert reply["content"]["status"] == "error"
    assert "there is no image named 'no-such-image'" in readable_text(outputs) + reply["content"]["evalue"]


def test_bad_builds_say_why_and_leave_images_intact(custom_image, tmp_path) -> None:
    before = (resolve_image(custom_image) / "image.json").read_bytes()
    missing = _cli("build", "--requirements", str(tmp_path / "nope.txt"), "--name", custom_image)
    assert missing.returncode == 1 and "cannot read the requirements file" in missing.stderr
    unresolvable = tmp_path / "bad.txt"
    unresolvable.write_text(f"no-such-package-{secrets.token_hex(6)}==1.0\n")
    failed = _cli("build", "--requirements", str(unresolvable), "--name", custom_image)
    assert failed.returncode == 1 and f"the requirements in {unresolvable} do not resolve together with the default set" in failed.stderr
    assert "no-such-package" in failed.stderr
    conflict = tmp_path / "conflict.txt"
    conflict.write_text("numpy<1.20\n")  # against the lock's numpy
    failed = _cli("build", "--requirements", str(conflict), "--name", custom_image)
    assert failed.returncode == 1 and "do not resolve" in failed.stderr and "numpy" in failed.stderr
    assert (resolve_image(custom_image) / "image.json").read_bytes() == before
    assert not list(resolve_image(custom_image).parent.glob(f".{custom_image}.build-*")), "a failed build left its directory"
    listed = _cli("list")
    assert re.search(r"^default .*packages", listed.stdout, re.M) and re.search(rf"^{custom_image} .*packages", listed.stdout, re.M)
    unknown = _cli("remove", "no-such-image")
    assert unknown.returncode == 1 and "there is no image named 'no-such-image'" in unknown.stderr
    same = tmp_path / "same.txt"
    same.write_text(EXTRA)
    rebuilt = _cli("build", "--requirements", str(same), "--name", custom_image)
    assert rebuilt.returncode == 0 and "is up to date" in rebuilt.stderr  # nothing changed: nothing built
    assert (resolve_image(custom_image) / "image.json").read_bytes() == before
