"""Host-side file operations on a session's ``/mnt/data``, safe against the session.

The pool keeps each session's files in a host directory (the *root*) that
the sandbox sees as ``/mnt/data``. The HTTP file routes (upload, download,
list, metadata, delete) work on that directory **from the host, as root**,
while the untrusted code in the session can, at any moment, plant symlinks
(``x -> /etc/hostname``, ``d -> /root``, ``p -> /proc/1/root``), FIFOs,
hard links, and swap directories for symlinks with renames. A naive
``open(root / path)`` follows those links and leaks or overwrites host files
(reference ``sandbox.md`` §2.3, §3.2 and attacks F7–F9); ``realpath()`` then
``open()`` loses the race against a rename.

So every path is resolved *by the kernel* beneath an fd of the root:

* ``openat2(dirfd, path, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`` through ``ctypes`` refuses any
  symlink in any component (ELOOP), any mount crossing (EXDEV) and any
  escape, atomically;
* where ``openat2`` is missing (ENOSYS, or EPERM from an old seccomp
  profile) a component-wise walk opens each name with ``O_NOFOLLOW``
  relative to the fd of its parent and checks ``st_dev``; it is as
  race-free, but cannot see a bind mount of the same filesystem (the
  sandbox cannot mount anything, so that needs host cooperation).

On top of that:

* the final name is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked
  with ``fstat`` to be a regular file, so a FIFO cannot hang the server and
  a device or socket is never read;
* uploads stream into a fresh ``O_EXCL`` temp file in the target folder and
  are renamed over the target: a symlink at the target is replaced (never
  written through), a hard-linked target is unlinked from its shared inode
  (never written into), a directory is never replaced, and a failed or
  oversized upload leaves nothing behind;
* deletion is ``unlinkat`` of the name itself, which removes a symlink, not
  its target; directories are refused;
* listings never follow symlinks nor descend into them, and are bounded.

Hard links (attack F9): inside the sandbox ``/mnt/data`` is its own mount,
so ``link()`` from anything outside it fails with EXDEV; a hard-linked file
in the root can only share its inode with another file of the same session
area. Such files are read like any other file (a link is indistinguishable
from its sibling), and overwriting one breaks the link instead of changing
the shared inode.

Errors are :class:`FileOpError` subclasses carrying an Azure error ``code``
and an HTTP ``status`` for the pool's error envelope. Messages name paths
as the session sees them (``/mnt/data/...``), never the host root, and
never contain the contents or the target of a refused link.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as _dt
import errno
import mimetypes
import os
import platform
import secrets
import stat as _stat
from collections.abc import AsyncIterable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from ..wire import DATA_DIR, MAX_UPLOAD_BYTES, ContractError, RemoteFile, split_subpath, validate_file_name
from .errors import PoolError

__all__ = [
    "MAX_LIST_ENTRIES",
    "FileNotFound",
    "FileOpError",
    "InvalidFilePath",
    "NotARegularFile",
    "SessionFiles",
    "StorageFull",
    "TooManyEntries",
    "UploadTooLarge",
    "openat2_available",
]

#: Default bound of one listing (a session can create millions of files).
MAX_LIST_ENTRIES = 100_000
#: Default bound of :meth:`SessionFiles.read_bytes`.
MAX_READ_BYTES = 16 * 1024 * 1024
#: Bytes gathered from an async upload stream before one thread hop writes them.
_WRITE_BATCH = 1024 * 1024


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class FileOpError(PoolError):
    """A file operation failed; ``code``/``status`` feed the Azure error envelope."""

    code = "FileOperationFailed"
    status = 500


class FileNotFound(FileOpError):
    """The file or a folder on its path does not exist (404)."""

    code = "FileNotFound"
    status = 404


class InvalidFilePath(FileOpError):
    """A malformed name or path, or one that would leave the session area
    through a symlink or a mount point (400)."""

    code = "InvalidFilePath"
    status = 400


class NotARegularFile(FileOpError):
    """The name exists but is a symlink, directory, FIFO, socket or device
    where a regular file is needed (400)."""

    code = "NotARegularFile"
    status = 400


class UploadTooLarge(FileOpError):
    """The upload exceeds the size limit (413, as Azure answers over 128 MB)."""

    code = "FileTooLarge"
    status = 413


class StorageFull(FileOpError):
    """The session's file area is out of space or inodes (ENOSPC/EDQUOT).

    507 Insufficient Storage rather than 413: the file itself is within the
    limit, the session's quota is what ran out, and azure-core's retry
    policy does not retry 507 (it retries 500/502/503/504).
    """

    code = "InsufficientStorage"
    status = 507


class TooManyEntries(FileOpError):
    """A listing would return more than the configured number of entries (400)."""

    code = "TooManyFiles"
    status = 400


# --------------------------------------------------------------------------
# openat2 through ctypes
# --------------------------------------------------------------------------

# openat2 was added after the syscall tables were unified: 437 on x86_64 and
# on the generic table aarch64 uses.
_SYS_OPENAT2 = {"x86_64": 437, "amd64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine().lower())

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dirfd: int, path: str, flags: int) -> int:
    """``openat2(dirfd, path, {flags, 0, _RESOLVE})``; raises :class:`OSError`."""
    if _SYS_OPENAT2 is None:
        raise OSError(errno.ENOSYS, "openat2 is not wired up for this architecture")
    how = _OpenHow(flags, 0, _RESOLVE)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_long(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


_openat2_probe: bool | None = None


def openat2_available() -> bool:
    """Whether this kernel (and any seccomp filter around us) allows ``openat2``."""
    global _openat2_probe
    if _openat2_probe is None:
        base = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            os.close(_openat2(base, ".", os.O_PATH | os.O_CLOEXEC))
        except OSError as e:
            # ENOSYS: old kernel; EPERM: container seccomp profiles that predate it.
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            _openat2_probe = False
        else:
            _openat2_probe = True
        finally:
            os.close(base)
    return _openat2_probe


# --------------------------------------------------------------------------
# Paths and errors
# --------------------------------------------------------------------------

Folder = str | Sequence[str] | None


def _folder_parts(folder: Folder) -> tuple[str, ...]:
    """A ``path`` query string, or already-split components, as checked components."""
    try:
        if folder is None or isinstance(folder, str):
            parts = split_subpath(folder)
        else:
            parts = tuple(validate_file_name(p) for p in folder)
    except ContractError as e:
        raise InvalidFilePath(e.message, code=e.code) from None
    # The kernel's PATH_MAX, enforced up front so that openat2 and the
    # component-wise walk (which never sees the whole path) agree.
    if len(os.fsencode("/".join(parts))) >= 4096 - 256:
        raise InvalidFilePath(f"{_shown(parts)[:120]}...: the path is too long.", code="InvalidPath")
    return parts


def _name(name: str) -> str:
    try:
        return validate_file_name(name)
    except ContractError as e:
        raise InvalidFilePath(e.message, code=e.code) from None


def _shown(parts: Sequence[str]) -> str:
    """How the session sees a path: never the host root."""
    return "/".join((DATA_DIR, *parts))


def _translate(e: OSError, parts: Sequence[str], *, final: bool = False) -> FileOpError:
    """Map an errno to the error the HTTP layer reports.

    ``final``: the error concerns the last component itself (a symlink
    there is "not a regular file"), not the folders leading to it.
    """
    where = _shown(parts)
    n = e.errno
    if n in (errno.ENOENT, errno.ENOTDIR):
        return FileNotFound(f"{where} does not exist.")
    if n == errno.ELOOP:
        msg = f"{where}: a symbolic link was refused; links in {DATA_DIR} are never followed by the file API."
        return NotARegularFile(msg) if final else InvalidFilePath(msg)
    if n == errno.EXDEV:
        return InvalidFilePath(f"{where}: the path crosses a mount point and was refused.")
    if n == errno.EAGAIN:
        return InvalidFilePath(f"{where}: the path kept changing during resolution and was refused.")
    if n == errno.ENAMETOOLONG:
        return InvalidFilePath(f"{where[:120]}...: the path is too long.")
    if n == errno.EISDIR:
        return NotARegularFile(f"{where} is a directory.")
    if n in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"No space left in {DATA_DIR} while writing {where}.")
    if n == errno.EFBIG:
        return UploadTooLarge(f"{where} exceeds the largest file the session area allows.")
    if n in (errno.EACCES, errno.EPERM):
        return FileOpError(f"{where}: permission denied.", code="AccessDenied", status=403)
    return FileOpError(f"{where}: {os.strerror(n) if n else e}.")


def _content_type(name: str) -> str:
    ctype, _ = mimetypes.guess_type(name, strict=False)
    ctype = ctype or "application/octet-stream"
    return f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype


def _remote_file(name: str, st: os.stat_result, directory: str = "") -> RemoteFile:
    """A listing entry from an ``lstat``; non-regular files carry no size or type."""
    mtime = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)
    if _stat.S_ISDIR(st.st_mode):
        return RemoteFile(name, st.st_size, mtime, None, True, directory)
    if _stat.S_ISREG(st.st_mode):
        return RemoteFile(name, st.st_size, mtime, _content_type(name), False, directory)
    return RemoteFile(name, None, mtime, None, False, directory)  # symlink, FIFO, socket, device


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# --------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------


class SessionFiles:
    """File operations beneath one session's data directory.

    ``folder`` arguments are a ``path`` query string (parsed with
    :func:`~azure_sessions_kernel.wire.split_subpath`) or a tuple of
    components; ``name`` is one path segment. All methods are blocking
    except :meth:`write`; the server calls them through a thread.

    ``owner`` is the ``(uid, gid)`` given to uploaded files and to folders
    created for them (the server runs as root; the session runs as its own
    uid and must be able to modify what it is given).
    ``use_openat2=None`` picks ``openat2`` when the kernel has it; ``False``
    forces the component-wise walk (tests exercise both).
    """

    def __init__(
        self,
        root: Path | str,
        *,
        owner: tuple[int, int] | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_list_entries: int = MAX_LIST_ENTRIES,
        use_openat2: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.owner = owner
        self.max_upload_bytes = max_upload_bytes
        self.max_list_entries = max_list_entries
        self._openat2 = openat2_available() if use_openat2 is None else use_openat2

    # ---- resolution -----------------------------------------------------

    def _open_root(self) -> int:
        # The root path is the server's own and trusted; only what lies
        # beneath it is the session's.
        return os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open_beneath(self, base_fd: int, parts: Sequence[str], flags: int) -> int:
        """Open ``base/parts`` without following any symlink or crossing a mount."""
        # No O_NOFOLLOW for openat2: with O_DIRECTORY it turns a final
        # symlink into ENOTDIR, hiding the ELOOP of RESOLVE_NO_SYMLINKS.
        flags |= os.O_CLOEXEC
        if self._openat2:
            path = "/".join(parts) or "."
            for _ in range(8):  # EAGAIN: the kernel saw a concurrent rename; retrying is documented
                try:
                    return _openat2(base_fd, path, flags)
                except OSError as e:
                    if e.errno != errno.EAGAIN:
                        raise
            raise OSError(errno.EAGAIN, "path resolution kept racing", path)
        return self._walk(base_fd, parts or (".",), flags | os.O_NOFOLLOW)

    @staticmethod
    def _walk(base_fd: int, parts: Sequence[str], flags: int) -> int:
        """The fallback: one ``O_NOFOLLOW`` open per component, each relative to its parent's fd."""
        dev = os.fstat(base_fd).st_dev
        fd = base_fd
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                # O_PATH for the folders on the way: no read permission
                # needed, never blocks; but O_PATH|O_NOFOLLOW opens a
                # symlink itself instead of failing, hence the S_ISLNK check.
                try:
                    nfd = os.open(part, flags if last else os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except NotADirectoryError:
                    # O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR; report
                    # the link as openat2 would (the open failed either way).
                    if _stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise OSError(errno.ELOOP, "symbolic link refused", part) from None
                    raise
                if fd != base_fd:
                    os.close(fd)
                fd = nfd
                st = os.fstat(fd)
                if _stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, "symbolic link refused", part)
                if st.st_dev != dev:
                    raise OSError(errno.EXDEV, "mount point refused", part)
                if not last and not _stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, "not a directory", part)
        except BaseException:
            if fd != base_fd:
                os.close(fd)
            raise
        return fd

    def _open_folder(self, parts: tuple[str, ...], *, create: bool = False) -> int:
        """An ``O_RDONLY`` fd of the folder (usable for ``scandir``, ``*at`` calls and ``fchown``)."""
        flags = os.O_RDONLY | os.O_DIRECTORY
        root_fd = self._open_root()
        where = parts  # what an error names: with ``create``, the folder that failed
        try:
            if not create:
                return self._open_beneath(root_fd, parts, flags)
            fd = self._open_beneath(root_fd, (), flags)
            for i, part in enumerate(parts):
                where = parts[: i + 1]
                fd = self._step_or_create(fd, part)  # closes the parent's fd, also on failure
            return fd
        except OSError as e:
            raise _translate(e, where) from None
        finally:
            os.close(root_fd)

    def _step_or_create(self, parent_fd: int, part: str) -> int:
        """Open (creating when missing) one folder below ``parent_fd``; closes ``parent_fd``."""
        try:
            try:
                return self._open_beneath(parent_fd, (part,), os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                pass
            try:
                os.mkdir(part, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass  # created concurrently; the safe open below vets whatever is there now
            fd = self._open_beneath(parent_fd, (part,), os.O_RDONLY | os.O_DIRECTORY)
            try:
                # Through the fd, not the name: the name may be a planted symlink by now.
                os.fchmod(fd, 0o755)
                if self.owner is not None:
                    os.fchown(fd, *self.owner)
            except BaseException:
                os.close(fd)
                raise
            return fd
        finally:
            os.close(parent_fd)

    # ---- metadata ---------------------------------------------------------

    def stat(self, folder: Folder, name: str) -> RemoteFile:
        """Metadata of one entry, from ``lstat``: a symlink is reported as an
        entry without size or content type, never as its target."""
        parts, name = _folder_parts(folder), _name(name)
        dfd = self._open_folder(parts)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            raise _translate(e, (*parts, name), final=True) from None
        finally:
            os.close(dfd)
        return _remote_file(name, st)

    def list(self, folder: Folder = None, recursive: bool = False) -> list[RemoteFile]:
        """Entries of ``folder`` sorted by (directory, name).

        ``recursive`` descends into real sub-directories only (each opened
        with the same no-symlink resolution, so a directory swapped for a
        link mid-listing is skipped) and fills ``RemoteFile.directory``.
        Raises :class:`TooManyEntries` past ``max_list_entries``.
        """
        parts = _folder_parts(folder)
        top = self._open_folder(parts)
        out: list[RemoteFile] = []
        try:
            # Sub-folders are re-resolved from ``top`` by relative path, so at
            # most two fds are open whatever the depth.
            pending: list[tuple[str, ...]] = [()]
            while pending:
                rel = pending.pop()
                try:
                    dfd = top if not rel else self._open_beneath(top, rel, os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    continue  # vanished, became a link or a mount point: list it, never enter it
                try:
                    for entry in self._scan(dfd, rel):
                        if len(out) >= self.max_list_entries:
                            raise TooManyEntries(
                                f"{_shown(parts)} holds more than {self.max_list_entries} entries"
                                f"{' (recursively)' if recursive else ''}; list a sub-folder instead."
                            )
                        out.append(entry)
                        if recursive and entry.is_directory:
                            pending.append((*rel, entry.name))
                finally:
                    if dfd != top:
                        os.close(dfd)
        finally:
            os.close(top)
        out.sort(key=lambda f: (f.directory, f.name))
        return out

    @staticmethod
    def _scan(dfd: int, rel: tuple[str, ...]) -> Iterable[RemoteFile]:
        directory = "/".join(rel)
        with os.scandir(dfd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while listing
                yield _remote_file(entry.name, st, directory)

    # ---- reading ------------------------------------------------------------

    def open_read(self, folder: Folder, name: str) -> BinaryIO:
        """A binary file object on a regular file; anything else is refused.

        Opened with ``O_NONBLOCK`` so that a FIFO cannot block the server,
        then vetted with ``fstat`` before a single byte is read.
        """
        parts, name = _folder_parts(folder), _name(name)
        full = (*parts, name)
        dfd = self._open_folder(parts)
        try:
            try:
                pre = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError as e:
                raise _translate(e, full, final=True) from None
            self._require_regular(pre, full)  # don't even open a device or socket
            try:
                fd = self._open_beneath(dfd, (name,), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            except OSError as e:
                raise _translate(e, full, final=True) from None
        finally:
            os.close(dfd)
        try:
            self._require_regular(os.fstat(fd), full)  # the name may have been swapped since the lstat
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    @staticmethod
    def _require_regular(st: os.stat_result, parts: Sequence[str]) -> None:
        mode = st.st_mode
        if _stat.S_ISREG(mode):
            return
        kind = (
            "a symbolic link (never followed)"
            if _stat.S_ISLNK(mode)
            else "a directory"
            if _stat.S_ISDIR(mode)
            else "a FIFO"
            if _stat.S_ISFIFO(mode)
            else "a socket"
            if _stat.S_ISSOCK(mode)
            else "a device or special file"
        )
        raise NotARegularFile(f"{_shown(parts)} is {kind}, not a regular file.")

    def read_bytes(self, folder: Folder, name: str, *, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """The whole content of a small regular file (at most ``max_bytes``)."""
        with self.open_read(folder, name) as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise FileOpError(
                f"{_shown((*_folder_parts(folder), name))} is larger than {max_bytes} bytes.",
                code="FileTooLarge",
                status=413,
            )
        return data

    # ---- writing --------------------------------------------------------------

    def _begin_upload(self, folder: Folder, name: str, parents: bool) -> _Upload:
        parts, name = _folder_parts(folder), _name(name)
        dfd = self._open_folder(parts, create=parents)
        try:
            return _Upload(self, dfd, parts, name)
        except BaseException:
            os.close(dfd)
            raise

    def write_sync(
        self, folder: Folder, name: str, data: bytes | Iterable[bytes], *, parents: bool = False
    ) -> RemoteFile:
        """Blocking upload of ``data`` (bytes or an iterable of chunks); see :meth:`write`."""
        upload = self._begin_upload(folder, name, parents)
        try:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                upload.write(chunk)
            return upload.commit()
        finally:
            upload.close()

    async def write(
        self, folder: Folder, name: str, chunks: AsyncIterable[bytes], *, parents: bool = False
    ) -> RemoteFile:
        """Stream an upload to ``folder/name`` and return its metadata.

        Chunks are written as they arrive (batched up to 1 MiB per thread
        hop, so memory stays bounded) into an ``O_EXCL`` temp file in the
        target folder, which is renamed over ``name`` once complete. Raises
        :class:`UploadTooLarge` as soon as the stream passes
        ``max_upload_bytes`` and :class:`StorageFull` on ENOSPC/EDQUOT; in
        every failure (and on cancellation) the temp file is removed and
        the previous content of ``name`` is untouched. ``parents`` creates
        missing folders, owned by ``owner``.
        """
        upload = await asyncio.to_thread(self._begin_upload, folder, name, parents)
        try:
            batch: list[bytes] = []
            size = 0
            async for chunk in chunks:
                upload.count(len(chunk))  # refuse before buffering past the limit
                batch.append(chunk)
                size += len(chunk)
                if size >= _WRITE_BATCH:
                    await asyncio.to_thread(upload.write_many, batch)
                    batch, size = [], 0
            if batch:
                await asyncio.to_thread(upload.write_many, batch)
            return await asyncio.to_thread(upload.commit)
        finally:
            upload.close()  # close + unlink are quick; done inline so cancellation cannot skip them

    # ---- deleting ---------------------------------------------------------------

    def delete(self, folder: Folder, name: str) -> None:
        """Remove one file. A symlink is removed itself (its target is never
        touched); a FIFO or socket is removed like a file; directories are
        refused with :class:`NotARegularFile`."""
        parts, name = _folder_parts(folder), _name(name)
        full = (*parts, name)
        dfd = self._open_folder(parts)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if _stat.S_ISDIR(st.st_mode):
                raise NotARegularFile(f"{_shown(full)} is a directory; only files can be deleted.")
            os.unlink(name, dir_fd=dfd)  # unlinkat without AT_REMOVEDIR: EISDIR if swapped for a dir
        except OSError as e:
            raise _translate(e, full, final=True) from None
        finally:
            os.close(dfd)


class _Upload:
    """One upload in progress: a temp file in the target folder's fd."""

    def __init__(self, files: SessionFiles, dir_fd: int, parts: tuple[str, ...], name: str) -> None:
        self.files, self.dir_fd, self.parts, self.name = files, dir_fd, parts, name
        self.full = (*parts, name)
        self.size = 0
        self.fd = -1
        self.tmp: str | None = None
        try:
            existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _translate(e, self.full, final=True) from None
        else:
            if _stat.S_ISDIR(existing.st_mode):  # fail before consuming the upload stream
                raise NotARegularFile(f"{_shown(self.full)} is a directory; it cannot be replaced by a file.")
        tmp = f".{secrets.token_hex(8)}.upload"
        try:
            # O_EXCL: a fresh inode, never an existing file or symlink.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self.fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            self.tmp = tmp
            os.fchmod(self.fd, 0o644)  # whatever the server's umask
            if files.owner is not None:
                os.fchown(self.fd, *files.owner)
        except OSError as e:
            self._discard()
            raise _translate(e, self.full) from None

    def count(self, n: int) -> None:
        if self.size + n > self.files.max_upload_bytes:
            raise UploadTooLarge(
                f"Upload to {_shown(self.full)} exceeds the limit of {self.files.max_upload_bytes} bytes."
            )
        self.size += n

    def write(self, chunk: bytes) -> None:
        self.count(len(chunk))
        self._write_all(chunk)

    def write_many(self, chunks: Sequence[bytes]) -> None:
        """Chunks already counted by :meth:`count`."""
        for chunk in chunks:
            self._write_all(chunk)

    def _write_all(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as e:
            raise _translate(e, self.full) from None

    def commit(self) -> RemoteFile:
        assert self.tmp is not None
        try:
            st = os.fstat(self.fd)  # our inode: the name may be re-planted after the rename
            # rename() replaces a symlink or a hard link's name, never writes
            # into their inode; over a directory it fails (EISDIR/ENOTEMPTY).
            os.rename(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise NotARegularFile(f"{_shown(self.full)} is a directory; it cannot be replaced by a file.") from None
            raise _translate(e, self.full) from None
        self.tmp = None
        return _remote_file(self.name, st)

    def close(self) -> None:
        """Release fds; remove the temp file unless committed."""
        self._discard()
        if self.dir_fd >= 0:
            _close(self.dir_fd)
            self.dir_fd = -1

    def _discard(self) -> None:
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            try:
                os.unlink(self.tmp, dir_fd=self.dir_fd)  # removes a name, whatever the session put there
            except OSError:
                pass
            self.tmp = None
