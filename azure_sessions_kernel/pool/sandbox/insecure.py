"""``--insecure-no-sandbox``: sessions as plain subprocesses of the pool.

For development on hosts without bubblewrap, and as the negative control of
the attack battery (its probes must *succeed* here, proving they can detect a
broken sandbox). Same runner and image as :mod:`.bwrap`,
but the session's code runs as the pool's user with the pool's view of the
file system and network; ``/mnt/data`` is a host temporary directory that the
runner uses as its working directory and ``$HOME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..image import ImageError, ImageInfo, find_image
from .base import CHANNEL_PORTS, RUNNER_SOURCE, Launcher, OutputTail, Sandbox, SandboxError, describe_exit, write_atomically

__all__ = ["InsecureLauncher", "InsecureSandbox"]


class InsecureSandbox(Sandbox):
    """A kernel subprocess in its own process group. Created by :meth:`InsecureLauncher.start`."""

    def __init__(self, root: Path, process: subprocess.Popen[bytes], connection_info: dict[str, Any], output: OutputTail):
        self._root = root
        self._process = process
        self._output = output
        self._kill_lock = threading.Lock()
        self._killed = False
        self.data_dir = root / "data"
        self.connection_info = connection_info
        self.pid = process.pid

    def is_alive(self) -> bool:
        return not self._killed and self._process.poll() is None

    def death_reason(self) -> str | None:
        if self.is_alive():
            return None
        if self._killed:
            return "the session was stopped"
        returncode = self._process.poll()
        return describe_exit(returncode if returncode is not None else -signal.SIGKILL, self._output.text())

    async def kill(self) -> None:
        await asyncio.to_thread(self.kill_sync)

    def kill_sync(self) -> None:
        """Kill the process group and remove the session's directory.

        Weaker than the sandbox: a process that called ``setsid()`` has left
        the group and survives.
        """
        with self._kill_lock:
            if self._killed:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            shutil.rmtree(self._root, ignore_errors=True)
            self._killed = True


class InsecureLauncher(Launcher):
    """Starts unsandboxed kernels. Created by the pool for ``--insecure-no-sandbox``.

    ``python`` defaults to the session image's interpreter (so sessions see
    the same packages as sandboxed ones); pass ``sys.executable`` to run
    without a built image.
    """

    def __init__(self, image: ImageInfo | None = None, python: str | os.PathLike[str] | None = None):
        self.image = image
        if python is None:
            try:
                self.image = image or find_image()
            except ImageError as exc:
                raise SandboxError(str(exc)) from exc
            python = self.image.python
        self.python = Path(python)

    @property
    def isolation(self) -> dict[str, Any]:
        return {
            "level": "none",
            "protections": [],
            "missing": {
                "sandbox": "--insecure-no-sandbox: session code runs as this server's user, "
                "with its files, its network and its processes in reach",
            },
            "limits": {},
        }

    async def start(self) -> InsecureSandbox:
        return await asyncio.to_thread(self.start_sync)

    def start_sync(self) -> InsecureSandbox:
        """Blocking :meth:`start`."""
        # Short, private and under /tmp: ipc socket paths must fit in 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="ask-insecure-", dir="/tmp"))
        try:
            for sub in ("k", "data", "tmp"):
                (root / sub).mkdir(mode=0o700)
            connection_info = {
                "transport": "ipc",
                "ip": str(root / "k" / "k"),
                "key": secrets.token_hex(32),
                "signature_scheme": "hmac-sha256",
                "kernel_name": "",
                **CHANNEL_PORTS,
            }
            kernel_file = root / "k" / "kernel.json"
            write_atomically(kernel_file, json.dumps(connection_info), 0o600)
            process = subprocess.Popen(
                [str(self.python), str(RUNNER_SOURCE), "-f", str(kernel_file)],
                env=self._environment(root),
                cwd=root / "data",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return InsecureSandbox(root, process, connection_info, OutputTail(process.stdout))

    def _environment(self, root: Path) -> dict[str, str]:
        tmp = root / "tmp"
        env = {
            "PATH": f"{self.python.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(root / "data"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(tmp),
            "AZURE_SESSIONS_DATA_DIR": str(root / "data"),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MPLCONFIGDIR": str(tmp / "matplotlib"),
            "IPYTHONDIR": str(tmp / "ipython"),
            "JUPYTER_CONFIG_DIR": str(tmp / "jupyter"),
            "JUPYTER_DATA_DIR": str(tmp / "jupyter"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        if self.image is not None:
            env["AZURE_SESSIONS_MPL_CACHE"] = str(self.image.mpl_cache_dir)
        return env
