"""Session identifiers: random per kernel, or derived from a name (``%session use NAME``).

Azure treats an identifier as a secret: whoever knows it can run code in the
session (reference §7). A named session must still be found again after a
kernel restart, so its identifier is an HMAC of the name under a per-user key
kept (mode 0600) in the Jupyter data directory: stable for this user,
unguessable for anyone else, and the name itself never leaves the machine.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

#: Fits every api-version's identifier rule (``[A-Za-z0-9_-]``, 4–128 characters).
_PREFIX = "nb-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def random_identifier() -> str:
    """A fresh identifier for a kernel's own session."""
    return _PREFIX + secrets.token_hex(20)


def key_path() -> Path:
    return Path(jupyter_data_dir()) / "azure_sessions_kernel" / "session-names.key"


def _key(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when two kernels race, exactly one key is written and both read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a session name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    return name


def named_identifier(name: str, *, path: Path | None = None) -> str:
    """The identifier of session ``name`` for this user (same name, same identifier)."""
    digest = hmac.new(_key(path or key_path()), check_name(name).encode(), hashlib.sha256).hexdigest()
    return _PREFIX + digest[:40]
