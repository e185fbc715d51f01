"""The session sandbox: image, in-sandbox runner, bwrap and insecure launchers.

Kernels here are real: a bubblewrap sandbox running the session image's
Python, driven with ``jupyter_client`` as the pool drives it. Tests that need
bubblewrap carry the ``sandbox`` mark and skip (with the reason) only where
bwrap or root is really missing; on the project's machines nothing skips.
The session image must be built first (``make setup`` does it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.asynchronous import AsyncKernelClient

from azure_sessions_kernel.pool.image import ImageError, ImageInfo, find_image
from azure_sessions_kernel.pool.sandbox import bwrap as bwrap_mod
from azure_sessions_kernel.pool.sandbox import cgroups as cgroups_mod
from azure_sessions_kernel.pool.sandbox import disks as disks_mod
from azure_sessions_kernel.pool.sandbox.base import SandboxLimitsError
from azure_sessions_kernel.pool.sandbox.bwrap import BwrapLauncher, SandboxLimits, SandboxSpec, build_bwrap_argv
from azure_sessions_kernel.pool.sandbox.insecure import InsecureLauncher
from azure_sessions_kernel.pool.sandbox.seccomp import build_seccomp_bpf

from .conftest import load_runner

MiB = 1024 * 1024
# Beside this run's pools ($AZURE_SESSIONS_KERNEL_STATE_ROOT/_UID_BASE), so runs side by side never meet.
STATE_ROOT = (os.environ.get(bwrap_mod.STATE_ROOT_ENV) or "/run/ask") + "-test"
UID_BASE = int(os.environ.get(bwrap_mod.UID_BASE_ENV) or bwrap_mod.DEFAULT_UID_BASE) + 60_000

IS_ROOT = os.geteuid() == 0
HAS_BWRAP = shutil.which("bwrap") is not None
needs_root = pytest.mark.skipif(not IS_ROOT, reason="per-session uids, cgroups and tmpfs quotas need root")


runner = load_runner()


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image() -> ImageInfo:
    try:
        return find_image()
    except ImageError as exc:
        pytest.fail(f"{exc} (the Makefile builds it before running the tests)")


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def run_async(loop, coro, timeout: float = 60):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def launcher(image, loop):
    launcher = BwrapLauncher(image, state_root=STATE_ROOT, uid_base=UID_BASE)
    yield launcher
    run_async(loop, launcher.close())


class Kernel:
    """A started sandbox with a connected client."""

    def __init__(self, sandbox, client: AsyncKernelClient):
        self.sandbox = sandbox
        self.client = client

    async def execute(self, code: str, metadata: dict | None = None, timeout: float = 30) -> tuple[dict, list[tuple[str, dict]]]:
        """Run ``code``; returns the execute_reply content and the iopub (type, content) pairs."""
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        msg = self.client.session.msg("execute_request", content, metadata=metadata or {})
        self.client.shell_channel.send(msg)
        return await self.collect(msg["header"]["msg_id"], timeout)

    async def collect(self, msg_id: str, timeout: float = 30) -> tuple[dict, list[tuple[str, dict]]]:
        outputs = []
        while True:
            msg = await self.client.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            if msg["msg_type"] != "status":
                outputs.append((msg["msg_type"], msg["content"]))
        while True:
            reply = await self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"], outputs

    async def value(self, code: str) -> Any:
        """The ``text/plain`` of ``code``'s result, evaluated with ``ast.literal_eval``."""
        import ast

        reply, outputs = await self.execute(code)
        assert reply["status"] == "ok", reply
        results = [c["data"]["text/plain"] for t, c in outputs if t == "execute_result"]
        assert results, outputs
        return ast.literal_eval(results[0])


async def start_kernel(launcher) -> Kernel:
    sandbox = await launcher.start()
    client = AsyncKernelClient()
    client.load_connection_info(sandbox.connection_info)
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
    except RuntimeError:
        client.stop_channels()
        reason = sandbox.death_reason()
        await sandbox.kill()
        raise AssertionError(f"kernel not ready: {reason}") from None
    return Kernel(sandbox, client)


