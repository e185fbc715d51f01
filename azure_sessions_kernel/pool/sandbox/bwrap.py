"""The default sandbox: bubblewrap namespaces, a per-session uid, cgroups, rlimits and seccomp.

:class:`BwrapLauncher` is created once by the pool (``pool/server.py``) and
asked by the session manager for a fresh :class:`BwrapSandbox` whenever its
warm pool needs one. Each sandbox runs the in-sandbox runner
(``pool/runner/session_kernel.py``) with the session image's interpreter; the
manager talks to it with ``jupyter_client`` over ZeroMQ ``ipc://`` sockets
that live in a small per-session directory bound into the sandbox.

The layers (numbers as in ``shared/reference/sandbox.md`` §3.2) when the pool
runs as root:

* L0 the server is a child subreaper, spawns with an empty environment and
  ``close_fds``, passes only the seccomp and status descriptors;
* L1 every session gets its own unprivileged host uid (``uid_base + slot``);
  bwrap starts as that uid, so it can only use *unprivileged* user
  namespaces and nothing inside is ever host root;
* L2 cgroups: memory (+swap), pids and cpu limits, plus a cgroup v2 leaf
  whose ``cgroup.kill`` ends the whole tree; v1, v2 and hybrid layouts;
* L3 rlimits: no core files, file size, open files, processes per uid;
* L4/L5 bwrap: new user, pid, network (loopback only), ipc, uts, cgroup and
  mount namespaces; a read-only ``/usr`` and image, a private ``/tmp``, a
  read-only ``/proc/sys`` and ``/dev`` (with a sized ``/dev/shm``), synthetic
  ``/etc/passwd``; ``/mnt/data`` is a
  per-session ext4 disk (a sparse file on a loop device, :mod:`.disks`)
  whose size and inode count are the quota;
* L6 no capabilities (``--cap-drop ALL``), ``no_new_privs``;
* L7 a seccomp deny-list against the kernel surface a notebook never needs;
* with ``serve --egress`` only: a Unix socket of the slot's own to the pool's
  egress proxy (:mod:`..egress`), bound read-only at ``/run/egress``, and the
  host's CA bundle; the session's network namespace stays loopback-only.

Run as an ordinary user the launcher still uses bwrap (unprivileged user
namespaces) but cannot give sessions their own uid, cgroups or a data disk
with a quota; :attr:`BwrapLauncher.isolation` lists what is missing and why.

Host layout under the state root (``/run/ask`` as root)::

    runner/session_kernel.py   copy of the runner, bound read-only into each sandbox
    etc/{passwd,group,hosts}   the sandbox's synthetic /etc files
    slots/<n>.lock             flock held by the launcher that owns slot n
    <n>/k/                     kernel.json and the ipc sockets (session uid, 0700;
                               root's, 0755, once they are bound)               -> /run/jk
    <n>/data/                  the data disk's mount (session uid, 0700)          -> /mnt/data
    <n>/net/egress.sock        the slot's egress proxy socket (--egress only; root's dir) -> /run/egress
    <n>/cgroups.json           the cgroup directories made for the slot, for cleanup

Slots are claimed with ``flock``, so several launchers (a server and a test
run) can share a state root, and a crashed server's slots are recognised as
stale (their lock is free) and cleaned before reuse. A crashed server's
sandboxes die with it (``--die-with-parent``), except one that was still in
its first few dozen milliseconds (bwrap's inner init had not armed its
parent-death signal yet): its uid, cgroups and state record let the next
launcher on the same state root kill it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import pwd
import resource
import secrets
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ...wire import DATA_DIR
from ..egress import EgressProxy
from ..image import ImageError, ImageInfo, find_image
from .base import (
    CHANNEL_PORTS,
    RUNNER_SOURCE,
    GiB,
    Launcher,
    OutputTail,
    Sandbox,
    SandboxError,
    SandboxLimits,
    SandboxLimitsError,
    describe_exit,
    format_bytes,
    write_atomically,
)
from .cgroups import _detect_hierarchies, _Hierarchy, _SessionCgroups
from .disks import DataDisks, data_disk_problem, default_disk_root, mount_tmpfs, unmount
from .seccomp import build_seccomp_bpf

__all__ = [
    "BwrapLauncher",
    "BwrapSandbox",
    "SandboxLimits",
    "SandboxSpec",
    "build_bwrap_argv",
    "build_seccomp_bpf",
]

# Paths as the sandbox sees them.
SANDBOX_DATA_DIR = DATA_DIR
SANDBOX_KERNEL_DIR = "/run/jk"
SANDBOX_RUNNER = "/opt/azure-sessions/session_kernel.py"
SANDBOX_EGRESS_DIR = "/run/egress"
#: The proxy socket's name, in the slot's egress directory and so under SANDBOX_EGRESS_DIR.
EGRESS_SOCKET_NAME = "egress.sock"
SANDBOX_CA_BUNDLE = "/opt/azure-sessions/ca-certificates.crt"
#: The session's proxy address; the runner relays it to the egress socket (runner's EGRESS_RELAY_ADDRESS).
SANDBOX_PROXY_URL = "http://127.0.0.1:3128"
#: Where the host keeps its CA bundle, first found wins (after $SSL_CERT_FILE and $REQUESTS_CA_BUNDLE).
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
SANDBOX_UID = 1000
SANDBOX_USER = "user"
SANDBOX_HOSTNAME = "sandbox"

#: Host files bound read-only at the same path when they exist: what Python,
#: OpenSSL, time zones and mimetypes read. Nothing else from the host's /etc.
HOST_ETC_FILES = (
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/mime.types",
)

# sun_path holds 108 bytes; "<kernel dir>/k-5" must fit with room to spare.
_MAX_KERNEL_DIR_LEN = 90
#: Environment variables that move the pool's state root and session uid range
#: (tests use them to keep their pools apart from any other pool on the host).
#: Each state root needs a uid range of its own.
STATE_ROOT_ENV = "AZURE_SESSIONS_KERNEL_STATE_ROOT"
UID_BASE_ENV = "AZURE_SESSIONS_KERNEL_UID_BASE"
DEFAULT_UID_BASE = 200_000
#: Threads that prepare and fork sandboxes at once (each start waits ~0.1 s on bwrap).
SPAWN_THREADS = 4


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_CHILD_SUBREAPER = 36


def _processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes owned by ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry))
    return found


def _kill_uid(uid: int, timeout: float = 5.0) -> None:
    """SIGKILL every process of ``uid`` until none is left (the per-session-uid guarantee)."""
    deadline = time.monotonic() + timeout
    while (pids := _processes_of_uid(uid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_zombie_children(uid)
        time.sleep(0.01)


def _reap_zombie_children(uid: int | None) -> None:
    """Collect our zombie children that belong to a sandbox (re-parented to us as subreaper).

    Only processes of ``uid`` (root mode) are touched, so that exit statuses
    other code waits for (``subprocess``, asyncio) are never stolen.
    """
    if uid is None:
        return
    for pid, state in _children_of(uid):
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _children_of(uid: int) -> list[tuple[int, str]]:
    """``(pid, state)`` of our direct children that run as ``uid``."""
    me, children = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == me and os.stat(f"/proc/{entry}").st_uid == uid:
                    children.append((int(entry), fields[0]))
            except OSError:
                continue
    return children


def _task_count(uid: int) -> int:
    """Threads of ``uid`` on the host: RLIMIT_NPROC counts them, all sessions together."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    total += len(os.listdir(f"/proc/{entry}/task"))
    return total


