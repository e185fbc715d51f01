"""The seam between the pool's session manager and the sandbox that runs a session.

:class:`SessionManager <azure_sessions_kernel.pool.sessions.SessionManager>`
asks a :class:`Launcher` for a fresh :class:`Sandbox` whenever its warm pool
needs one; each sandbox runs one ipykernel (the in-sandbox runner,
``pool/runner/session_kernel.py``) that the manager drives over ZeroMQ with
``jupyter_client``. Concrete launchers live in ``pool/bwrap.py`` (the
default: bubblewrap namespaces, per-session uid, cgroups, seccomp) and
``pool/insecure.py`` (``--insecure-no-sandbox``: a plain subprocess, for
development and for the battery's negative control).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any


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
