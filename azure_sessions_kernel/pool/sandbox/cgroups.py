"""Session cgroups (layer L2): memory (+swap), pids and cpu limits, ``cgroup.kill``, OOM counts.

:func:`_detect_hierarchies` finds, once per launcher, where this host lets the
pool create session cgroups (cgroup v1, v2 or a hybrid of both);
:class:`_SessionCgroups` is one session's set of leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from .base import SandboxError, SandboxLimits

@dataclasses.dataclass(frozen=True)
class _Hierarchy:
    """One place session cgroups are created: a v1 controller tree or the v2 tree."""

    version: int  # 1 or 2
    controllers: frozenset[str]  # the subset of memory/pids/cpu it enforces
    parent: Path  # session leaves are parent/<slot>
    has_kill: bool  # v2 cgroup.kill


def _own_cgroup_paths(proc_self_cgroup: str) -> dict[str, str]:
    """``{"memory": "/a/b", ..., "": "/x"}`` from /proc/self/cgroup (``""`` is the v2 path)."""
    paths: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _cgroup_mounts(mountinfo: str) -> list[tuple[str, Path, frozenset[str]]]:
    """``(fstype, mount point, super options)`` of every cgroup mount, from /proc/self/mountinfo."""
    mounts = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
            mounts.append((rfields[0], Path(fields[4]), frozenset(rfields[2].split(","))))
    return mounts


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _detect_hierarchies(
    prefix: str, mountinfo: str | None = None, proc_self_cgroup: str | None = None
) -> tuple[list[_Hierarchy], dict[str, str]]:
    """Where this host lets us create session cgroups, and why any controller is missing.

    Called by :class:`BwrapLauncher` as root (tests pass the two /proc texts).
    v1 leaves go under the server's own cgroup of each controller (so its
    accounting stays intact); v2 leaves under a ``<prefix>`` child of the v2
    root, since a cgroup with processes (the server's own) may not delegate
    controllers to children.
    """
    wanted = {"memory", "pids", "cpu"}
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    if proc_self_cgroup is None:
        proc_self_cgroup = Path("/proc/self/cgroup").read_text()
    own = _own_cgroup_paths(proc_self_cgroup)
    hierarchies: list[_Hierarchy] = []
    missing: dict[str, str] = {}
    covered: set[str] = set()
    v2_mount: Path | None = None
    for fstype, mount, options in _cgroup_mounts(mountinfo):
        if fstype == "cgroup":
            controllers = frozenset(options & wanted) - covered
            if controllers:
                own_path = own.get(next(iter(controllers)), "/").lstrip("/")
                hierarchies.append(_Hierarchy(1, controllers, mount / own_path / prefix, False))
                covered |= controllers
        elif v2_mount is None:
            v2_mount = mount
    if v2_mount is not None:
        available = set((v2_mount / "cgroup.controllers").read_text().split()) & (wanted - covered)
        v2_parent = v2_mount / prefix if available else v2_mount / own.get("", "/").lstrip("/") / prefix
        try:
            if available:
                # Enable the controllers on the way down to our parent (the v2
                # root is exempt from the no-internal-processes rule).
                _write(v2_mount / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(available)))
                v2_parent.mkdir(exist_ok=True)
                _write(v2_parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(available)))
                enabled = {c.lstrip("+") for c in (v2_parent / "cgroup.subtree_control").read_text().split()}
                available &= enabled
        except OSError as exc:
            for controller in available:
                missing[f"cgroup-{controller}"] = f"cannot enable the {controller} controller in {v2_parent} ({exc.strerror})"
            available = set()
            v2_parent = v2_mount / own.get("", "/").lstrip("/") / prefix
        v2_parent.mkdir(parents=True, exist_ok=True)
        has_kill = (v2_parent / "cgroup.kill").exists()  # only non-root cgroups have the file
        hierarchies.append(_Hierarchy(2, frozenset(available), v2_parent, has_kill))
        covered |= available
        if not has_kill:
            missing["cgroup-kill"] = "the kernel has no cgroup.kill (Linux < 5.14); the pid-namespace init is the only kill switch"
    else:
        missing["cgroup-kill"] = "no cgroup v2 hierarchy is mounted; the pid-namespace init is the only kill switch"
    for controller in wanted - covered:
        missing.setdefault(f"cgroup-{controller}", f"no cgroup hierarchy offers the {controller} controller")
    for hierarchy in hierarchies:
        hierarchy.parent.mkdir(parents=True, exist_ok=True)
    return hierarchies, missing


class _SessionCgroups:
    """The cgroup leaves of one session: limits, joining, killing, OOM count, removal."""

    def __init__(self, leaves: list[tuple[_Hierarchy, Path]]):
        self.leaves = leaves

    @classmethod
    def create(cls, hierarchies: Sequence[_Hierarchy], name: str, limits: SandboxLimits) -> _SessionCgroups:
        made = cls([])
        try:
            for hierarchy in hierarchies:
                leaf = hierarchy.parent / name
                if leaf.exists():
                    # Our slot lock is held, so this is a crashed server's leaf
                    # that its state record did not name: empty and reuse it.
                    leftover = cls([(hierarchy, leaf)])
                    leftover.kill()
                    leftover.remove()
                leaf.mkdir()
                made.leaves.append((hierarchy, leaf))
                made._apply_limits(hierarchy, leaf, limits)
        except OSError as exc:
            made.remove()
            raise SandboxError(f"cannot create the session's cgroup: {exc}") from exc
        return made

    @staticmethod
    def _apply_limits(hierarchy: _Hierarchy, leaf: Path, limits: SandboxLimits) -> None:
        controllers = hierarchy.controllers
        period = 100_000
        quota = max(1000, int(limits.cpus * period))
        if hierarchy.version == 1:
            if "memory" in controllers:
                _write(leaf / "memory.limit_in_bytes", str(limits.memory))
                if (leaf / "memory.memsw.limit_in_bytes").exists():  # swap accounting on
                    _write(leaf / "memory.memsw.limit_in_bytes", str(limits.memory))
            if "pids" in controllers:
                _write(leaf / "pids.max", str(limits.pids))
            if "cpu" in controllers:
                _write(leaf / "cpu.cfs_period_us", str(period))
                _write(leaf / "cpu.cfs_quota_us", str(quota))
        else:
            if "memory" in controllers:
                _write(leaf / "memory.max", str(limits.memory))
                if (leaf / "memory.swap.max").exists():
                    _write(leaf / "memory.swap.max", "0")
                with contextlib.suppress(OSError):  # Linux >= 4.19
                    _write(leaf / "memory.oom.group", "1")  # an OOM ends the whole session at once
            if "pids" in controllers:
                _write(leaf / "pids.max", str(limits.pids))
            if "cpu" in controllers:
                _write(leaf / "cpu.max", f"{quota} {period}")

    @property
    def procs_files(self) -> list[str]:
        return [str(leaf / "cgroup.procs") for _, leaf in self.leaves]

    def _read(self, controller: str, v1_file: str, v2_file: str) -> str | None:
        for hierarchy, leaf in self.leaves:
            if controller in hierarchy.controllers:
                with contextlib.suppress(OSError):
                    return (leaf / (v1_file if hierarchy.version == 1 else v2_file)).read_text()
        return None

    def oom_kills(self) -> int:
        """How many processes the memory limit's OOM killer ended (0 when unknown)."""
        text = self._read("memory", "memory.oom_control", "memory.events") or ""
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def usage(self) -> dict[str, int]:
        figures: dict[str, int] = {}
        memory = self._read("memory", "memory.usage_in_bytes", "memory.current")
        pids = self._read("pids", "pids.current", "pids.current")
        if memory:
            figures["memory_bytes"] = int(memory)
        if pids:
            figures["pids"] = int(pids)
        return figures

    def pids(self) -> set[int]:
        found: set[int] = set()
        for _, leaf in self.leaves:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (leaf / "cgroup.procs").read_text().split())
        return found

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL everything in the leaves and wait until they are empty."""
        for hierarchy, leaf in self.leaves:
            if hierarchy.has_kill:
                with contextlib.suppress(OSError):
                    _write(leaf / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout
        while (remaining := self.pids()) and time.monotonic() < deadline:
            # Without cgroup.kill (or for stragglers forked during it), signal one by one.
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        for _, leaf in reversed(self.leaves):
            for _attempt in range(50):
                try:
                    leaf.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.02)  # exiting tasks leave the cgroup asynchronously
        self.leaves = []