def _become_session_process(procs_files: Sequence[str], rlimits: Sequence[tuple[int, int]], uid: int | None) -> None:
    """``preexec_fn`` of the bwrap process: join the cgroups, set rlimits, drop to the session uid.

    Runs in the forked child before exec, so it only makes direct system
    calls (no imports, no locks). CPython would switch ``user=`` *before*
    ``preexec_fn``, after which the root-owned ``cgroup.procs`` files are out
    of reach; hence the uid switch happens here, last.
    """
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)
    for which, limit in rlimits:
        resource.setrlimit(which, (limit, limit))
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


# --------------------------------------------------------------------------
# The bwrap command line (L4-L7)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    """Everything :func:`build_bwrap_argv` needs for one session (host paths unless noted)."""

    bwrap: str
    image: ImageInfo
    runner: Path
    kernel_dir: Path  # -> /run/jk
    data_dir: Path  # -> /mnt/data
    etc_dir: Path  # synthetic passwd/group/hosts
    limits: SandboxLimits
    seccomp_fd: int | None
    status_fd: int
    extra_env: tuple[tuple[str, str], ...] = ()
    egress_dir: Path | None = None  # -> /run/egress; None: no egress
    ca_bundle: Path | None = None  # -> SANDBOX_CA_BUNDLE, with egress


def host_ca_bundle() -> Path | None:
    """The CA bundle this host trusts (a TLS-inspecting gateway's CA is in it), for sessions with egress."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), os.environ.get("REQUESTS_CA_BUNDLE"), *HOST_CA_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).resolve()
    return None


def egress_environment(allowed: Sequence[str], ca_bundle: Path | None) -> dict[str, str]:
    """What a session with egress needs: the proxy for every HTTP client, and the host's CA bundle."""
    env = {"AZURE_SESSIONS_EGRESS_SOCKET": f"{SANDBOX_EGRESS_DIR}/{EGRESS_SOCKET_NAME}", "AZURE_SESSIONS_EGRESS": ",".join(allowed)}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = SANDBOX_PROXY_URL
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    if ca_bundle is not None:
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE"):
            env[name] = SANDBOX_CA_BUNDLE
    return env