async def stop_kernel(kernel: Kernel) -> None:
    kernel.client.stop_channels()
    await kernel.sandbox.kill()


@pytest.fixture(scope="module")
def kernel(launcher, loop):
    kernel = run_async(loop, start_kernel(launcher))
    yield kernel
    run_async(loop, stop_kernel(kernel))


def describe_processes(pids: list[int]) -> str:
    """``ps``-like lines for an assertion message."""
    lines = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
        lines.append(f"{stat[:80]} | {cmdline}")
    return "\n".join(lines)


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


# --------------------------------------------------------------------------
# Pure logic: the Azure result, the bwrap argv, the seccomp filter
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "value", "succeeded", "strings_as_repr", "expected"),
    [
        ("x = 41", None, True, False, {"kind": "empty"}),
        ("print('hi')", None, True, False, {"kind": "empty"}),
        ("None", None, True, False, {"kind": "none"}),
        ("x", None, True, False, {"kind": "none"}),
        ("x + 1;", None, True, False, {"kind": "empty"}),
        ("x + 1", 42, True, False, {"kind": "json", "value": 42}),
        ("x > 1", True, True, False, {"kind": "json", "value": True}),
        ("1.5", 1.5, True, False, {"kind": "json", "value": 1.5}),
        ("float('nan')", float("nan"), True, False, {"kind": "json", "value": "nan"}),
        ("-float('inf')", float("-inf"), True, False, {"kind": "json", "value": "-inf"}),
        ("'nan'", "nan", True, False, {"kind": "json", "value": "nan"}),
        ("'nan'", "nan", True, True, {"kind": "json", "value": "'nan'"}),
        ("{'a': 1}", {"a": 1}, True, False, {"kind": "text"}),
        ("1/0", None, False, False, {"kind": "empty"}),
    ],
)
def test_describe_result_follows_azure(cell, value, succeeded, strings_as_repr, expected):
    assert runner.describe_result(value, succeeded, cell, strings_as_repr) == expected


def test_describe_result_sends_int_subclasses_as_text():
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    assert runner.describe_result(Colour.RED, True, "Colour.RED") == {"kind": "text"}


def test_bwrap_argv_has_the_hardening(image, tmp_path):
    spec = SandboxSpec(
        bwrap="/usr/bin/bwrap", image=image, runner=tmp_path / "r.py", kernel_dir=tmp_path / "k",
        data_dir=tmp_path / "d", etc_dir=tmp_path / "etc", limits=SandboxLimits(tmp_size=64 * MiB),
        seccomp_fd=7, status_fd=8,
    )
    argv = build_bwrap_argv(spec)
    joined = " ".join(argv)
    for flag in ("--unshare-all --unshare-user --disable-userns", "--cap-drop ALL", "--die-with-parent",
                 "--new-session", "--clearenv", "--ro-bind /proc/sys /proc/sys", "--seccomp 7",
                 "--json-status-fd 8", f"--size {64 * MiB} --tmpfs /tmp", "--remount-ro /",
                 f"--bind {tmp_path / 'd'} /mnt/data", f"--bind {tmp_path / 'k'} /run/jk"):
        assert flag in joined, flag
    # /tmp must be mounted before the image so it cannot cover it.
    assert argv.index("/tmp") < argv.index(str(image.path))
    env = {argv[i + 1]: argv[i + 2] for i, arg in enumerate(argv) if arg == "--setenv"}
    assert env["HOME"] == "/mnt/data" and env["OMP_NUM_THREADS"] == "1"
    assert not set(env) & {"USERPROFILE", "SSH_AUTH_SOCK", "AZURE_CLIENT_SECRET", "PWD"}
    assert argv[argv.index("--") + 1 :] == [str(image.python), bwrap_mod.SANDBOX_RUNNER, "-f", "/run/jk/kernel.json"]


