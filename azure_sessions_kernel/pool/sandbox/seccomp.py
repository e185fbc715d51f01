"""The sandbox's seccomp deny-list (layer L7 of ``shared/reference/sandbox.md`` §3.2).

:func:`build_seccomp_bpf` compiles it once per :class:`~.bwrap.BwrapLauncher`;
each sandbox gets the program through ``bwrap --seccomp FD``.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from .base import SandboxError

__all__ = ["build_seccomp_bpf"]

# Kernel surface a notebook never needs and that keeps producing privilege
# escalations; all answer EPERM (sandbox.md §3.2 L7, after Flatpak and Docker).
_EPERM_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "perf_event_open", "bpf", "userfaultfd", "syslog",
    "add_key", "keyctl", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "lookup_dcookie",
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex", "stime",
    "iopl", "ioperm", "vhangup", "uselib", "ustat", "sysfs", "nfsservctl",
    "mbind", "set_mempolicy", "migrate_pages", "move_pages",
)
# Answer ENOSYS so that glibc and friends fall back to the older call
# (clone3 -> clone, whose flags we can inspect; new mount API -> mount).
_ENOSYS_SYSCALLS = ("clone3", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr")
_CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
_AF_UNIX, _AF_INET, _AF_NETLINK, _AF_INET6 = 1, 2, 16, 10
_AF_MAX = 46
_PER_LINUX = 0


def _seccomp_module() -> Any:
    try:
        import pyseccomp as seccomp
    except ImportError:
        try:
            import seccomp  # Debian's python3-seccomp
        except ImportError as exc:
            raise SandboxError(
                "cannot build the seccomp filter: neither pyseccomp nor seccomp (python3-seccomp) is importable"
            ) from exc
    return seccomp


def build_seccomp_bpf() -> tuple[bytes, list[str]]:
    """Compile the deny-list to BPF; returns it and the syscall names this kernel/libseccomp lacks.

    Called once by :class:`BwrapLauncher` at creation; each sandbox gets the
    program through ``bwrap --seccomp FD``.
    """
    sc = _seccomp_module()
    flt = sc.SyscallFilter(sc.ALLOW)
    # Syscalls of a foreign ABI (i386 ``int 0x80``, x32) bypass per-name rules: kill them.
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    unknown: list[str] = []

    def rule(action: int, name: str, *args: Any) -> None:
        try:
            flt.add_rule(action, name, *args)
        except (OSError, ValueError, RuntimeError):
            unknown.append(name)  # not on this architecture or too new for libseccomp

    for name in _EPERM_SYSCALLS:
        rule(sc.ERRNO(errno.EPERM), name)
    for name in _ENOSYS_SYSCALLS:
        rule(sc.ERRNO(errno.ENOSYS), name)
    for flag in _CLONE_NAMESPACE_FLAGS:
        rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # The ioctl request is an int; compare only the low 32 bits (CVE-2017-5226).
    for request in (_TIOCSTI, _TIOCLINUX):
        rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    # personality(2) may only select plain Linux: no ADDR_NO_RANDOMIZE and friends (as Flatpak).
    rule(sc.ERRNO(errno.EPERM), "personality", sc.Arg(0, sc.NE, _PER_LINUX))
    # Sockets: UNIX, IPv4, IPv6, and NETLINK_ROUTE only (libzmq aborts when it
    # cannot open a route netlink socket to list interfaces).
    for family in range(_AF_MAX + 1):
        if family not in (_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK):
            rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, _AF_MAX))
    rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, _AF_NETLINK), sc.Arg(2, sc.NE, 0))

    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(write_fd, "wb") as out:
            flt.export_bpf(out)
        with os.fdopen(read_fd, "rb") as inp:
            read_fd = -1
            bpf = inp.read()
    finally:
        if read_fd >= 0:
            os.close(read_fd)
    return bpf, unknown