def sandbox_environment(image: ImageInfo, limits: SandboxLimits) -> dict[str, str]:
    """The whole environment of the sandboxed kernel (nothing is inherited from the host)."""
    threads = str(limits.threads_per_library)
    return {
        "PATH": f"{image.path}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_DATA_DIR,
        "USER": SANDBOX_USER,
        "LOGNAME": SANDBOX_USER,
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "AZURE_SESSIONS_MPL_CACHE": str(image.mpl_cache_dir),
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter/config",
        "JUPYTER_DATA_DIR": "/tmp/jupyter/data",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter/runtime",
        "XDG_CACHE_HOME": "/tmp/.cache",
        "XDG_CONFIG_HOME": "/tmp/.config",
        # Keep /mnt/data (what the file API lists) free of __pycache__; the
        # image's own bytecode is pre-compiled.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "NUMEXPR_MAX_THREADS": threads,
    }


def _system_binds() -> list[str]:
    """/usr read-only, and the merged-/usr symlinks (or binds on hosts without merged /usr)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("lib", "lib64", "lib32", "libx32", "bin", "sbin"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def _image_binds(image: ImageInfo) -> list[str]:
    """The image read-only at its own path, and its base interpreter's prefix when outside /usr."""
    args = []
    base = image.base_prefix
    if base != Path("/usr") and Path("/usr") not in base.parents:
        # The venv's bin/python is a symlink to its base interpreter.
        args += ["--ro-bind", str(base), str(base)]
    return [*args, "--ro-bind", str(image.path), str(image.path)]


def build_bwrap_argv(spec: SandboxSpec) -> list[str]:
    """The full bwrap command line for one session; order matters (later mounts cover earlier ones)."""
    argv = [
        spec.bwrap,
        # L4: every namespace, a user namespace that cannot nest another one.
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", SANDBOX_HOSTNAME,
        # L6 and L0: no capabilities even if started as root, die with the
        # server, no controlling terminal (TIOCSTI), empty environment.
        "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv",
        "--size", str(spec.limits.tmp_size), "--tmpfs", "/tmp",
        *_system_binds(),
    ]
    for path in HOST_ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    for name in ("passwd", "group", "hosts"):
        argv += ["--ro-bind", str(spec.etc_dir / name), f"/etc/{name}"]
    argv += [
        *_image_binds(spec.image),
        "--ro-bind", str(spec.runner), SANDBOX_RUNNER,
        # A fresh procfs for the new pid namespace; sysctls stay read-only.
        "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
        "--ro-bind-try", "/proc/irq", "/proc/irq", "--ro-bind-try", "/proc/bus", "/proc/bus",
        "--dev", "/dev",
        # bwrap's /dev is a session-owned tmpfs without a size: give /dev/shm
        # (POSIX shared memory, semaphores) a size and make the rest read-only.
        "--size", str(spec.limits.shm_size), "--tmpfs", "/dev/shm",
        "--bind", str(spec.kernel_dir), SANDBOX_KERNEL_DIR,
        "--bind", str(spec.data_dir), SANDBOX_DATA_DIR,
    ]
    if spec.egress_dir is not None:
        argv += ["--ro-bind", str(spec.egress_dir), SANDBOX_EGRESS_DIR]
        if spec.ca_bundle is not None:
            argv += ["--ro-bind", str(spec.ca_bundle), SANDBOX_CA_BUNDLE]
    argv += [
        "--remount-ro", "/", "--remount-ro", "/dev",
        "--chdir", SANDBOX_DATA_DIR,
    ]
    env = sandbox_environment(spec.image, spec.limits)
    env.update(spec.extra_env)
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if spec.seccomp_fd is not None:
        argv += ["--seccomp", str(spec.seccomp_fd)]
    argv += ["--json-status-fd", str(spec.status_fd)]
    argv += ["--", str(spec.image.python), SANDBOX_RUNNER, "-f", f"{SANDBOX_KERNEL_DIR}/kernel.json"]
    return argv


# --------------------------------------------------------------------------
# Sandbox
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Slot:
    number: int
    lock_fd: int
    state_dir: Path
    uid: int | None  # None: same uid as the server (unprivileged mode)
    #: The session that claimed the slot (a prefix of its identifier), for the egress log.
    session: str = ""

    @property
    def kernel_dir(self) -> Path:
        return self.state_dir / "k"

    @property
    def egress_dir(self) -> Path:
        return self.state_dir / "net"

    @property
    def egress_socket(self) -> Path:
        return self.egress_dir / EGRESS_SOCKET_NAME

    def label(self) -> str:
        return f"slot {self.number}" + (f" session {self.session}" if self.session else " (ready, unclaimed)")

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"