def test_bwrap_argv_binds_a_base_interpreter_outside_usr(image, tmp_path):
    import dataclasses

    elsewhere = dataclasses.replace(image, base_prefix=Path("/opt/python3.11"))
    spec = SandboxSpec(
        bwrap="/usr/bin/bwrap", image=elsewhere, runner=tmp_path / "r.py", kernel_dir=tmp_path / "k",
        data_dir=tmp_path / "d", etc_dir=tmp_path / "etc", limits=SandboxLimits(), seccomp_fd=None, status_fd=8,
    )
    joined = " ".join(build_bwrap_argv(spec))
    assert "--ro-bind /opt/python3.11 /opt/python3.11" in joined and "--seccomp" not in joined
    spec = dataclasses.replace(spec, image=dataclasses.replace(image, base_prefix=Path("/usr/local")))
    assert "--ro-bind /usr/local" not in " ".join(build_bwrap_argv(spec))


def test_seccomp_filter_covers_every_listed_call():
    bpf, unknown = build_seccomp_bpf()
    assert len(bpf) % 8 == 0 and len(bpf) > 400  # sock_filter instructions
    assert unknown == []


def test_pure_cgroup_v2_layout(tmp_path):
    """A v2-only host (no v1 controllers): limits go to a delegated parent at the v2 root."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "ask").mkdir()
    (root / "ask" / "cgroup.kill").write_text("")
    mountinfo = f"35 24 0:30 / {root} rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    hierarchies, missing = cgroups_mod._detect_hierarchies("ask", mountinfo, "0::/system.slice/pool.service\n")
    assert missing == {}
    [v2] = hierarchies
    assert (v2.version, v2.controllers, v2.parent, v2.has_kill) == (2, {"cpu", "memory", "pids"}, root / "ask", True)
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"

    cgroups = cgroups_mod._SessionCgroups.create(hierarchies, "3", SandboxLimits(memory=128 * MiB, pids=64, cpus=0.5))
    leaf = root / "ask" / "3"
    assert {name: (leaf / name).read_text() for name in ("memory.max", "pids.max", "cpu.max", "memory.oom.group")} == {
        "memory.max": str(128 * MiB), "pids.max": "64", "cpu.max": "50000 100000", "memory.oom.group": "1"}
    assert cgroups.procs_files == [str(leaf / "cgroup.procs")]
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    assert cgroups.oom_kills() == 1
    cgroups.kill(timeout=0.1)
    assert (leaf / "cgroup.kill").read_text() == "1"


def test_hybrid_cgroup_layout_nests_v1_memory_under_our_own(tmp_path):
    mounts = {name: tmp_path / name for name in ("memory", "pids", "cpu,cpuacct", "unified")}
    for path in mounts.values():
        path.mkdir()
    (mounts["unified"] / "cgroup.controllers").write_text("")
    mountinfo = "".join(
        f"{30 + i} 24 0:{40 + i} / {path} rw - {'cgroup2 cgroup2 rw' if name == 'unified' else f'cgroup cgroup rw,{name}'}\n"
        for i, (name, path) in enumerate(mounts.items())
    )
    own = "5:memory:/agents/a1\n4:pids:/\n3:cpu,cpuacct:/\n0::/\n"
    hierarchies, missing = cgroups_mod._detect_hierarchies("ask", mountinfo, own)
    parents = {(h.version, tuple(sorted(h.controllers))): h.parent for h in hierarchies}
    assert parents == {
        (1, ("memory",)): mounts["memory"] / "agents" / "a1" / "ask",
        (1, ("pids",)): mounts["pids"] / "ask",
        (1, ("cpu",)): mounts["cpu,cpuacct"] / "ask",
        (2, ()): mounts["unified"] / "ask",
    }
    assert set(missing) == {"cgroup-kill"}  # a plain directory has no cgroup.kill


def test_files_in_memory_may_take_at_most_half_of_the_memory_limit():
    assert SandboxLimits().memory_problem(data_in_memory=False) is None  # 256 MiB /tmp + 64 MiB /dev/shm of 1 GiB
    problem = SandboxLimits().memory_problem(data_in_memory=True)  # a tmpfs /mnt/data of 1 GiB would not fit
    assert problem and "--data-size 1 GiB" in problem and "--memory (1 GiB)" in problem
    problem = SandboxLimits(memory=512 * MiB, tmp_size=256 * MiB).memory_problem(data_in_memory=False)
    assert problem and problem.startswith("--tmp-size 256 MiB + /dev/shm 64 MiB are memory")
    assert SandboxLimits(memory=640 * MiB, tmp_size=256 * MiB).memory_problem(data_in_memory=False) is None


def test_find_image_names_the_fix_when_missing(tmp_path):
    with pytest.raises(ImageError, match="image build"):
        find_image(tmp_path / "nothing-here")


def test_image_lists_the_analyst_packages(image):
    names = {name.lower() for name, _ in image.packages}
    assert {"numpy", "pandas", "matplotlib", "scikit-learn", "scipy", "seaborn", "pillow", "openpyxl", "ipykernel"} <= names
    setuptools = dict((n.lower(), v) for n, v in image.packages)["setuptools"]
    assert int(setuptools.split(".")[0]) < 81  # pkg_resources must still exist
    assert (image.mpl_cache_dir).is_dir() and any(image.mpl_cache_dir.glob("fontlist-*.json"))


# --------------------------------------------------------------------------
# The kernel inside a sandbox
# --------------------------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
class TestKernelInSandbox:
    def test_results_follow_azure(self, kernel, loop):
        async def scenario():
            reply, _ = await kernel.execute("x = 41")
            assert reply["azure_sessions"] == {"kind": "empty"}
            reply, outputs = await kernel.execute("x + 1")
            assert reply["azure_sessions"] == {"kind": "json", "value": 42}
            assert ("execute_result", 42) in [(t, int(c["data"]["text/plain"])) for t, c in outputs if t == "execute_result"]
            reply, outputs = await kernel.execute("print('hello')")
            assert reply["azure_sessions"] == {"kind": "empty"}
            assert [c["text"] for t, c in outputs if t == "stream"] == ["hello\n"]
            reply, _ = await kernel.execute("None")
            assert reply["azure_sessions"] == {"kind": "none"}
            reply, _ = await kernel.execute("'nan'")
            assert reply["azure_sessions"] == {"kind": "json", "value": "nan"}
            reply, _ = await kernel.execute("'nan'", metadata={"azure_sessions": {"jupyter_format": True}})
            assert reply["azure_sessions"] == {"kind": "json", "value": "'nan'"}
            reply, _ = await kernel.execute("[x]")
            assert reply["azure_sessions"] == {"kind": "text"}
            reply, _ = await kernel.execute("1/0")
            assert reply["status"] == "error" and reply["azure_sessions"] == {"kind": "empty"}

        run_async(loop, scenario())

    def test_notebook_cells_run_under_their_count_without_an_azure_result(self, kernel, loop):
        async def scenario():
            reply, outputs = await kernel.execute("41 + 1", metadata={"azure_sessions": {"execution_count": 12, "result": False}})
            assert reply["execution_count"] == 12 and "azure_sessions" not in reply
            assert [(t, c["execution_count"]) for t, c in outputs] == [("execute_result", 12)]
            assert await kernel.value("Out[12]") == 42

        run_async(loop, scenario())

    def test_only_idle_and_outputs_are_published(self, kernel, loop):
        """No execute_input echo and no busy status: only the pool listens, and it needs neither."""
        async def scenario():
            msg = kernel.client.session.msg("execute_request", {"code": "print('x')", "silent": False, "store_history": True,
                                                                 "user_expressions": {}, "allow_stdin": False})
            kernel.client.shell_channel.send(msg)
            seen = []
            while not seen or seen[-1] != ("status", "idle"):
                m = await kernel.client.get_iopub_msg(timeout=30)
                if m["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                    seen.append((m["msg_type"], m["content"].get("execution_state") or m["content"].get("name")))
            assert seen == [("stream", "stdout"), ("status", "idle")]
            await kernel.client.get_shell_msg(timeout=30)

        run_async(loop, scenario())

    def test_session_environment(self, kernel, loop):
        async def scenario():
            assert await kernel.value("import os; os.getcwd()") == "/mnt/data"
            assert await kernel.value("os.environ['HOME'], os.environ['MPLBACKEND']") == (
                "/mnt/data", "module://matplotlib_inline.backend_inline")
            # The pre-built font cache was copied in: no font scan on first plot.
            assert await kernel.value("[n for n in os.listdir(os.environ['MPLCONFIGDIR']) if n.startswith('fontlist')] != []")
            assert await kernel.value("import pkg_resources, pandas, sklearn, seaborn, openpyxl, PIL; 'ok'") == "ok"
            # Nothing the runner or IPython wrote lands in the user's file area.
            assert await kernel.value("sorted(os.listdir('/mnt/data'))") == []

        run_async(loop, scenario())

    def test_plot_is_a_png(self, kernel, loop):
        reply, outputs = run_async(loop, kernel.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"))
        assert reply["status"] == "ok"
        images = [c["data"]["image/png"] for t, c in outputs if t == "display_data" and "image/png" in c["data"]]
        assert len(images) == 1 and images[0].startswith("iVBOR")  # base64 of the PNG signature

    def test_input_fails_at_once_naming_stdin(self, kernel, loop):
        started = time.monotonic()
        for code in ("input('name? ')", "import getpass; getpass.getpass()"):
            reply, _ = run_async(loop, kernel.execute(code))
            assert reply["status"] == "error"
            assert "remote session, which has no stdin" in reply["evalue"]
        assert time.monotonic() - started < 5

    def test_interrupt_stops_a_loop_and_keeps_state(self, kernel, loop):
        async def scenario():
            await kernel.execute("kept = 'still here'")
            msg_id = kernel.client.execute("while True: pass")
            await asyncio.sleep(0.5)
            kernel.client.control_channel.send(kernel.client.session.msg("interrupt_request", {}))
            reply, _ = await kernel.collect(msg_id, timeout=10)
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
            assert await kernel.value("kept") == "still here"

        run_async(loop, scenario())


# --------------------------------------------------------------------------
# Isolation
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_kernel(launcher, loop):
    kernel = run_async(loop, start_kernel(launcher))
    yield kernel
    run_async(loop, stop_kernel(kernel))


@pytest.mark.sandbox
@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
class TestIsolation:
    def test_no_route_to_host_loopback(self, kernel, loop):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            code = (
                "import socket\n"
                "try:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=3); r = 'connected'\n"
                "except OSError as e:\n"
                "    r = type(e).__name__\n"
                "r"
            )
            assert run_async(loop, kernel.value(code)) == "ConnectionRefusedError"

    def test_host_files_are_not_there(self, kernel, loop):
        code = f"import os; [os.path.exists(p) for p in ('/root', '/etc/shadow', '/work', {STATE_ROOT!r}, '/home')]"
        assert run_async(loop, kernel.value(code)) == [False] * 5
        assert run_async(loop, kernel.value("sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")) == [1, 2]

    def test_dangerous_calls_are_refused(self, kernel, loop):
        code = (
            "import ctypes, os, socket\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "def errno_of(nr, *args):\n"
            "    return None if libc.syscall(nr, *args) == 0 else os.strerror(ctypes.get_errno())\n"
            "def family(f, proto=0):\n"
            "    try: socket.socket(f, socket.SOCK_RAW, proto).close(); return 'ok'\n"
            "    except OSError as e: return e.strerror\n"
            "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
            "try: open('/proc/sys/kernel/core_pattern', 'w'); core = 'writable'\n"
            "except OSError as e: core = e.strerror\n"
            "[errno_of(101, 16, 1, 0, 0), errno_of(425, 1, 0), errno_of(272, 0x10000000), errno_of(435, 0, 0),\n"
            " family(socket.AF_PACKET), family(socket.AF_NETLINK, 9), family(socket.AF_NETLINK, 0),\n"
            " status['CapEff'], status['NoNewPrivs'], status['Seccomp'], core]"
        )
        assert run_async(loop, kernel.value(code)) == [
            "Operation not permitted", "Operation not permitted", "Operation not permitted", "Function not implemented",
            "Address family not supported by protocol", "Address family not supported by protocol", "ok",
            "0000000000000000", "1", "2", "Read-only file system",
        ]

    @needs_root
    def test_each_session_has_its_own_unprivileged_uid_and_files(self, kernel, second_kernel, loop):
        uids = [host_uid(k.sandbox.child_pid) for k in (kernel, second_kernel)]
        assert 0 not in uids and uids[0] != uids[1]
        assert all(UID_BASE <= uid < UID_BASE + 1000 for uid in uids)
        run_async(loop, kernel.execute("open('/mnt/data/mine.txt', 'w').write('first')"))
        assert (kernel.sandbox.data_dir / "mine.txt").read_text() == "first"
        assert not (second_kernel.sandbox.data_dir / "mine.txt").exists()
        assert run_async(loop, second_kernel.value("import os; os.listdir('/mnt/data')")) == []
        assert os.stat(kernel.sandbox.data_dir / "mine.txt").st_uid == uids[0]

    def test_launcher_reports_its_protections(self, launcher):
        isolation = launcher.isolation
        assert isolation["level"] == ("bwrap-root" if IS_ROOT else "bwrap-user")
        assert {"network-namespace", "seccomp", "no-capabilities"} <= set(isolation["protections"])
        assert "vm-boundary" in isolation["missing"]
        if IS_ROOT:
            assert {"per-session-uid", "cgroup-memory", "cgroup-pids", "data-quota", "data-disk"} <= set(isolation["protections"])


# --------------------------------------------------------------------------
# Limits, kill and clean-up
# --------------------------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
@needs_root
class TestLifecycle:
    def test_kill_leaves_nothing_behind(self, launcher, loop):
        kernel = run_async(loop, start_kernel(launcher))
        sandbox = kernel.sandbox
        uid, leaves = sandbox.uid, [leaf for _, leaf in sandbox._cgroups.leaves]
        assert leaves and all(leaf.is_dir() for leaf in leaves)
        assert os.path.ismount(sandbox.data_dir)
        image = launcher._disks.image(sandbox.slot)
        assert image.exists() and os.stat(sandbox.data_dir).st_uid == uid
        # A daemon that left the kernel's session and process group.
        run_async(loop, kernel.execute("import subprocess; subprocess.Popen(\"setsid sh -c 'sleep 1000 &'\", shell=True).wait()"))
        assert bwrap_mod._processes_of_uid(uid)
        run_async(loop, stop_kernel(kernel))
        assert bwrap_mod._processes_of_uid(uid) == []
        assert not os.path.ismount(sandbox.data_dir) and not sandbox.data_dir.parent.exists() and not image.exists()
        assert not any(leaf.exists() for leaf in leaves)
        assert not sandbox.is_alive() and sandbox.death_reason() == "the session was stopped"
        run_async(loop, sandbox.kill())  # a second kill is harmless

    def test_memory_and_data_limits(self, image, loop):
        small = BwrapLauncher(
            image, SandboxLimits(memory=128 * MiB, data_size=4 * MiB, tmp_size=16 * MiB, pids=48), state_root=STATE_ROOT, uid_base=UID_BASE
        )
        try:
            kernel = run_async(loop, start_kernel(small))
            code = (
                "try:\n"
                "    open('/mnt/data/big', 'wb').write(b'x' * (8 << 20)); r = 'written'\n"
                "except OSError as e:\n"
                "    r = e.strerror\n"
                "r"
            )
            assert run_async(loop, kernel.value(code)) == "No space left on device"
            threads = (
                "import threading\n"
                "gate, started = threading.Event(), []\n"
                "try:\n"
                "    for _ in range(100):\n"
                "        t = threading.Thread(target=gate.wait); t.start(); started.append(t)\n"
                "except RuntimeError as e:\n"
                "    error = str(e)\n"
                "gate.set(); [t.join() for t in started]\n"
                "error, len(started) < 48"
            )
            assert run_async(loop, kernel.value(threads)) == ("can't start new thread", True)
            kernel.client.execute("hog = b'x' * (512 << 20)")
            deadline = time.monotonic() + 30
            while kernel.sandbox.is_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not kernel.sandbox.is_alive()
            assert kernel.sandbox.death_reason() == "the session ran out of memory (limit 128 MiB)"
            run_async(loop, stop_kernel(kernel))
            assert kernel.sandbox.death_reason() == "the session ran out of memory (limit 128 MiB)"
        finally:
            run_async(loop, small.close())

    def test_without_a_disk_data_is_a_tmpfs_within_the_memory_rule(self, image, tmp_path, monkeypatch):
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))  # a tmpfs: no place for session disks
        try:
            monkeypatch.setenv(disks_mod.DISK_ROOT_ENV, str(shm / "disks"))
            with pytest.raises(SandboxLimitsError, match=r"\+ --data-size 1 GiB are memory .* because .* is a tmpfs"):
                BwrapLauncher(image, state_root=STATE_ROOT, uid_base=UID_BASE)
            limits = SandboxLimits(data_size=128 * MiB, tmp_size=128 * MiB)
            small = BwrapLauncher(image, limits, state_root=STATE_ROOT, uid_base=UID_BASE)
            try:
                assert "is a tmpfs" in small.isolation["missing"]["data-disk"]
                assert "data-disk" not in small.isolation["protections"]
                sandbox = small.start_sync()
                try:
                    assert os.path.ismount(sandbox.data_dir) and not (shm / "disks").exists()
                finally:
                    sandbox.kill_sync()
            finally:
                asyncio.run(small.close())
        finally:
            shutil.rmtree(shm, ignore_errors=True)

    def test_new_launcher_cleans_up_after_a_crashed_server(self, image, launcher):
        script = (
            "import json, sys, time\n"
            "from azure_sessions_kernel.pool.sandbox.bwrap import BwrapLauncher\n"
            "from jupyter_client import BlockingKernelClient\n"
            f"sandbox = BwrapLauncher(state_root={STATE_ROOT!r}, uid_base={UID_BASE}).start_sync()\n"
            # Crash while the session runs. (In the first ~50 ms after start,
            # before bwrap's inner init has armed its parent-death signal, the
            # sandbox would outlive the server until the next start cleans it.)
            "client = BlockingKernelClient(); client.load_connection_info(sandbox.connection_info)\n"
            "client.start_channels(); client.wait_for_ready(timeout=30)\n"
            "print(json.dumps({'uid': sandbox.uid, 'state': str(sandbox.data_dir.parent), 'pids': [sandbox.pid, sandbox.child_pid],"
            " 'leaves': [str(l) for _, l in sandbox._cgroups.leaves], 'image': str(sandbox._launcher._disks.image(sandbox.slot))}), flush=True)\n"
            "time.sleep(60)\n"
        )
        server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            crashed = json.loads(server.stdout.readline())
        finally:
            server.send_signal(signal.SIGKILL)
            server.wait()
        # --die-with-parent ends the sandbox; its mount, cgroups and state remain.
        deadline = time.monotonic() + 5
        while bwrap_mod._processes_of_uid(crashed["uid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = bwrap_mod._processes_of_uid(crashed["uid"])
        assert left == [], f"server pid {server.pid}, sandbox pids {crashed['pids']}:\n" + describe_processes(left)
        assert os.path.ismount(Path(crashed["state"]) / "data")
        BwrapLauncher(image, state_root=STATE_ROOT, uid_base=UID_BASE)
        assert not Path(crashed["state"]).exists()
        assert not any(Path(leaf).exists() for leaf in crashed["leaves"])
        assert not Path(crashed["image"]).exists()


UNPRIVILEGED_SERVER = r"""
import asyncio, json, os, sys
from jupyter_client.asynchronous import AsyncKernelClient
from azure_sessions_kernel.pool.sandbox.bwrap import BwrapLauncher

