"""Find or start this user's local session pool, and hold a lease on it.

The kernel's default backend. The first kernel starts ``python -m
azure_sessions_kernel serve`` in the background; later kernels reuse it; the
pool exits on its own once no lease holder is alive, so closing (or killing)
the last kernel leaves no process behind. Everything goes through files in
:func:`azure_sessions_kernel._runtime.runtime_dir` and a subprocess: the
client never imports the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .. import wire
from .._runtime import DEFAULT_IMAGE, LOCK_FILE, EgressListError, parse_egress, pool_files, process_running, runtime_dir
from ._exceptions import ConfigurationError

__all__ = ["LocalPoolLease", "acquire_local_pool", "acquire_local_pool_sync"]

#: How long a freshly started pool may take to print its endpoint.
START_TIMEOUT = 90.0


@dataclasses.dataclass
class LocalPoolLease:
    """A running local pool and this process's claim on it.

    ``release()`` (idempotent) drops the claim; the pool ends when the last
    claim is gone. The token is kept out of ``repr``. ``process`` is the pool
    when this process started it: a thread waits for it, so that a pool that
    dies is reaped at once instead of staying a zombie under the kernel.
    """

    endpoint: str
    token: str = dataclasses.field(repr=False)
    isolation: dict[str, Any]
    strict: bool
    pid: int
    #: The session image the pool serves (``serve --image``): ``"default"``, a name or a directory.
    image: str = DEFAULT_IMAGE
    #: The hosts its sessions may reach (``serve --egress``, normalised); ``()``: no network.
    egress: tuple[str, ...] = ()
    lease_file: Path | None = dataclasses.field(default=None, repr=False)
    started_here: bool = False
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.process is not None:
            threading.Thread(target=self.process.wait, name="local-pool-reaper", daemon=True).start()

    def alive(self) -> bool:
        """Whether the pool process still runs (a zombie does not).

        Called by the kernel before each connection and after a transport
        error, to tell a pool that died (killed, crashed: its sessions and
        their state are gone) from one that is only slow to answer.
        """
        if self.process is not None:
            return self.process.returncode is None
        return process_running(self.pid)

    def died(self, within: float = 0.5) -> bool:
        """Whether the pool is dead or dies within ``within`` seconds.

        A killed process closes its sockets a moment before it can be seen
        to exit, so a transport error may arrive first.
        """
        deadline = time.monotonic() + within
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def release(self) -> None:
        if self.lease_file is not None:
            with contextlib.suppress(OSError):
                self.lease_file.unlink()
            self.lease_file = None

    def __enter__(self) -> LocalPoolLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _healthy(info: dict[str, Any]) -> bool:
    try:
        r = httpx.get(
            f"{info['endpoint']}/metadata",
            params={"api-version": wire.DEFAULT_API_VERSION},
            headers={"Authorization": f"Bearer {info['token']}"},
            timeout=3.0,
            verify=False,  # a local pool's self-signed certificate, on loopback
        )
    except (httpx.HTTPError, KeyError):
        return False
    return r.status_code == 200


def _read_pool_file(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _last_option(serve_args: Sequence[str], option: str, default: str) -> str:
    """The value of the last ``option VALUE`` or ``option=VALUE`` in ``serve_args``, as argparse reads it."""
    value = default
    for i, arg in enumerate(serve_args):
        if arg == option and i + 1 < len(serve_args):
            value = serve_args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def requested_image(serve_args: Sequence[str]) -> str:
    """The session image ``serve_args`` ask for: the last ``--image``, as ``serve`` reads it."""
    return _last_option(serve_args, "--image", DEFAULT_IMAGE)


def requested_egress(serve_args: Sequence[str]) -> tuple[str, ...]:
    """The egress allow-list ``serve_args`` ask for: the last ``--egress``, normalised as ``serve`` does.

    Raises :class:`ConfigurationError` for a list ``serve`` would refuse, so a
    kernel says why before it starts a pool that could not start.
    """
    try:
        return parse_egress(_last_option(serve_args, "--egress", ""))
    except EgressListError as exc:
        raise ConfigurationError(f"The local pool's egress list is not valid: {exc}") from None


def _describe_egress(egress: Sequence[str]) -> str:
    return ", ".join(egress) if egress else "none (no network)"


def acquire_local_pool_sync(serve_args: Sequence[str] = (), *, python: str | None = None) -> LocalPoolLease:
    """Reuse the running local pool of the wanted image and egress or start one, and take a lease on it.

    ``serve_args`` are extra ``azure-sessions-kernel serve`` options used only
    when this call starts the pool (an already running pool is reused as it
    is), except ``--image`` and ``--egress``: each session image and egress
    allow-list has a shared pool of its own, so a kernel never silently gets
    another image, or more or less network, than it asked for. Raises
    :class:`ConfigurationError` for a bad ``--egress`` list, and with the
    pool's own error output when it cannot start (no session image, no
    sandbox, ...).
    """
    image, egress = requested_image(serve_args), requested_egress(serve_args)
    rdir = runtime_dir()
    pool_name, lease_name, log_name = pool_files(image, egress)
    pool_file, lease_dir = rdir / pool_name, rdir / lease_name
    lease_dir.mkdir(exist_ok=True, mode=0o700)
    process = None
    # Joining a running pool needs no lock (a burst of kernels would queue on it behind one
    # another's health checks): the lease holds once the pool file still names the same pool
    # after it is written, since a pool withdraws that file before it counts leases a last time.
    info = _read_pool_file(pool_file)
    lease = _take_lease(lease_dir) if info is not None and process_running(info["pid"]) and _healthy(info) else None
    if lease is None or _read_pool_file(pool_file) != info:
        if lease is not None:
            lease.unlink()
        with open(rdir / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = _read_pool_file(pool_file)
            if info is None or not process_running(info["pid"]) or not _healthy(info):
                info, process = _start_pool(rdir / log_name, pool_file, lease_dir, serve_args, python or sys.executable)
            lease = _take_lease(lease_dir)
    if info.get("image", DEFAULT_IMAGE) != image:  # a pool file written by something else
        lease.unlink()
        raise ConfigurationError(
            f"The local session pool at {info['endpoint']} serves the image {info.get('image', DEFAULT_IMAGE)!r}, "
            f"not {image!r} as asked; stop it (pid {info['pid']}) or ask for its image."
        )
    # Also a pool file written by something else; one from before --egress records none, and had none.
    if tuple(info.get("egress") or ()) != egress:
        lease.unlink()
        raise ConfigurationError(
            f"The local session pool at {info['endpoint']} has egress {_describe_egress(info.get('egress') or ())}, "
            f"not {_describe_egress(egress)} as asked; stop it (pid {info['pid']}) or ask for its egress."
        )
    return LocalPoolLease(
        endpoint=info["endpoint"],
        token=info["token"],
        isolation=info.get("isolation") or {},
        strict=bool(info.get("strict")),
        pid=info["pid"],
        image=image,
        egress=egress,
        lease_file=lease,
        started_here=process is not None,
        process=process,
    )


def _take_lease(lease_dir: Path) -> Path:
    lease = lease_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
    lease.write_text(str(os.getpid()))
    return lease


async def acquire_local_pool(serve_args: Sequence[str] = (), *, python: str | None = None) -> LocalPoolLease:
    """Async form of :func:`acquire_local_pool_sync` (runs it in a thread)."""
    return await asyncio.to_thread(acquire_local_pool_sync, serve_args, python=python)


def _start_pool(
    log_path: Path, pool_file: Path, lease_dir: Path, serve_args: Sequence[str], python: str
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    with contextlib.suppress(OSError):
        pool_file.unlink()
    argv = [python, "-m", "azure_sessions_kernel", "serve", "--port", "0", "--runtime-file", str(pool_file), "--lease-dir", str(lease_dir), *serve_args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the kernel's process group being interrupted
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = _read_pool_file(pool_file)
        if info is not None and info["pid"] == proc.pid:
            return info, proc
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            raise ConfigurationError("The local session pool did not start:\n  " + "\n  ".join(tail or ["(no output)"]))
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise ConfigurationError(f"The local session pool did not start within {START_TIMEOUT:.0f} s; see {log_path}.")
