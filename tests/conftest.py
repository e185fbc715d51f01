"""Shared fixtures: real local pools started as subprocesses on free loopback ports.

``local_pool`` and ``strict_pool`` are session-wide (one pool each for the whole
run); ``start_pool(...)`` starts a private pool with custom options for tests
that need them (short cooldown, tiny limits, max sessions...). Every pool is
stopped, and checked to have exited, at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent

# Auto-started pools and lease files of this test run stay out of the user's own runtime dir.
os.environ.setdefault("AZURE_SESSIONS_KERNEL_RUNTIME_DIR", tempfile.mkdtemp(prefix="ask-test-runtime-"))


@dataclasses.dataclass
class RunningPool:
    endpoint: str
    token: str
    strict: bool
    process: subprocess.Popen[str]
    banner: list[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError("the pool did not shut down within %.0f s of SIGINT" % timeout) from None
        return self.process.returncode


@functools.cache
def load_runner() -> types.ModuleType:
    """The session's runner, which is a standalone script (it runs inside the sandbox): loaded by path, once."""
    from azure_sessions_kernel.pool.sandbox.base import RUNNER_SOURCE

    spec = importlib.util.spec_from_file_location("session_kernel_runner", RUNNER_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Every pool this run started; pytest_sessionfinish stops those a failed fixture left running.
_LAUNCHED: list[RunningPool] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for pool in _LAUNCHED:
        if pool.process.poll() is None:
            try:
                pool.stop()
            except AssertionError:
                pass  # it was killed after the SIGINT grace; nothing is left either way


def launch_pool(
    *extra: str,
    strict: bool = False,
    token: str | None = None,
    ready: int = 1,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
    prefix: tuple[str, ...] = (),
) -> RunningPool:
    """Start ``azure-sessions-kernel serve`` and wait for its endpoint line.

    ``env`` is added to this process's environment; ``pass_fds`` are
    inherited by the server (the battery passes a decoy to catch fd leaks);
    ``prefix`` runs the server through a wrapper (the egress attacks give it
    a hosts file of its own in a private mount namespace).
    """
    token = token or secrets.token_urlsafe(16)
    argv = [*prefix, sys.executable, "-m", "azure_sessions_kernel", "serve", "--port", "0", f"--token={token}",
            "--ready-sessions", str(ready), "--log-level", "warning", *extra]
    if strict:
        argv.append("--azure-strict")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=None, text=True, cwd=REPO, env={**os.environ, **(env or {})}, pass_fds=pass_fds
    )
    banner: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the pool exited before serving (rc={proc.wait()}): {banner}")
        banner.append(line.rstrip("\n"))
        if line.startswith("Pool management endpoint: "):
            endpoint = line.split(": ", 1)[1].strip()
            # Drain the rest of the banner in the background so the pipe never fills.
            import threading

            threading.Thread(target=lambda: [banner.append(x.rstrip("\n")) for x in proc.stdout], daemon=True).start()
            pool = RunningPool(endpoint, token, strict, proc, banner)
            _LAUNCHED.append(pool)
            return pool
    proc.kill()
    raise AssertionError("the pool did not print its endpoint within 120 s")


@pytest.fixture(scope="session")
def local_pool() -> Iterator[RunningPool]:
    pool = launch_pool("--cooldown", "600")
    yield pool
    assert pool.stop() == 0


@pytest.fixture(scope="session")
def strict_pool() -> Iterator[RunningPool]:
    pool = launch_pool("--cooldown", "600", strict=True)
    yield pool
    assert pool.stop() == 0


@pytest.fixture
def start_pool() -> Iterator[object]:
    """Factory for private pools with custom options; all are stopped after the test."""
    started: list[RunningPool] = []

    def start(*extra: str, strict: bool = False, ready: int = 1, env: dict[str, str] | None = None) -> RunningPool:
        pool = launch_pool(*extra, strict=strict, ready=ready, env=env)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.stop()


@pytest.fixture
def identifier() -> Iterator[str]:
    """A fresh, unguessable session identifier (Azure: treat identifiers as secrets).

    Its session is deleted afterwards in every pool still running, so that the
    session-wide pools do not fill up (max sessions, memory) over a long run.
    """
    name = "t-" + secrets.token_hex(12)
    yield name
    for pool in _LAUNCHED:
        if pool.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{pool.endpoint}/session", params={"api-version": "2025-10-02-preview", "identifier": name},
                             headers=pool.headers, timeout=10)
