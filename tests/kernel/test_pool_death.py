"""A local pool that dies under its kernel (issue 12): reported in one line, replaced, nothing left over.

The kernel starts its own pool here (no endpoint configured), on a state
root, uid range and runtime directory of this test's own, so that what the
dead pool left behind can be counted exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_client.manager import start_new_kernel

from azure_sessions_kernel.client import LocalPoolLease, TransportError
from azure_sessions_kernel.kernel._remote import RemoteSession, SessionLostError
from azure_sessions_kernel.pool.sandbox.bwrap import DEFAULT_UID_BASE, STATE_ROOT_ENV, UID_BASE_ENV
from azure_sessions_kernel.pool.sandbox.disks import default_disk_root
from azure_sessions_kernel.pool.server import _remove_dead_pools_token_files

from ._support import KERNEL_NAME, environment, execute, install_kernelspec, write_kernel_config

V = "2025-10-02-preview"
STATE_ROOT = Path((os.environ.get(STATE_ROOT_ENV) or "/run/ask") + "-die")
UID_BASE = int(os.environ.get(UID_BASE_ENV) or DEFAULT_UID_BASE) + 90_000


def _pool_info(runtime: Path) -> dict[str, Any]:
    return json.loads((runtime / "local-pool.json").read_text())


def _open_sessions(info: dict[str, Any], count: int) -> None:
    """Give the pool ``count`` more sessions (so that it holds more slots than its successor will)."""
    with httpx.Client(base_url=info["endpoint"], headers={"Authorization": f"Bearer {info['token']}"}, timeout=120) as http:
        for i in range(count):
            r = http.post("/executions", params={"api-version": V, "identifier": f"extra-{i}-{os.getpid()}"}, json={"code": "1"})
            assert r.status_code == 200, r.text


def _running_slots() -> set[int]:
    """Slots whose session uid has live processes: the sandboxes of a running pool."""
    uids: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    uids.add(os.stat(f"/proc/{entry}").st_uid)
            except (OSError, IndexError):
                pass
    return {uid - UID_BASE for uid in uids if 0 <= uid - UID_BASE < 1000}


def _slot_remains() -> dict[str, set[int]]:
    """Per kind (state dirs, mounts, cgroup leaves, disk images), the slot numbers present on the host."""
    found: dict[str, set[int]] = {"state dirs": set(), "mounts": set(), "cgroups": set(), "disk images": set()}
    if STATE_ROOT.exists():
        found["state dirs"] = {int(p.name) for p in STATE_ROOT.iterdir() if p.name.isdigit()}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount = Path(line.split()[4])
        if mount.parent.parent == STATE_ROOT and mount.name == "data":
            found["mounts"].add(int(mount.parent.name))
    prefix = f"azure-sessions-{STATE_ROOT.name}"
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if Path(root).name == prefix:
            found["cgroups"] |= {int(d) for d in dirs if d.isdigit()}
            dirs[:] = []
        elif len(Path(root).relative_to("/sys/fs/cgroup").parts) >= 4:
            dirs[:] = []
    disks = default_disk_root(STATE_ROOT)
    if disks.exists():
        found["disk images"] = {int(p.stem) for p in disks.glob("*.img") if p.stem.isdigit()}
    return found


def _is_zombie_child(pid: int, parent: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False  # reaped
    return fields[0] == "Z" and int(fields[1]) == parent


def _lease(process: subprocess.Popen[bytes], *, ours: bool) -> LocalPoolLease:
    return LocalPoolLease("http://127.0.0.1:9", "token", {}, False, process.pid, process=process if ours else None)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_lease_on_a_pool_this_kernel_started_reaps_it_when_it_dies() -> None:
    pool = _sleeper()
    lease = _lease(pool, ours=True)
    assert lease.alive() and not lease.died(within=0.05)
    pool.kill()
    assert lease.died(within=5) and pool.returncode == -signal.SIGKILL  # waited for: no zombie


def test_a_lease_on_another_kernels_pool_counts_its_zombie_as_dead() -> None:
    pool = _sleeper()
    try:
        lease = _lease(pool, ours=False)
        assert lease.alive()
        os.kill(pool.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pool.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not lease.alive()  # a zombie its parent has not reaped yet is a dead pool
    finally:
        pool.wait()


def test_a_transport_error_is_a_lost_session_only_when_the_local_pool_died() -> None:
    async def main() -> None:
        pool = _sleeper()
        session = RemoteSession(endpoint=None, token=None, api_version="2025-10-02-preview", identifier="died")
        session._lease = _lease(pool, ours=True)
        session._prepared_session = "died"
        with pytest.raises(Exception) as alive:  # the pool runs: a network problem, as before
            with session._client_errors():
                raise TransportError("connection reset")
        assert type(alive.value).__name__ == "BackendError"
        pool.kill()
        with pytest.raises(SessionLostError, match="variables and files are lost. This cell was cut off"):
            with session._client_errors():
                raise TransportError("connection reset")
        assert session._prepared_session is None  # the next cell starts over, without a second error
        session._prepared_session = "died"  # had it died between cells: the next cell is told, once
        with pytest.raises(SessionLostError, match="This cell did not run"):
            await session.connect()
        assert session._lease is None and session.backend is None

    asyncio.run(main())


def test_a_new_pool_removes_the_token_files_of_killed_pools(tmp_path: Path) -> None:
    dead = _sleeper()
    dead.kill()
    dead.wait()
    for pid in (dead.pid, os.getpid()):
        (tmp_path / f"pool-{pid}.token").write_text("secret\n")
    (tmp_path / "pool-x.token").write_text("not ours\n")
    _remove_dead_pools_token_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"pool-{os.getpid()}.token", "pool-x.token"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["live", "strict"])
def test_a_killed_pool_fails_the_running_cell_and_the_next_cell_gets_a_new_pool(mode: str, tmp_path: Path) -> None:
    jupyter_path = install_kernelspec(tmp_path / "prefix")
    runtime = tmp_path / "runtime"
    ipython_dir = tmp_path / "ipython"
    write_kernel_config(ipython_dir, local_pool_args=["--azure-strict"] if mode == "strict" else [])
    env = {
        "JUPYTER_PATH": str(jupyter_path), "IPYTHONDIR": str(ipython_dir), "AZURE_SESSIONS_KERNEL_RUNTIME_DIR": str(runtime),
        STATE_ROOT_ENV: str(STATE_ROOT), UID_BASE_ENV: str(UID_BASE),
    }
    with environment(**env):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
    try:
        reply, _ = execute(kc, "x = 41", timeout=120)
        assert reply["content"]["status"] == "ok"
        dead = _pool_info(runtime)
        _open_sessions(dead, 3)
        kernel_pid = km.provisioner.process.pid

        msg_id = kc.execute("import time\nprint('running', flush=True)\ntime.sleep(120)")
        if mode == "live":  # live output: kill once the cell visibly runs
            while not (lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream")(kc.get_iopub_msg(timeout=30)):
                pass
        else:
            time.sleep(2)
        killed = time.monotonic()
        os.kill(dead["pid"], signal.SIGKILL)
        while (reply := kc.get_shell_msg(timeout=30))["parent_header"].get("msg_id") != msg_id:
            pass
        assert time.monotonic() - killed < 8
        while not (lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                   and m["content"]["execution_state"] == "idle")(kc.get_iopub_msg(timeout=30)):
            pass  # as a frontend does before its next cell (ipykernel aborts what arrives before it is idle)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "SessionLostError", reply["content"]
        assert "session pool stopped" in reply["content"]["evalue"] and "variables and files are lost" in reply["content"]["evalue"]

        reply, outputs = execute(kc, "'x' in globals(), 6 * 7", timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"] == ["(False, 42)"]
        alive = _pool_info(runtime)
        assert alive["pid"] != dead["pid"]
        assert not _is_zombie_child(dead["pid"], kernel_pid)  # the kernel reaped the pool it had started

        # The new pool cleaned what the dead one left (5 slots or more): only its own two sandboxes
        # remain (the kernel's session and the ready one), and only its token file.
        deadline = time.monotonic() + 60
        while len(running := _running_slots()) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        remains = _slot_remains()
        assert len(running) == 2 and all(found == running for found in remains.values()), (running, remains)
        assert sorted(p.name for p in runtime.glob("pool-*.token")) == [f"pool-{alive['pid']}.token"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    # The last lease is gone: the new pool ends and takes its sandboxes with it.
    deadline = time.monotonic() + 30
    while Path(f"/proc/{alive['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(not found for found in _slot_remains().values())
