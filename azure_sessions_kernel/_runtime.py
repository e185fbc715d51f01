"""Per-user runtime files shared by the local pool and the client's pool discovery.

The layout here is the whole agreement between ``azure-sessions-kernel
serve --runtime-file/--lease-dir`` and
:func:`azure_sessions_kernel.client.acquire_local_pool`; neither side imports
the other.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from pathlib import Path

#: JSON ``{"endpoint", "token", "pid", "strict", "isolation", "image", "egress"}`` of the shared pool.
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

#: Names that ``serve --egress`` expands into the hosts (and ports) a tool needs.
EGRESS_ALIASES: dict[str, tuple[str, ...]] = {
    "pypi": ("pypi.org:443", "files.pythonhosted.org:443"),
    "github": ("github.com:443", "codeload.github.com:443", "raw.githubusercontent.com:443",
               "objects.githubusercontent.com:443"),
}
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class EgressListError(ValueError):
    """An egress allow-list entry that is not a host name (the message names the entry and why)."""


def looks_like_address(host: str) -> bool:
    """IPv4/IPv6 literals, and what resolvers also read as one (``2130706433``, ``0x7f.1``, ``127.1``)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return bool(re.fullmatch(r"[0-9.]+|0x[0-9a-f.x]*", host))


def parse_egress_entry(entry: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT`` or ``*.DOMAIN[:PORT]`` as ``(host, port)``; raises :class:`EgressListError`.

    The host is lower-cased without a trailing dot; ``None`` as the port means
    HTTPS and HTTP (443 and 80). IP addresses are refused: the proxy connects
    by name only, so that a list of names cannot reach an address nobody named.
    """
    text = entry.strip().lower()
    host, port = text, None
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise EgressListError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    host = host.rstrip(".")
    if looks_like_address(host) or ":" in host:
        raise EgressListError(f"{entry!r} is an IP address; egress is allowed by host name only (the proxy refuses addresses)")
    name = host[2:] if host.startswith("*.") else host
    if not name or len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise EgressListError(f"{entry!r} is not a host name (letters, digits, hyphens and dots; '*.' in front for subdomains)")
    return host, port


def parse_egress(text: str) -> tuple[str, ...]:
    """The entries of ``serve --egress`` (comma-separated), checked, lower-cased, sorted and unique.

    ``""`` and ``"none"`` are no egress (the default, as on Azure). Aliases
    (:data:`EGRESS_ALIASES`) stay as written. The pool and the kernel's pool
    discovery both read the option through this function, so the same list
    always names the same shared pool.
    """
    entries = [e.strip().lower() for e in text.split(",") if e.strip()]
    if entries in ([], ["none"]):
        return ()
    canonical = set()
    for entry in entries:
        if entry == "none":
            raise EgressListError("'none' cannot be combined with host names")
        if entry in ("*", "all", "any"):
            raise EgressListError(f"{entry!r}: egress to every host is not offered; list the hosts (or an alias: {', '.join(EGRESS_ALIASES)})")
        if entry not in EGRESS_ALIASES:
            host, port = parse_egress_entry(entry)
            entry = f"{host}:{port}" if port else host
        canonical.add(entry)
    return tuple(sorted(canonical))


def pool_files(image: str = DEFAULT_IMAGE, egress: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """Names of the pool file, the lease directory and the log of the shared pool for ``image`` and ``egress``.

    One shared pool per image and egress allow-list: a kernel that wants
    another image or other egress than the running pool's gets a pool of its
    own instead of the wrong one. The default image without egress keeps the
    plain names.
    """
    if image == DEFAULT_IMAGE and not egress:
        return POOL_FILE, LEASE_DIR, LOG_FILE
    key = image if not egress else f"{image}\0egress={','.join(egress)}"
    slot = hashlib.sha256(key.encode()).hexdigest()[:12]
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
