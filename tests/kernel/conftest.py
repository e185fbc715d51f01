"""Fixtures of the kernel tests: our kernelspec, and a kernel on each kind of pool.

``setup`` is module-scoped and parametrized: every test that uses it (or
``kernel``) runs twice, on a normal local pool ("live": the stream, stdin,
comms, interrupt and completion extensions) and on an Azure-strict pool
("strict": nothing but the Azure contract, as on Azure itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from ._support import KERNEL_NAME, Kernel, Setup, environment, install_kernelspec, write_kernel_config


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_kernelspec(tmp_path_factory.mktemp("prefix"))


@pytest.fixture(scope="module", params=["live", "strict"])
def setup(request: pytest.FixtureRequest, jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    pool = request.getfixturevalue("local_pool" if request.param == "live" else "strict_pool")
    ipython_dir = tmp_path_factory.mktemp(f"ipython-{request.param}")
    write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
    workdir = tmp_path_factory.mktemp(f"work-{request.param}")
    with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
        yield Setup(request.param, pool, workdir)


@pytest.fixture(scope="module")
def kernel(setup: Setup) -> Iterator[Kernel]:
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(setup.workdir))
    yield Kernel(km, kc, setup)
    kc.stop_channels()
    km.shutdown_kernel(now=False)
