"""Sandboxes for the pool's sessions, one module per concern.

* :mod:`.base` -- the :class:`Launcher`/:class:`Sandbox` seam the session
  manager uses, :class:`SandboxLimits`, and what both launchers share;
* :mod:`.bwrap` -- the default launcher: bubblewrap namespaces, a per-session
  uid, mounts and rlimits, built from :mod:`.seccomp` (the deny-list),
  :mod:`.cgroups` (memory, pids and cpu limits) and :mod:`.disks` (each
  session's ``/mnt/data``, a disk of its own);
* :mod:`.insecure` -- ``--insecure-no-sandbox``: plain subprocesses.

The launchers are imported by ``pool/server.py`` only when chosen.
"""

from .base import Launcher, Sandbox, SandboxError, SandboxLimits, SandboxLimitsError

__all__ = ["Launcher", "Sandbox", "SandboxError", "SandboxLimits", "SandboxLimitsError"]
