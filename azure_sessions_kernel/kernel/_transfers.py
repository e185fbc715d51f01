"""Planning ``%upload`` / ``%download``: which files go where, checked before anything is sent.

Pure functions over paths and remote listings, so that every refusal
(missing file, file over Azure's limit, existing local file) happens before
the first byte moves and a magic never leaves half a transfer behind.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from ..wire import DATA_DIR, MAX_UPLOAD_BYTES, RemoteFile

#: The session's file area, as Azure names it (reference §5).
REMOTE_ROOT = DATA_DIR


class TransferError(Exception):
    """A transfer that cannot be done as asked; the message is one sentence for the notebook."""


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One file to move: ``local`` on this machine, ``folder``/``name`` under ``/mnt/data``."""

    local: Path
    folder: str
    name: str
    size: int | None

    @property
    def remote(self) -> str:
        return str(PurePosixPath(REMOTE_ROOT, self.folder, self.name))


def format_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def remote_relative(path: str) -> str:
    """``/mnt/data/a/b``, ``a/b/`` or ``a/b`` → ``a/b``; ``""`` is ``/mnt/data`` itself."""
    text = path.strip()
    if text.startswith("/"):
        if text.rstrip("/") == REMOTE_ROOT:
            return ""
        if not text.startswith(REMOTE_ROOT + "/"):
            raise TransferError(f"{path} is outside {REMOTE_ROOT}, the only place session files can be.")
        text = text[len(REMOTE_ROOT) + 1 :]
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TransferError(f"Remote paths must stay inside {REMOTE_ROOT}; {path!r} contains '..'.")
    return "/".join(parts)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _local_matches(pattern: str, cwd: Path) -> list[Path]:
    expanded = os.path.expanduser(pattern)
    base = expanded if os.path.isabs(expanded) else str(cwd / expanded)
    if glob.has_magic(expanded):
        matches = sorted(Path(p) for p in glob.glob(base, recursive=True))
        if not matches:
            raise TransferError(f"No local file matches {pattern!r}.")
        return matches
    path = Path(base)
    if not path.exists():
        raise TransferError(f"There is no local file or directory {pattern!r}.")
    return [path]


def plan_upload(pattern: str, destination: str, cwd: Path) -> list[Transfer]:
    """Files to upload for ``%upload PATTERN [DESTINATION]``.

    A single file goes to ``DESTINATION`` as its new name unless that ends in
    ``/``; otherwise everything goes into the ``DESTINATION`` folder, and a
    directory ``d`` lands as ``DESTINATION/d/...`` with its whole tree.
    """
    matches = _local_matches(pattern, cwd)
    dest = remote_relative(destination)
    if len(matches) == 1 and matches[0].is_file() and dest and not destination.rstrip().endswith("/"):
        folder, _, name = dest.rpartition("/")
        transfers = [Transfer(matches[0], folder, name, matches[0].stat().st_size)]
    else:
        transfers = []
        for match in matches:
            if match.is_dir():
                root = match.resolve()
                for file in sorted(p for p in root.rglob("*") if p.is_file()):
                    sub = file.relative_to(root).parent.as_posix()
                    transfers.append(Transfer(file, _join(dest, root.name, "" if sub == "." else sub), file.name, file.stat().st_size))
            elif match.is_file():
                transfers.append(Transfer(match, dest, match.name, match.stat().st_size))
    if not transfers:
        raise TransferError(f"{pattern!r} contains no files to upload.")
    too_big = next((t for t in transfers if (t.size or 0) > MAX_UPLOAD_BYTES), None)
    if too_big is not None:
        raise TransferError(
            f"{too_big.local.name} is {format_size(too_big.size)}, and sessions accept files of at most "
            f"{format_size(MAX_UPLOAD_BYTES)} (Azure answers HTTP 413 beyond that), so nothing was uploaded; "
            "split or compress it first."
        )
    return transfers


ListFiles = Callable[[str | None], list[RemoteFile]]


def walk_remote(list_files: ListFiles, folder: str) -> Iterator[tuple[str, RemoteFile]]:
    """Every file under ``folder`` as ``(its folder, entry)``, listing one folder at a time.

    Listing folder by folder works on every api-version (recursive listing
    needs 2025-10-02-preview).
    """
    for entry in sorted(list_files(folder or None), key=lambda e: e.name):
        if entry.is_directory:
            yield from walk_remote(list_files, _join(folder, entry.name))
        else:
            yield folder, entry


def plan_download(pattern: str, destination: str | None, cwd: Path, list_files: ListFiles, *, force: bool = False) -> list[Transfer]:
    """Files to download for ``%download PATTERN [DESTINATION]``.

    ``PATTERN`` names a file, a directory (downloaded with its tree) or a
    glob in its last part. A single file may be given a new local name;
    otherwise ``DESTINATION`` (default: the notebook's directory) is a folder.
    Existing local files are refused unless ``force``.
    """
    rel = remote_relative(pattern)
    folder, _, leaf = rel.rpartition("/")
    if not leaf:  # the data root itself
        selected = [RemoteFile(name="", is_directory=True)]
    else:
        entries = list_files(folder or None)
        if glob.has_magic(leaf):
            selected = sorted((e for e in entries if fnmatch.fnmatchcase(e.name, leaf)), key=lambda e: e.name)
            if not selected:
                raise TransferError(f"No file in the session matches {_join(REMOTE_ROOT, rel)} (see %files).")
        else:
            selected = [e for e in entries if e.name == leaf]
            if not selected:
                raise TransferError(f"There is no {_join(REMOTE_ROOT, rel)} in the session (see %files).")
    files: list[tuple[str, RemoteFile, str]] = []  # remote folder, entry, local relative path
    for entry in selected:
        if entry.is_directory:
            top = _join(folder, entry.name)
            for where, file in walk_remote(list_files, top):
                local_rel = _join(entry.name, where[len(top) :].strip("/"), file.name)
                files.append((where, file, local_rel))
        else:
            files.append((folder, entry, entry.name))
    if not files:
        raise TransferError(f"{_join(REMOTE_ROOT, rel)} contains no files.")
    dest = cwd / os.path.expanduser(destination) if destination else cwd
    single_file = len(files) == 1 and not selected[0].is_directory
    rename = single_file and destination and not destination.endswith(("/", os.sep)) and not dest.is_dir()
    transfers = [Transfer(dest if rename else dest / local_rel, where, f.name, f.size) for where, f, local_rel in files]
    if not force:
        existing = next((t.local for t in transfers if t.local.exists()), None)
        if existing is not None:
            raise TransferError(f"{existing} already exists, so nothing was downloaded; add --force to overwrite.")
    return transfers
