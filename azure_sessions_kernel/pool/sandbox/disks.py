"""Each session's ``/mnt/data``: a file system of its own on the host disk, not in memory.

A tmpfs counts against the session's memory limit, so filling it ended in an
OOM kill instead of ENOSPC (issue 12). Instead, as root, every session gets an
ext4 file system in a sparse file on a loop device:

* its size *is* the quota: writing past ``--data-size`` gives ENOSPC (a single
  file past ``RLIMIT_FSIZE`` EFBIG) and ``--data-inodes`` caps the files;
* its pages are page cache, which the kernel writes back and reclaims under
  the session's memory limit instead of OOM-killing it; the loop device uses
  direct I/O, so the backing file is not cached a second time;
* a file system per session, as the tmpfs was: hard links and renames across
  sessions or to host files fail with EXDEV, and the session sees no other
  session's files or the image files (they live outside every sandbox);
* the pool only ever mounts a freshly copied template that no session has
  written: a session can change its own file system's contents through the
  kernel's ext4 code, never hand the host a crafted image.

:class:`DataDisks` is created once per :class:`~.bwrap.BwrapLauncher`. It
builds the template at start (``mkfs.ext4`` sized so that what a session can
write is ``--data-size``, measured with ``statvfs``), then copies it for each
session (sparse: a few hundred KiB of metadata), attaches it to a free loop
device with ``LOOP_CONFIGURE`` (auto-clear: unmounting frees the device) and
mounts it ``nosuid,nodev``. Host disk use grows only with what sessions write.

The images live in ``$AZURE_SESSIONS_KERNEL_DISK_ROOT`` or
``/var/lib/azure-sessions-kernel/disks/<state root>``, a directory on a real
disk (a tmpfs there would put the data back in memory, uncharged).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from .base import MiB, SandboxError

__all__ = ["DISK_ROOT_ENV", "DataDisks", "data_disk_problem", "default_disk_root", "mount_tmpfs", "unmount"]

#: Environment variable that moves the directory holding the session images.
DISK_ROOT_ENV = "AZURE_SESSIONS_KERNEL_DISK_ROOT"

_libc = ctypes.CDLL(None, use_errno=True)
_MS_NOSUID, _MS_NODEV = 0x2, 0x4
_MNT_DETACH = 0x2
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR, _LO_FLAGS_DIRECT_IO = 4, 16
_MEMORY_FS = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}  # statfs f_type
_INODE_SIZE = 256


def _mkfs() -> str | None:
    """Where ``mkfs.ext4`` is (e2fsprogs; in /sbin, which a user's PATH may lack)."""
    return shutil.which("mkfs.ext4", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64), ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64), ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * 64),
        ("lo_crypt_name", ctypes.c_uint8 * 64), ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", _LoopInfo64),
                ("reserved", ctypes.c_uint64 * 8)]


def default_disk_root(state_root: Path) -> Path:
    """Where a launcher on ``state_root`` keeps its session images (one directory per state root)."""
    if os.environ.get(DISK_ROOT_ENV):
        return Path(os.environ[DISK_ROOT_ENV])
    return Path("/var/lib/azure-sessions-kernel/disks") / "-".join(state_root.parts[1:])


def _memory_fs(path: Path) -> str | None:
    """``"tmpfs"``/``"ramfs"`` when ``path`` is on a memory file system, else ``None``."""

    class _StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]

    buf = _StatFs()
    if _libc.statfs(str(path).encode(), ctypes.byref(buf)) != 0:
        return None
    return _MEMORY_FS.get(buf.f_type & 0xFFFFFFFF)


