"""Shared bits of the benchmarks: starting a pool, statistics, tables, memory readings.

Benchmarks report; they never fail the build. Every figure is printed with
its baseline beside it, measured in the same run (these machines are noisy:
compare ratios, not absolute times).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
API = "2025-10-02-preview"


@dataclass
class Pool:
    endpoint: str
    token: str
    process: subprocess.Popen[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.contextmanager
def running_pool(*args: str) -> Iterator[Pool]:
    """A private ``azure-sessions-kernel serve`` for one benchmark."""
    token = secrets.token_urlsafe(16)
    # The pool's log goes to a file, so a failing pool cannot bury the tables; its errors are summarised below.
    log = tempfile.NamedTemporaryFile("w+", prefix="ask-bench-pool-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "azure_sessions_kernel", "serve", "--port", "0", f"--token={token}",
                             "--log-level", "error", *args], stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    assert proc.stdout is not None
    endpoint = None
    for line in proc.stdout:
        if line.startswith("Pool management endpoint: "):
            endpoint = line.split(": ", 1)[1].strip()
            break
    if endpoint is None:
        raise RuntimeError(f"the pool did not start (rc={proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    try:
        yield Pool(endpoint, token, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        errors = [line for line in Path(log.name).read_text(errors="replace").splitlines() if "ERROR" in line]
        if errors:
            print(f"\n(pool {' '.join(args)}: {len(errors)} error lines in {log.name}; first: {errors[0][:300]})", flush=True)
        else:
            os.unlink(log.name)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of few samples is the maximum, honestly)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: Sequence[float]) -> tuple[float, float]:
    return statistics.median(values), percentile(values, 99)


def ms(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    for i, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(d.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages split between the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def swap_used_kb() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(info["SwapTotal"].split()[0]) - int(info["SwapFree"].split()[0])


def oom_kills() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