class BwrapSandbox(Sandbox):
    """One session's bwrap sandbox. Created by :meth:`BwrapLauncher.start`."""

    def __init__(
        self,
        launcher: BwrapLauncher,
        slot: _Slot,
        process: subprocess.Popen[bytes],
        child_pid: int,
        cgroups: _SessionCgroups,
        connection_info: dict[str, Any],
        output: OutputTail,
        status_fd: int = -1,
    ):
        self._launcher = launcher
        self._status_fd = status_fd
        self._status = b""
        self._slot = slot
        self._process = process
        self._cgroups = cgroups
        self._output = output
        self._kill_lock = threading.Lock()
        self._killed = False
        self._stopped_by_us = False
        self._oom_kills: int | None = None
        self._sealed = False
        self.data_dir = slot.data_dir
        self.connection_info = connection_info
        self.pid = process.pid
        #: Host pid of the pid namespace's init (bwrap's inner process): the kill switch.
        self.child_pid = child_pid
        #: Host uid and gid the session runs as (the server's own when unprivileged).
        #: Files the pool creates under :attr:`data_dir` should be chowned to them,
        #: or the session sees them as nobody's and cannot change them.
        self.uid = slot.uid if slot.uid is not None else os.getuid()
        self.gid = slot.uid if slot.uid is not None else os.getgid()
        self.slot = slot.number

    def __repr__(self) -> str:
        return f"<BwrapSandbox slot={self.slot} uid={self.uid} pid={self.pid} alive={self.is_alive()}>"

    def assign(self, session: str) -> None:
        self._slot.session = session

    def is_alive(self) -> bool:
        alive = not self._killed and self._process.poll() is None
        if alive and not self._sealed:
            # The manager asks before claiming a sandbox and before every
            # execution, so no user code runs before the seal.
            self._seal_kernel_dir()
        return alive

    def _seal_kernel_dir(self) -> None:
        """Take the socket directory away from the session once the kernel has bound its sockets.

        The pool (root) connects to ``<kernel dir>/k-N`` by path and connect()
        follows symlinks: were the directory still the session's, its code
        could swap a socket for a link to any host socket and have the pool
        connect there at the next ZeroMQ reconnect (and it could fill the
        host disk through ``/run/jk``). Root-owned and 0755, the bound sockets
        keep working but no name in it can be added, renamed or removed.
        Not possible unprivileged: the session's uid is the pool's own.
        """
        kernel_dir = self._slot.kernel_dir
        if self._slot.uid is None:
            return
        with contextlib.suppress(OSError):
            if {f"k-{port}" for port in CHANNEL_PORTS.values()} <= set(os.listdir(kernel_dir)):
                os.chown(kernel_dir, 0, 0)
                os.chmod(kernel_dir, 0o755)
                self._sealed = True

    def _seal_when_bound(self, timeout: float = 120.0) -> None:
        """Seal as soon as the sockets exist (thread started by the launcher; :meth:`is_alive` is the backstop)."""
        deadline = time.monotonic() + timeout
        while not self._sealed and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def death_reason(self) -> str | None:
        if self.is_alive():
            return None
        oom_kills = self._oom_kills if self._oom_kills is not None else self._cgroups.oom_kills()
        if oom_kills:
            return f"the session ran out of memory (limit {format_bytes(self._launcher.limits.memory)})"
        if self._stopped_by_us:
            return "the session was stopped"
        returncode = self._kernel_exit_code()
        if returncode is None:
            returncode = self._process.poll()
        return describe_exit(returncode if returncode is not None else -signal.SIGKILL, self._output.text())

    def _kernel_exit_code(self) -> int | None:
        """The kernel's exit status as bwrap reported it on the status pipe (128+N for signal N)."""
        if self._status_fd >= 0:
            with contextlib.suppress(OSError):
                os.set_blocking(self._status_fd, False)
                while chunk := os.read(self._status_fd, 4096):
                    self._status += chunk
        for line in self._status.splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                code = json.loads(line).get("exit-code")
                if isinstance(code, int):
                    return code
        return None

    def usage(self) -> dict[str, Any]:
        return {**self._cgroups.usage(), "limits": self._launcher.limits.describe()}

    async def kill(self) -> None:
        await asyncio.to_thread(self.kill_sync)

    def kill_sync(self) -> None:
        """Blocking :meth:`kill`, for shutdown paths without an event loop."""
        with self._kill_lock:
            if self._killed:
                return
            if self._process.poll() is None:
                self._stopped_by_us = True
                # The pid-namespace init takes every process inside with it,
                # setsid'd daemons included. Only signalled while bwrap is
                # alive: then the pid cannot have been reused.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.child_pid, signal.SIGKILL)
            self._cgroups.kill()
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._oom_kills = self._cgroups.oom_kills()
            self._kernel_exit_code()  # keep what bwrap reported, then let go of the pipe
            if self._status_fd >= 0:
                os.close(self._status_fd)
                self._status_fd = -1
            self._launcher._release_slot(self._slot, self._cgroups)
            self._killed = True


# --------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------


def _default_state_root() -> Path:
    if os.environ.get(STATE_ROOT_ENV):
        return Path(os.environ[STATE_ROOT_ENV])
    if os.geteuid() == 0:
        return Path("/run/ask")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and len(runtime) < 40:
        return Path(runtime) / "ask"
    return Path(f"/tmp/ask-{os.getuid()}")