async def main():
    launcher = BwrapLauncher()
    sandbox = await launcher.start()
    client = AsyncKernelClient()
    client.load_connection_info(sandbox.connection_info)
    client.start_channels()
    await client.wait_for_ready(timeout=30)
    msg_id = client.execute("import os, resource, socket\n"
                            "try: socket.create_connection(('1.1.1.1', 53), timeout=2); net = 'reached'\n"
                            "except OSError as e: net = type(e).__name__\n"
                            "print(os.getcwd(), os.getuid(), resource.getrlimit(resource.RLIMIT_AS)[0] > 0, net)")
    out = ""
    while True:
        msg = await client.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    host_uid = int(open(f"/proc/{sandbox.child_pid}/status").read().split("Uid:")[1].split()[0])
    client.stop_channels()
    await sandbox.kill()
    print(json.dumps({"level": launcher.isolation["level"], "output": out, "host_uid": host_uid,
                      "data_left": sandbox.data_dir.exists(), "alive": sandbox.is_alive()}))
    await launcher.close()

asyncio.run(main())
"""


@pytest.mark.sandbox
@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
@needs_root
def test_unprivileged_server_still_sandboxes(image):
    """The pool run by an ordinary user (here: nobody) uses bwrap with its own uid and rlimits."""
    # nobody cannot read this checkout or its venv when they live in a private
    # directory (a CI clone under a 0700 mktemp dir): stage the launcher and
    # pyseccomp in a world-readable directory and run them with the session
    # image's interpreter, which has jupyter_client and pyzmq and lives in /opt.
    staging = Path(tempfile.mkdtemp(prefix="ask-unpriv-"))
    try:
        staging.chmod(0o755)
        package = Path(bwrap_mod.__file__).parents[2]
        shutil.copytree(package, staging / "azure_sessions_kernel", ignore=shutil.ignore_patterns("__pycache__", "kernel", "client"))
        seccomp_src = Path(importlib.util.find_spec("pyseccomp").origin)
        shutil.copytree(seccomp_src.parent, staging / seccomp_src.parent.name) if seccomp_src.name == "__init__.py" else shutil.copy(seccomp_src, staging)
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        result = subprocess.run(
            [str(image.python), "-c", UNPRIVILEGED_SERVER],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(staging), "AZURE_SESSIONS_KERNEL_IMAGE": str(image.path)},
            user=65534, group=65534, extra_groups=[], cwd="/", capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["level"] == "bwrap-user"
    assert report["output"].split() == ["/mnt/data", "1000", "True", "OSError"]  # ENETUNREACH: only loopback
    assert report["host_uid"] == 65534
    assert report["data_left"] is False and report["alive"] is False


# --------------------------------------------------------------------------
# Without a sandbox (the battery's negative control)
# --------------------------------------------------------------------------


def test_insecure_launcher_runs_the_same_kernel_without_isolation(image, loop):
    launcher = InsecureLauncher(image)
    assert launcher.isolation["level"] == "none"
    kernel = run_async(loop, start_kernel(launcher))
    try:
        sandbox = kernel.sandbox
        assert run_async(loop, kernel.value("import os; os.getcwd()")) == str(sandbox.data_dir)
        reply, _ = run_async(loop, kernel.execute("open('note.txt', 'w').write('hi'); 6 * 7"))
        assert reply["azure_sessions"] == {"kind": "json", "value": 42}
        assert (sandbox.data_dir / "note.txt").read_text() == "hi"
        with socket.socket() as server:  # what the sandbox must refuse works here
            server.bind(("127.0.0.1", 0))
            server.listen()
            code = f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]})).close(); 'connected'"
            assert run_async(loop, kernel.value(code)) == "connected"
    finally:
        run_async(loop, stop_kernel(kernel))
    assert not sandbox.data_dir.exists() and not sandbox.is_alive()
