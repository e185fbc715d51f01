"""What every sandbox shares: the launcher seam, the limits, and the runner's plumbing.

:class:`SessionManager <azure_sessions_kernel.pool.sessions.SessionManager>`
asks a :class:`Launcher` for a fresh :class:`Sandbox` whenever its warm pool
needs one; each sandbox runs one ipykernel (the in-sandbox runner,
``pool/runner/session_kernel.py``) that the manager drives over ZeroMQ with
``jupyter_client``. Concrete launchers live in :mod:`.bwrap` (the default:
bubblewrap namespaces, per-session uid, cgroups, seccomp) and :mod:`.insecure`
(``--insecure-no-sandbox``: a plain subprocess, for development and for the
battery's negative control).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "CHANNEL_PORTS",
    "RUNNER_SOURCE",
    "Launcher",
    "OutputTail",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxLimitsError",
    "describe_exit",
    "write_atomically",
]

MiB = 1024 * 1024
GiB = 1024 * MiB

RUNNER_SOURCE = Path(__file__).parents[1] / "runner" / "session_kernel.py"
# ipc "ports" (socket name suffixes) of the five kernel channels.
CHANNEL_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
_OUTPUT_TAIL_BYTES = 16 * 1024
#: Largest /dev/shm of a session (the /tmp size when smaller).
SHM_SIZE = 64 * MiB


def format_bytes(n: int) -> str:
    if n % GiB == 0:
        return f"{n // GiB} GiB"
    return f"{n / MiB:.0f} MiB"


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-session resource limits (sandbox.md §3.4 defaults)."""

    memory: int = 1 * GiB
    pids: int = 256
    cpus: float = 1.0
    #: Size and inode quota of ``/mnt/data`` (as root a disk of its own, see :mod:`.disks`).
    data_size: int = 1 * GiB
    data_inodes: int = 65536
    tmp_size: int = 256 * MiB
    #: Largest single file a session may write (``RLIMIT_FSIZE``).
    file_size: int = 1 * GiB
    nofile: int = 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"SandboxLimits.{field.name} must be positive")

    @property
    def threads_per_library(self) -> int:
        """Threads numeric libraries should use: the cpu quota, at least one."""
        return max(1, math.ceil(self.cpus))

    @property
    def shm_size(self) -> int:
        """Size of the session's ``/dev/shm``."""
        return min(self.tmp_size, SHM_SIZE)

    def memory_problem(self, data_in_memory: bool) -> str | None:
        """Why a session's full ``/tmp`` (and ``/mnt/data``) could OOM-kill it, or ``None``.

        Called by the launcher at start when these file systems are memory
        counted against :attr:`memory` (tmpfs in the session's cgroup). The
        rule: together they take at most half of it, so that filling them
        ends in ENOSPC while the session's programs keep the other half.
        """
        parts = {"--tmp-size": self.tmp_size, "/dev/shm": self.shm_size}
        if data_in_memory:
            parts["--data-size"] = self.data_size
        if sum(parts.values()) <= self.memory // 2:
            return None
        listed = " + ".join(f"{name} {format_bytes(size)}" for name, size in parts.items())
        return (
            f"{listed} are memory of the session and would take more than half of --memory "
            f"({format_bytes(self.memory)}): filling them would end in an out-of-memory kill instead of "
            f"'No space left on device'; lower them or raise --memory"
        )

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Sandbox(abc.ABC):
    """One running sandboxed Python kernel and its private file area.

    Created by :meth:`Launcher.start`; owned by exactly one pool session
    from then on.
    """

    #: Host path of the directory the sandbox sees as ``/mnt/data``. The
    #: pool's file routes operate beneath it with
    #: :mod:`azure_sessions_kernel.pool.files`, never by plain path joins.
    data_dir: Path

    #: ``jupyter_client`` connection info (host side: ``transport``, ``ip``,
    #: the five ports or ipc suffixes, ``key``, ``signature_scheme``) that
    #: :class:`jupyter_client.asynchronous.AsyncKernelClient` loads to talk
    #: to the kernel inside.
    connection_info: dict[str, Any]

    #: Host pid of the process tree's root (bwrap, or python when insecure).
    pid: int

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the sandboxed kernel process still runs.

        Called by the session manager before each execution and when an
        execution ends without a reply, to tell a crash (out of memory,
        ``os.kill(-1, 9)``, ``os._exit``) from a slow cell.
        """

    @abc.abstractmethod
    def death_reason(self) -> str | None:
        """A short human sentence saying why the kernel died, or ``None``.

        Called by the session manager after :meth:`is_alive` turned false,
        to report e.g. "the session ran out of memory (limit 1 GiB)" from
        the cgroup's OOM counter or the exit status.
        """

    @abc.abstractmethod
    async def kill(self) -> None:
        """End every process of the sandbox and release what it held.

        Called by the session manager on ``DELETE session``, idle expiry,
        execution timeout with an unresponsive kernel, and pool shutdown.
        Must kill the whole tree (including daemons that ``setsid``'d),
        unmount the data area, remove cgroups and state directories, and be
        safe to call twice.
        """

    def usage(self) -> dict[str, Any]:
        """Resource figures for ``/metadata`` and benchmarks (memory, pids). Optional."""
        return {}

    def assign(self, session: str) -> None:
        """Called by the session manager when an identifier claims this sandbox, with a
        loggable prefix of it, so that what the sandbox does (egress) names its session."""


class Launcher(abc.ABC):
    """Starts sandboxes. One per pool, built from the pool's configuration."""

    @property
    @abc.abstractmethod
    def isolation(self) -> dict[str, Any]:
        """What protections are active, for the start-up banner and ``/metadata``.

        Called once by the pool at start. Keys: ``level`` (``"bwrap-root"``,
        ``"bwrap-user"``, ``"none"``), ``protections`` (list of short names
        such as ``"network-namespace"``, ``"per-session-uid"``, ``"seccomp"``,
        ``"cgroup-memory"``), ``missing`` (protections unavailable here, with
        the reason) and ``limits`` (memory, pids, cpu, data size...).
        """

    @abc.abstractmethod
    async def start(self) -> Sandbox:
        """Start a fresh sandboxed kernel and return once its process runs.

        Called by the session manager to fill the warm pool and when a new
        identifier arrives with the warm pool empty. The manager itself
        waits for the kernel's first ``kernel_info`` reply. Raises
        :class:`SandboxError` with a clear sentence when the sandbox cannot
        be started (no bubblewrap, user namespaces disabled, ...).
        """

    async def close(self) -> None:
        """Release launcher-wide resources at pool shutdown (cgroup parents, state root)."""


class SandboxError(RuntimeError):
    """A sandbox could not be created, or the host refuses isolation."""


class SandboxLimitsError(SandboxError, ValueError):
    """The configured limits contradict each other (see :meth:`SandboxLimits.memory_problem`)."""


def describe_exit(returncode: int, output_tail: str) -> str:
    """A sentence for an exit status: the kernel's own, or bwrap's (which passes the kernel's on, 128+N for signal N)."""
    if returncode < 0:
        return f"the kernel process was killed by {signal.Signals(-returncode).name}"
    if 128 < returncode < 128 + 65:
        with contextlib.suppress(ValueError):
            return f"the kernel was killed by {signal.Signals(returncode - 128).name}"
    bwrap_error = [line for line in output_tail.splitlines() if line.startswith("bwrap:")]
    if bwrap_error:
        return f"the sandbox failed: {bwrap_error[-1]}"
    if returncode == 0:
        return "the kernel exited"
    return f"the kernel exited with status {returncode}"


class OutputTail:
    """Keeps the last few KiB of the sandbox's stdout/stderr for error messages; drops the rest."""

    def __init__(self, stream: Any):
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(stream,), name="sandbox-output", daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        with stream:
            while chunk := stream.read1(65536):
                with self._lock:
                    self._chunks.append(chunk)
                    self._size += len(chunk)
                    while self._size > _OUTPUT_TAIL_BYTES and len(self._chunks) > 1:
                        self._size -= len(self._chunks.popleft())

    def text(self, wait: float = 0.0) -> str:
        self._thread.join(wait)
        with self._lock:
            return b"".join(self._chunks)[-_OUTPUT_TAIL_BYTES:].decode(errors="replace")


def write_atomically(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
