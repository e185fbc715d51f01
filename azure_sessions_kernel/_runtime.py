"""Per-user runtime files shared by the local pool and the client's pool discovery.

The layout here is the whole agreement between ``azure-sessions-kernel
serve --runtime-file/--lease-dir`` and
:func:`azure_sessions_kernel.client.acquire_local_pool`; neither side imports
the other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: JSON ``{"endpoint", "token", "pid", "strict", "isolation", "image"}`` of the shared pool.
POOL_FILE = "local-pool.json"
#: Directory of lease files ``<pid>-<random>``; the pool exits when none is alive.
LEASE_DIR = "leases"
#: ``flock``-ed while a client discovers or starts the pool.
LOCK_FILE = "local-pool.lock"
#: The auto-started pool's standard output and error.
LOG_FILE = "local-pool.log"
#: A pool started without ``--token`` writes its token to ``pool-<pid>.token``.
POOL_TOKEN_PREFIX, POOL_TOKEN_SUFFIX = "pool-", ".token"
#: The session image of the pool that the files above describe (``serve --image``'s default).
DEFAULT_IMAGE = "default"


def pool_files(image: str = DEFAULT_IMAGE) -> tuple[str, str, str]:
    """Names of the pool file, the lease directory and the log of the shared pool serving ``image``.

    One shared pool per image: a kernel that wants another image than the
    running pool's gets a pool of its own instead of the wrong image. The
    default image keeps the plain names.
    """
    if image == DEFAULT_IMAGE:
        return POOL_FILE, LEASE_DIR, LOG_FILE
    slot = hashlib.sha256(image.encode()).hexdigest()[:12]
    return f"local-pool-{slot}.json", f"leases-{slot}", f"local-pool-{slot}.log"


def runtime_dir() -> Path:
    """The per-user runtime directory (mode 0700), created on first use.

    ``$AZURE_SESSIONS_KERNEL_RUNTIME_DIR`` wins (tests use it to get a pool
    of their own); then ``$XDG_RUNTIME_DIR/azure-sessions-kernel``; then
    ``~/.local/share/azure-sessions-kernel/runtime``.
    """
    explicit = os.environ.get("AZURE_SESSIONS_KERNEL_RUNTIME_DIR")
    if explicit:
        d = Path(explicit)
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.access(xdg, os.W_OK):
            d = Path(xdg) / "azure-sessions-kernel"
        else:
            d = Path.home() / ".local" / "share" / "azure-sessions-kernel" / "runtime"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (rename over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_running(pid: int) -> bool:
    """:func:`pid_alive`, but a zombie (a dead process its parent has not reaped yet) counts as dead."""
    if not pid_alive(pid):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust the signal test
    return state not in ("Z", "X")


def token_file_pid(name: str) -> int | None:
    """The pool pid in a generated token file's name (``pool-<pid>.token``), else ``None``."""
    stem = name.removeprefix(POOL_TOKEN_PREFIX).removesuffix(POOL_TOKEN_SUFFIX)
    if name.startswith(POOL_TOKEN_PREFIX) and name.endswith(POOL_TOKEN_SUFFIX) and stem.isdigit():
        return int(stem)
    return None
