"""Load (issue 12, item 7): 20 kernels at once on one local pool, 10 cells each, with unique markers.

Every cell prints its own marker and returns it; the test checks that each
marker arrives exactly once, in its own cell, on its own kernel: no output
lost, duplicated or misrouted. Bounded in count (200 cells) and time.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from ._support import KERNEL_NAME, content, environment, execute, write_kernel_config

pytestmark = pytest.mark.slow

KERNELS, CELLS = 20, 10


@pytest.mark.timeout(420)
def test_twenty_kernels_with_ten_cells_each_lose_duplicate_and_misroute_nothing(jupyter_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pool = request.getfixturevalue("local_pool")
    write_kernel_config(tmp_path / "ipython", endpoint=pool.endpoint, token=pool.token)
    nonce = secrets.token_hex(4)
    seen: dict[int, list[tuple[str, str, str]]] = {}
    failures: list[str] = []
    started = time.monotonic()

    def one_kernel(k: int) -> None:
        try:
            with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(tmp_path / "ipython")):
                km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=240, cwd=str(tmp_path))
        except Exception as exc:  # reported below, with every other kernel's outcome
            failures.append(f"kernel {k} did not start: {exc!r}")
            return
        try:
            for c in range(CELLS):
                marker = f"{nonce}-k{k}-c{c}"
                reply, outputs = execute(kc, f"print({marker!r})\n{marker!r}", timeout=240)
                if reply["content"]["status"] != "ok":
                    failures.append(f"{marker}: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
                    continue
                printed = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
                result = "".join(r["data"]["text/plain"] for r in content(outputs, "execute_result"))
                seen.setdefault(k, []).append((marker, printed, result))
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)

    threads = [threading.Thread(target=one_kernel, args=(k,)) for k in range(KERNELS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=400)
    assert not failures, failures[:5]
    for k in range(KERNELS):
        cells = seen.get(k, [])
        assert [marker for marker, _, _ in cells] == [f"{nonce}-k{k}-c{c}" for c in range(CELLS)], f"kernel {k}"
        for marker, printed, result in cells:
            assert printed == marker + "\n", f"{marker} printed {printed!r}"
            assert result == repr(marker), f"{marker} returned {result!r}"
    print(f"{KERNELS} kernels x {CELLS} cells in {time.monotonic() - started:.1f} s")  # shown with -s