class BwrapLauncher(Launcher):
    """Starts bubblewrap sandboxes; one per pool.

    Created by the pool at start-up (synchronously: it probes bwrap, builds
    the seccomp filter and cleans what a crashed server left behind, all in a
    fraction of a second). Raises :class:`SandboxError` with a sentence a user
    can act on when this host cannot sandbox.

    ``state_root`` and ``uid_base`` (the session uids are
    ``uid_base + slot`` for slots ``0 .. max_sessions-1``) default to
    ``$AZURE_SESSIONS_KERNEL_STATE_ROOT`` and ``$AZURE_SESSIONS_KERNEL_UID_BASE``
    when set, else to
    ``/run/ask`` and 200000 as root.
    """

    def __init__(
        self,
        image: ImageInfo | None = None,
        limits: SandboxLimits | None = None,
        state_root: str | os.PathLike[str] | None = None,
        *,
        uid_base: int | None = None,
        max_sessions: int = 1000,
        seccomp: bool = True,
        bwrap: str | None = None,
        egress: EgressProxy | None = None,
    ):
        self.limits = limits or SandboxLimits()
        #: The pool's egress proxy (``serve --egress``); ``None``: sessions have no network at all.
        self.egress = egress
        self._ca_bundle = host_ca_bundle() if egress is not None else None
        self.privileged = os.geteuid() == 0
        self.state_root = Path(state_root or _default_state_root()).absolute()
        self.uid_base = uid_base if uid_base is not None else int(os.environ.get(UID_BASE_ENV) or DEFAULT_UID_BASE)
        self.max_sessions = max_sessions
        self._slots_in_use: set[int] = set()
        self._sandboxes: set[BwrapSandbox] = set()
        self._lock = threading.Lock()
        self._missing: dict[str, str] = {
            "vm-boundary": "sessions share the host kernel (Azure runs each session in a Hyper-V VM); "
            "a kernel bug reachable through the allowed system calls defeats the sandbox",
        }

        self.bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        if not os.access(self.bwrap, os.X_OK):
            raise SandboxError(
                "bubblewrap (bwrap) is not installed, so sessions cannot be sandboxed; "
                "install it (apt-get install bubblewrap)"
            )
        try:
            self.image = image or find_image()
        except ImageError as exc:
            raise SandboxError(str(exc)) from exc
        if len(str(self.state_root)) + 16 > _MAX_KERNEL_DIR_LEN:
            raise SandboxError(f"the state root {self.state_root} is too long for Unix socket paths (108 bytes); choose a shorter one")

        self._prepare_state_root()
        self._disks: DataDisks | None = None
        if self.privileged:
            disk_root = default_disk_root(self.state_root)
            if (no_disk := data_disk_problem(disk_root)) is None:
                self._disks = DataDisks(disk_root, self.limits.data_size, self.limits.data_inodes)
            else:
                self._missing["data-disk"] = f"{no_disk}: /mnt/data is a tmpfs, counted as the session's memory"
            if (problem := self.limits.memory_problem(data_in_memory=self._disks is None)) is not None:
                raise SandboxLimitsError(problem + (f" (/mnt/data is memory here because {no_disk})" if no_disk else ""))
            _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            self._hierarchies, cgroup_missing = _detect_hierarchies(self._cgroup_prefix)
            self._missing.update(cgroup_missing)
        else:
            self._hierarchies = []
            self._missing.update(
                {
                    "per-session-uid": "the pool is not running as root: every session runs as your own uid",
                    "cgroup-memory": "not root: the memory limit is RLIMIT_AS (virtual memory, approximate)",
                    "cgroup-pids": "not root: the process limit is RLIMIT_NPROC, shared with all your processes",
                    "cgroup-cpu": "not root: no cpu quota",
                    "cgroup-kill": "not root: the pid-namespace init is the only kill switch",
                    "data-quota": "not root: /mnt/data is a plain directory without a size quota "
                    "(a single file stops at RLIMIT_FSIZE)",
                }
            )
        if seccomp:
            self._seccomp_bpf, unknown = build_seccomp_bpf()
            if unknown:
                self._missing["seccomp-partial"] = "not filtered here (unknown to this kernel/libseccomp): " + ", ".join(unknown)
        else:
            self._seccomp_bpf = None
            self._missing["seccomp"] = "disabled by configuration"
        self._clean_stale_slots()
        self._probe()
        # Long-lived threads fork the sandboxes (bwrap's --die-with-parent fires when
        # the *thread* that forked it exits; an executor's threads live until shutdown).
        # A few, because a start spends most of its ~0.1 s waiting for bwrap's namespaces.
        self._spawner = concurrent.futures.ThreadPoolExecutor(max_workers=SPAWN_THREADS, thread_name_prefix="bwrap-spawn")

    # ----------------------------------------------------------------- setup

    @property
    def _cgroup_prefix(self) -> str:
        return f"azure-sessions-{self.state_root.name}"

    def _prepare_state_root(self) -> None:
        root = self.state_root
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
        st = root.stat()
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SandboxError(f"the state root {root} must be owned by the pool's user and not writable by others")
        os.chmod(root, 0o755 if self.privileged else 0o700)
        for sub in ("runner", "etc", "slots"):
            (root / sub).mkdir(exist_ok=True, mode=0o755)
        os.chmod(root / "slots", 0o700)
        write_atomically(root / "runner" / "session_kernel.py", RUNNER_SOURCE.read_bytes())
        write_atomically(
            root / "etc" / "passwd",
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_UID}::{SANDBOX_DATA_DIR}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        write_atomically(root / "etc" / "group", f"root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_UID}:\nnogroup:x:65534:\n")
        write_atomically(root / "etc" / "hosts", f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n::1\tlocalhost ip6-localhost\n")

    def _probe(self) -> None:
        """Start a throw-away sandbox once, so that a host that cannot sandbox fails now, clearly."""
        status_r, status_w = os.pipe()
        try:
            argv = [
                self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
                "--die-with-parent", "--new-session", "--clearenv", *_system_binds(),
                *_image_binds(self.image), "--proc", "/proc", "--dev", "/dev",
                "--json-status-fd", str(status_w), "--", str(self.image.python), "-S", "-c", "pass",
            ]
            uid = 65534 if self.privileged else None
            result = subprocess.run(
                argv, env={}, capture_output=True, text=True, timeout=30, close_fds=True, pass_fds=(status_w,),
                preexec_fn=(lambda: _become_session_process((), (), uid)) if uid is not None else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxError(f"cannot run bubblewrap ({self.bwrap}): {exc}") from exc
        finally:
            os.close(status_r)
            os.close(status_w)
        if uid is not None:
            # The probe's namespace init is re-parented to us (the subreaper) and exits just after bwrap.
            deadline = time.monotonic() + 1.0
            while (children := _children_of(uid)) and (time.monotonic() < deadline or any(st == "Z" for _, st in children)):
                _reap_zombie_children(uid)
                time.sleep(0.01)
        if result.returncode != 0:
            detail = result.stderr.strip() or f"exit status {result.returncode}"
            if "namespace" in detail or "Operation not permitted" in detail or "setting up uid map" in detail:
                raise SandboxError(
                    f"bubblewrap cannot create an unprivileged user namespace on this host ({detail}); "
                    "enable them (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, "
                    "or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0)"
                )
            raise SandboxError(
                f"a test sandbox failed to run the session image's Python {self.image.python} ({detail}); "
                "rebuild the image with 'azure-sessions-kernel image build --force'"
            )

    def _clean_stale_slots(self) -> None:
        """Remove what a crashed server left: state dirs, mounts, cgroups and processes of free slots."""
        for entry in self.state_root.iterdir():
            if entry.name.isdigit() and entry.is_dir():
                slot = self._try_lock_slot(int(entry.name))
                if slot is not None:
                    self._clean_slot(slot)
                    os.close(slot.lock_fd)

    def _try_lock_slot(self, number: int) -> _Slot | None:
        fd = os.open(self.state_root / "slots" / f"{number}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        uid = self.uid_base + number if self.privileged else None
        return _Slot(number, fd, self.state_root / str(number), uid)

    def _clean_slot(self, slot: _Slot) -> None:
        record = slot.state_dir / "cgroups.json"
        with contextlib.suppress(OSError, ValueError):
            leaves = [(hierarchy, Path(path)) for hierarchy, path in self._hierarchies_for(json.loads(record.read_text()))]
            stale = _SessionCgroups(leaves)
            stale.kill()
            stale.remove()
        if slot.uid is not None:
            _kill_uid(slot.uid)
            _reap_zombie_children(slot.uid)
        with contextlib.suppress(OSError):
            self._remove_data(slot)
        shutil.rmtree(slot.state_dir, ignore_errors=True)

    @staticmethod
    def _hierarchies_for(paths: Iterable[str]) -> Iterable[tuple[_Hierarchy, str]]:
        for path in paths:
            has_kill = os.path.exists(os.path.join(path, "cgroup.kill"))
            yield _Hierarchy(2 if has_kill else 1, frozenset(), Path(path).parent, has_kill), path

    # ----------------------------------------------------------------- isolation

    @property
    def isolation(self) -> dict[str, Any]:
        protections = [
            "user-namespace", "pid-namespace", "network-namespace", "ipc-namespace", "uts-namespace",
            "cgroup-namespace", "mount-namespace", "read-only-system", "private-tmp", "no-capabilities",
            "no-new-privileges", "nested-userns-disabled", "rlimits",
        ]
        if self._seccomp_bpf is not None:
            protections.append("seccomp")
        if self.privileged:
            protections += ["per-session-uid", "data-quota"]
            if self._disks is not None:
                protections.append("data-disk")
            for hierarchy in self._hierarchies:
                protections += [f"cgroup-{c}" for c in sorted(hierarchy.controllers)]
                if hierarchy.has_kill:
                    protections.append("cgroup-kill")
        return {
            "level": "bwrap-root" if self.privileged else "bwrap-user",
            "protections": protections,
            "missing": dict(self._missing),
            "limits": self.limits.describe(),
            # The sessions' only way out: nothing, or the allow-list proxy.
            "egress": self.egress.policy.hosts if self.egress is not None else [],
        }

    # ----------------------------------------------------------------- start

    async def start(self) -> BwrapSandbox:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._spawner, self.start_sync)

    def start_sync(self) -> BwrapSandbox:
        """Blocking :meth:`start`; runs on the launcher's spawn thread (or a test's)."""
        slot = self._acquire_slot()
        cgroups = _SessionCgroups([])
        try:
            connection_info = self._prepare_slot(slot)
            cgroups = _SessionCgroups.create(self._hierarchies, str(slot.number), self.limits)
            write_atomically(slot.state_dir / "cgroups.json", json.dumps([str(leaf) for _, leaf in cgroups.leaves]), 0o600)
            process, child_pid, output, status_fd = self._spawn(slot, cgroups)
        except BaseException:
            cgroups.kill()
            self._release_slot(slot, cgroups)
            raise
        sandbox = BwrapSandbox(self, slot, process, child_pid, cgroups, connection_info, output, status_fd)
        if slot.uid is not None:
            threading.Thread(target=sandbox._seal_when_bound, name="seal-kernel-dir", daemon=True).start()
        with self._lock:
            self._sandboxes.add(sandbox)
        return sandbox

    def _acquire_slot(self) -> _Slot:
        with self._lock:
            for number in range(self.max_sessions):
                if number in self._slots_in_use:
                    continue
                slot = self._try_lock_slot(number)
                if slot is None:
                    continue  # another launcher holds it
                if slot.uid is not None and (
                    self._uid_taken(slot.uid) or (not slot.state_dir.exists() and _processes_of_uid(slot.uid))
                ):
                    # A passwd entry, or live processes of a pool on another state root
                    # with an overlapping uid range: sharing the uid would let them meet.
                    os.close(slot.lock_fd)
                    continue
                self._slots_in_use.add(number)
                break
            else:
                raise SandboxError(f"all {self.max_sessions} sandbox slots are in use")
        if slot.state_dir.exists():
            self._clean_slot(slot)  # left over by a crashed server
        return slot

    @staticmethod
    def _uid_taken(uid: int) -> bool:
        """A session uid must belong to nobody else on the host."""
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return False
        return True

    def _prepare_slot(self, slot: _Slot) -> dict[str, Any]:
        """Make the state dir, the data tmpfs and the connection file; returns host-side connection info."""
        slot.state_dir.mkdir(mode=0o711 if self.privileged else 0o700)
        slot.kernel_dir.mkdir(mode=0o700)
        slot.data_dir.mkdir(mode=0o700)
        uid = slot.uid if slot.uid is not None else os.getuid()
        gid = slot.uid if slot.uid is not None else os.getgid()
        if self.privileged:
            os.chown(slot.kernel_dir, uid, gid)
            if self._disks is not None:
                self._disks.create(slot.number, slot.data_dir, uid, gid)
            else:
                mount_tmpfs(slot.data_dir, self.limits.data_size, self.limits.data_inodes, uid, gid)
        if self.egress is not None:
            # Root's directory, so the session cannot swap the socket for another.
            slot.egress_dir.mkdir(mode=0o755)
            self.egress.listen(slot.egress_socket, slot.label)
        key = secrets.token_hex(32)
        base = {"transport": "ipc", "key": key, "signature_scheme": "hmac-sha256", "kernel_name": "", **CHANNEL_PORTS}
        kernel_file = slot.kernel_dir / "kernel.json"
        write_atomically(kernel_file, json.dumps({**base, "ip": f"{SANDBOX_KERNEL_DIR}/k"}), 0o600)
        os.chown(kernel_file, uid, gid)
        return {**base, "ip": f"{slot.kernel_dir}/k"}

    def _rlimits(self, slot: _Slot) -> list[tuple[int, int]]:
        limits = self.limits
        rlimits = [
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_FSIZE, limits.file_size),
            (resource.RLIMIT_NOFILE, limits.nofile),
        ]
        if slot.uid is not None:
            # Per real uid, hence exact with a uid per session.
            rlimits.append((resource.RLIMIT_NPROC, limits.pids))
        else:
            # Shared with every process of ours: allow the current ones plus the session's.
            rlimits.append((resource.RLIMIT_NPROC, _task_count(os.getuid()) + limits.pids))
            # Virtual, not resident, memory: numpy and glibc reserve generously, hence the headroom.
            rlimits.append((resource.RLIMIT_AS, 2 * limits.memory + GiB))
        # Never raise a hard limit we inherited (we could not, without CAP_SYS_RESOURCE).
        capped = []
        for which, value in rlimits:
            _, hard = resource.getrlimit(which)
            capped.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        return capped

    def _spawn(self, slot: _Slot, cgroups: _SessionCgroups) -> tuple[subprocess.Popen[bytes], int, OutputTail, int]:
        """Start bwrap; returns it, its inner init's pid, its output and the read end of its status pipe."""
        seccomp_fd = -1
        status_r, status_w = os.pipe()
        try:
            if self._seccomp_bpf is not None:
                seccomp_fd = os.memfd_create("seccomp-bpf", 0)  # no CLOEXEC: bwrap reads it
                os.write(seccomp_fd, self._seccomp_bpf)
                os.lseek(seccomp_fd, 0, os.SEEK_SET)
            extra_env: tuple[tuple[str, str], ...] = ()
            if slot.uid is None:
                extra_env = (("MALLOC_ARENA_MAX", "2"),)  # keeps virtual size within RLIMIT_AS
            if self.egress is not None:
                extra_env += tuple(egress_environment(self.egress.policy.entries, self._ca_bundle).items())
            spec = SandboxSpec(
                bwrap=self.bwrap,
                image=self.image,
                runner=self.state_root / "runner" / "session_kernel.py",
                kernel_dir=slot.kernel_dir,
                data_dir=slot.data_dir,
                etc_dir=self.state_root / "etc",
                limits=self.limits,
                seccomp_fd=seccomp_fd if seccomp_fd >= 0 else None,
                status_fd=status_w,
                extra_env=extra_env,
                egress_dir=slot.egress_dir if self.egress is not None else None,
                ca_bundle=self._ca_bundle,
            )
            procs_files, rlimits, uid = cgroups.procs_files, self._rlimits(slot), slot.uid
            process = subprocess.Popen(
                build_bwrap_argv(spec),
                env={},
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                close_fds=True,
                pass_fds=tuple(fd for fd in (seccomp_fd, status_w) if fd >= 0),
                preexec_fn=lambda: _become_session_process(procs_files, rlimits, uid),
            )
        finally:
            os.close(status_w)
            if seccomp_fd >= 0:
                os.close(seccomp_fd)
        output = OutputTail(process.stdout)
        try:
            child_pid = self._read_child_pid(status_r)
        except SandboxError as exc:
            os.close(status_r)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
            raise SandboxError(f"{exc}: {output.text(wait=1.0).strip() or 'no output'}") from None
        # Kept open: bwrap reports the kernel's exit status there when it ends
        # (and would die of SIGPIPE writing it to a closed pipe, hiding the cause).
        return process, child_pid, output, status_r

    @staticmethod
    def _read_child_pid(status_fd: int, timeout: float = 15.0) -> int:
        """bwrap writes ``{"child-pid": N}`` on its status fd once the namespaces exist."""
        buffer = b""
        deadline = time.monotonic() + timeout
        # poll(), not select(): a pool with hundreds of sessions has fds above FD_SETSIZE (1024).
        poller = select.poll()
        poller.register(status_fd, select.POLLIN)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise SandboxError("bubblewrap did not report its sandbox within 15 s")
            chunk = os.read(status_fd, 4096)
            if not chunk:
                raise SandboxError("bubblewrap exited before the sandbox was up")
            buffer += chunk
        try:
            return int(json.loads(buffer.split(b"\n", 1)[0])["child-pid"])
        except (ValueError, KeyError) as exc:
            raise SandboxError(f"unexpected bubblewrap status {buffer!r}") from exc

    # ----------------------------------------------------------------- stop

    def _remove_data(self, slot: _Slot) -> None:
        """Unmount the slot's data area and delete its disk image."""
        if self._disks is not None:
            self._disks.remove(slot.number, slot.data_dir)
        else:
            unmount(slot.data_dir)

    def _release_slot(self, slot: _Slot, cgroups: _SessionCgroups) -> None:
        """Undo :meth:`_prepare_slot` and the cgroups; called by :meth:`BwrapSandbox.kill_sync`."""
        try:
            if slot.uid is not None:
                _kill_uid(slot.uid)  # nothing may outlive the session under its uid
                _reap_zombie_children(slot.uid)
            cgroups.remove()
            if self.egress is not None:
                self.egress.close_listener(slot.egress_socket)
            self._remove_data(slot)
            shutil.rmtree(slot.state_dir, ignore_errors=True)
        finally:
            with self._lock:
                self._slots_in_use.discard(slot.number)
                self._sandboxes = {s for s in self._sandboxes if s.slot != slot.number}
            os.close(slot.lock_fd)

    async def close(self) -> None:
        """Kill sandboxes still running and release the launcher's cgroup parents (pool shutdown)."""
        with self._lock:
            remaining = list(self._sandboxes)
        await asyncio.gather(*(sandbox.kill() for sandbox in remaining))
        for hierarchy in self._hierarchies:
            with contextlib.suppress(OSError):
                hierarchy.parent.rmdir()  # fails while another launcher shares it: fine
        self._spawner.shutdown(wait=False)