def data_disk_problem(root: Path) -> str | None:
    """Why session data cannot live on a disk of its own here, or ``None`` when it can.

    Called by :class:`~.bwrap.BwrapLauncher` at start (as root); the answer
    decides between :class:`DataDisks` and a memory-backed tmpfs.
    """
    if not os.path.exists("/dev/loop-control"):
        return "this host has no loop devices (/dev/loop-control)"
    if _mkfs() is None:
        return "mkfs.ext4 is not installed (apt-get install e2fsprogs)"
    probe = root
    while not probe.exists():
        probe = probe.parent
    kind = _memory_fs(probe)
    if kind is not None:
        return f"{probe} is a {kind}; set ${DISK_ROOT_ENV} to a directory on a disk"
    return None


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy only the data extents of ``source`` (the template's metadata), leaving holes as holes."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(src).st_size
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError:
                    break  # ENXIO: only a hole remains
                end = os.lseek(src, start, os.SEEK_HOLE)
                while start < end:
                    start += os.copy_file_range(src, dst, end - start, start, start)
                offset = end
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _attach_loop(image: Path) -> int:
    """Attach ``image`` to a free loop device; returns the open device fd (auto-clear, direct I/O)."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _attempt in range(20):
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
                try:
                    device = os.open(f"/dev/loop{number}", os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # udev has not made the node yet
                config = _LoopConfig(fd=backing, block_size=0)
                config.info.lo_flags = _LO_FLAGS_AUTOCLEAR | _LO_FLAGS_DIRECT_IO
                try:
                    fcntl.ioctl(device, _LOOP_CONFIGURE, config)
                    return device
                except OSError as exc:
                    os.close(device)
                    if exc.errno == 22 and config.info.lo_flags & _LO_FLAGS_DIRECT_IO:
                        raise  # not expected on a disk file system; say so rather than loop
                    # EBUSY: another process took the device between GET_FREE and CONFIGURE.
            raise SandboxError("no free loop device for the session's data disk")
        finally:
            os.close(control)
    finally:
        os.close(backing)


def _mount(device_fd: int, target: Path) -> None:
    device = os.readlink(f"/proc/self/fd/{device_fd}")  # /dev/loopN
    # noinit_itable: the kernel does not zero the (unused) inode tables in the background.
    if _libc.mount(device.encode(), str(target).encode(), b"ext4", _MS_NOSUID | _MS_NODEV,
                   b"noinit_itable,errors=remount-ro") != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"cannot mount the session's data disk at {target}: {os.strerror(err)}")


def mount_tmpfs(target: Path, size: int, inodes: int, uid: int, gid: int) -> None:
    """The fallback data area where no disk can be had: a tmpfs, whose pages count as the session's memory."""
    options = f"size={size},nr_inodes={inodes},mode=0700,uid={uid},gid={gid}".encode()
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"cannot mount the session's data tmpfs at {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detach whatever is mounted at ``target`` (a data disk's loop device then frees itself)."""
    if os.path.ismount(target) and _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot unmount {target}: {os.strerror(err)}")


class DataDisks:
    """Makes, mounts and removes the sessions' data file systems. One per launcher (root only).

    ``size`` is what a session can write (bytes), ``inodes`` how many files
    and folders it can make. Raises :class:`SandboxError` when the template
    cannot be built.
    """

    def __init__(self, root: Path, size: int, inodes: int):
        self.root = root
        self.size = size
        self.inodes = inodes
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        self.template = root / f"template-{size}-{inodes}.img"
        if not self.template.exists():
            self._build_template()

    def image(self, number: int) -> Path:
        return self.root / f"{number}.img"

    def _build_template(self) -> None:
        """mkfs.ext4 a sparse file whose free space, as an unprivileged writer sees it, is ``size``.

        ext4 keeps inode tables, bitmaps and a reserve (2 % or 4096 blocks) for
        itself; their size depends on the file system's, so the image size is
        found in a few rounds of mkfs and ``statvfs``.
        """
        work = self.root / f".template-{os.getpid()}"
        mount_point = self.root / f".mnt-{os.getpid()}"
        mount_point.mkdir(exist_ok=True)
        image_size = self.size + self.inodes * _INODE_SIZE + self.size // 32 + 4 * MiB
        try:
            for _round in range(6):
                image_size = -(-image_size // 4096) * 4096
                available = self._format(work, mount_point, image_size)
                if 0 <= available - self.size < max(256 * 1024, self.size // 1000):
                    break
                image_size -= available - self.size
            else:
                raise SandboxError(f"cannot size a data disk of {self.size} bytes with {self.inodes} files")
            os.replace(work, self.template)
        finally:
            with contextlib.suppress(FileNotFoundError):
                work.unlink()
            with contextlib.suppress(OSError):
                mount_point.rmdir()

    def _format(self, image: Path, mount_point: Path, image_size: int) -> int:
        """mkfs ``image`` at ``image_size``; returns the bytes a non-root writer may use there."""
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, image_size)
        finally:
            os.close(fd)
        argv = [_mkfs() or "mkfs.ext4", "-q", "-F", "-N", str(self.inodes), "-I", str(_INODE_SIZE), "-m", "0",
                "-b", "4096", "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard", str(image)]
        result = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if result.returncode != 0:
            raise SandboxError(f"cannot make the sessions' data file system: {result.stderr.strip() or result.returncode}")
        device = _attach_loop(image)
        try:
            _mount(device, mount_point)
        finally:
            os.close(device)
        try:
            stats = os.statvfs(mount_point)
            # lost+found counts against nothing once removed; a session should not see it.
            os.rmdir(mount_point / "lost+found")
            return stats.f_bavail * stats.f_frsize
        finally:
            unmount(mount_point)

    def create(self, number: int, mount_point: Path, uid: int, gid: int) -> None:
        """Give slot ``number`` a fresh data disk mounted at ``mount_point``, owned by ``uid``, mode 0700.

        Called by the launcher for every new sandbox, on its spawn thread.
        """
        image = self.image(number)
        with contextlib.suppress(FileNotFoundError):
            image.unlink()  # a crashed pool's, already unmounted by the slot's cleanup
        _copy_sparse(self.template, image)
        try:
            device = _attach_loop(image)
            try:
                _mount(device, mount_point)
            finally:
                os.close(device)  # auto-clear: the device is freed when the mount goes
            os.chown(mount_point, uid, gid)
            os.chmod(mount_point, 0o700)
        except BaseException:
            with contextlib.suppress(OSError):
                unmount(mount_point)
            image.unlink()
            raise

    def remove(self, number: int, mount_point: Path) -> None:
        """Unmount slot ``number``'s data disk and delete its image (also for a crashed pool's slot)."""
        unmount(mount_point)
        with contextlib.suppress(FileNotFoundError):
            self.image(number).unlink()

    def describe(self) -> str:
        return f"ext4 on a loop device, images in {self.root}"
