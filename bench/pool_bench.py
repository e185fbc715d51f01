"""Pool-side benchmarks (issue 5, figures 4–7), straight over HTTP.

4. Session allocation: first execute on a new identifier, warm pool vs none.
5. Memory: PSS of one idle session after ``import numpy, pandas, matplotlib``,
   and of the pool server; plus the first-cell import time vs a fresh local
   Python doing the same import.
6. Files: 128 MB upload and download over loopback (MB/s) and the server's
   peak RSS growth.
7. Scale: N concurrent sessions running cells (p50/p99, errors, memory, swap,
   OOM kills), and one session's latency while another burns CPU.

Run: ``.venv/bin/python bench/pool_bench.py [--sessions 10,50,200] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import (API, descendants, ms, oom_kills, pss_bytes, running_pool, status_kb, summary, swap_used_kb, table,
                     wait_until)


def execute(http: httpx.Client, ident: str, code: str, timeout: int = 60) -> dict:
    r = http.post("/executions", params={"api-version": API, "identifier": ident}, json={"code": code, "timeoutInSeconds": timeout})
    r.raise_for_status()
    return r.json()


def ready_count(http: httpx.Client) -> int:
    return http.get("/metadata", params={"api-version": API}).json()["localPool"]["readySessions"]


def bench_allocation(samples: int) -> None:
    rows = []
    results = {}
    for label, ready in (("warm pool (1 ready)", 1), ("no warm pool", 0)):
        with running_pool("--ready-sessions", str(ready)) as pool, httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as http:
            times = []
            for i in range(samples):
                if ready:
                    wait_until(lambda: ready_count(http) >= ready, 30)
                ident = f"alloc-{i}-{os.getpid()}"
                t = time.perf_counter()
                execute(http, ident, "1 + 1")
                times.append(time.perf_counter() - t)
                http.delete("/session", params={"api-version": API, "identifier": ident})
            results[label] = summary(times)
    warm, cold = results["warm pool (1 ready)"], results["no warm pool"]
    rows.append(["new identifier → first result, p50", ms(warm[0]), ms(cold[0]), f"{warm[0] / cold[0]:.2f}"])
    rows.append(["new identifier → first result, p99", ms(warm[1]), ms(cold[1]), f"{warm[1] / cold[1]:.2f}"])
    table(f"4. Session allocation ({samples} identifiers each; target: warm p50 ≤ 20 ms)", ["figure", "warm pool", "no warm pool", "ratio"], rows)


def _session_pids(pool_pid: int, before: set[int]) -> list[int]:
    return [p for p in descendants(pool_pid) if p not in before]


def _import_time(http: httpx.Client, ident: str, code: str) -> float:
    """Seconds the session spends on ``code`` in its first cell, timed inside the session."""
    body = f"import time as _t\n_s = _t.perf_counter()\n{code}\n_t.perf_counter() - _s"
    return float(execute(http, ident, body)["result"]["executionResult"])


def _claimed_session(pool, http: httpx.Client, ident: str, code: str) -> tuple[float, float, int]:
    """Claim the ready session with ``ident`` and run ``code`` as its first cell.

    Returns the import's seconds inside the session, the cell's HTTP round
    trip, and the session's PSS once idle.
    """
    wait_until(lambda: ready_count(http) >= 1, 120)
    ready_pids = set(descendants(pool.process.pid))  # the ready sandbox; its refill comes later
    t = time.perf_counter()
    seconds = _import_time(http, ident, code)
    wall = time.perf_counter() - t
    time.sleep(1.0)
    return seconds, wall, sum(pss_bytes(p) for p in ready_pids & set(descendants(pool.process.pid)))


def bench_memory() -> None:
    from azure_sessions_kernel.pool.image import find_image

    # The session image's interpreter: same Python and packages as a session, unsandboxed.
    python = str(find_image().python)
    code = "import numpy, pandas, matplotlib\nimport matplotlib.pyplot"
    local = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "agg"})
        local.append(time.perf_counter() - t)
    startup = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        startup.append(time.perf_counter() - t)
    local_import = statistics.median(local) - statistics.median(startup)

    with running_pool("--ready-sessions", "1") as pool, httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as http:
        pre_import, pre_wall, pre_pss = _claimed_session(pool, http, "mem-preloaded", code)
        server_pss = pss_bytes(pool.process.pid)
    with running_pool("--ready-sessions", "1", "--preload", "none") as pool, httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as http:
        plain_import, plain_wall, plain_pss = _claimed_session(pool, http, "mem-plain", code)

    probe = str(Path(__file__).with_name("zygote_probe.py"))
    forked = json.loads(subprocess.run([python, probe, "4"], check=True, capture_output=True, text=True).stdout)
    unforked = json.loads(subprocess.run([python, probe, "1", "unforked"], check=True, capture_output=True, text=True).stdout)
    mib = lambda b: f"{b / 2**20:7.1f} MiB"  # noqa: E731
    rows = [
        ["PSS of one idle session after the imports (preloaded, default)", mib(pre_pss), "target ≤ 60 MiB (aim 20)"],
        ["same, session without preload (imports in its first cell)", mib(plain_pss), "target ≤ 60 MiB (aim 20)"],
        ["× 200 sessions (preloaded), projected", f"{200 * pre_pss / 2**30:7.1f} GiB", f"RAM {_mem_total() / 2**30:.1f} GiB, no swap"],
        ["estimate, not shipped: child of a forked template, PSS (4 siblings)", mib(statistics.median(forked["forked"])), "see README: weakens isolation"],
        ["  its private (copied) pages: PSS with many siblings tends to this", mib(statistics.median(forked["forked_private"])), ""],
        ["  same work in an unforked process", mib(unforked["unforked"]), ""],
        ["PSS of the pool server", mib(server_pss), ""],
        ["import numpy, pandas, matplotlib.pyplot: first cell, preloaded session", f"{pre_import * 1000:8.3f} ms",
         f"{pre_import / local_import:.4f}× of local (target ≤ 0.10)"],
        ["  that first cell's whole HTTP round trip (new identifier)", ms(pre_wall), f"{pre_wall / local_import:.3f}× of local"],
        ["same, session without preload", ms(plain_import), f"{plain_import / local_import:.2f}× of local"],
        ["  that first cell's whole HTTP round trip (new identifier)", ms(plain_wall), f"{plain_wall / local_import:.2f}× of local"],
        ["same import in a fresh local Python (baseline)", ms(local_import), "session image's python, unsandboxed"],
    ]
    table("5. Memory and imports", ["figure", "value", "baseline / target"], rows)


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_files() -> None:
    size = 128 * 1024 * 1024 - 4096
    with tempfile.TemporaryDirectory() as tmp, running_pool("--ready-sessions", "0", "--data-size", "512M") as pool:
        src = os.path.join(tmp, "big.bin")
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(size // len(block)):
                f.write(block)
            f.write(block[: size % len(block)])
        with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=300) as http:
            execute(http, "files", "1")
            rss0 = status_kb(pool.process.pid, "VmRSS")
            up, down = [], []
            for _ in range(3):
                with open(src, "rb") as f:
                    t = time.perf_counter()
                    r = http.post("/files", params={"api-version": API, "identifier": "files"}, files={"file": ("big.bin", f)})
                    up.append(time.perf_counter() - t)
                    r.raise_for_status()
                t = time.perf_counter()
                n = 0
                with http.stream("GET", "/files/big.bin/content", params={"api-version": API, "identifier": "files"}) as resp:
                    for chunk in resp.iter_bytes(1 << 20):
                        n += len(chunk)
                down.append(time.perf_counter() - t)
                assert n == size
            hwm = status_kb(pool.process.pid, "VmHWM")
    mb = size / 1e6
    rows = [
        ["128 MB upload", f"{mb / statistics.median(up):7.0f} MB/s", "target ≥ 300 MB/s"],
        ["128 MB download", f"{mb / statistics.median(down):7.0f} MB/s", "target ≥ 300 MB/s"],
        ["server peak RSS growth", f"{max(0, hwm - rss0) / 1024:7.1f} MiB", "target < 32 MiB"],
    ]
    table("6. Files over loopback (median of 3)", ["figure", "value", "target"], rows)


def bench_scale(counts: list[int], cells: int) -> None:
    rows = []
    for n in counts:
        swap0, oom0 = swap_used_kb(), oom_kills()
        with running_pool("--ready-sessions", "0", "--max-sessions", str(n + 5), "--memory", "256M") as pool:
            async def one(client: httpx.AsyncClient, i: int) -> tuple[list[float], int]:
                lat, errors = [], 0
                for c in range(cells):
                    t = time.perf_counter()
                    try:
                        r = await client.post("/executions", params={"api-version": API, "identifier": f"scale-{i}"},
                                              json={"code": f"x = {c}\nx * 2", "timeoutInSeconds": 120})
                        ok = r.status_code == 200 and r.json()["result"]["executionResult"] == c * 2
                    except httpx.HTTPError:
                        ok = False
                    if c > 0:  # the first cell includes the session's start-up
                        lat.append(time.perf_counter() - t)
                    errors += not ok
                return lat, errors

            async def run() -> tuple[list[float], int, float]:
                limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
                async with httpx.AsyncClient(base_url=pool.endpoint, headers=pool.headers, timeout=300, limits=limits) as client:
                    t = time.perf_counter()
                    out = await asyncio.gather(*(one(client, i) for i in range(n)))
                    return [x for lat, _ in out for x in lat], sum(e for _, e in out), time.perf_counter() - t

            lat, errors, wall = asyncio.run(run())
            total = sum(pss_bytes(p) for p in [pool.process.pid, *descendants(pool.process.pid)])
        p50, p99 = summary(lat)
        rows.append([n, cells, errors, ms(p50), ms(p99), f"{total / 2**30:5.2f} GiB", f"{(swap_used_kb() - swap0) / 1024:.0f} MiB", oom_kills() - oom0, f"{wall:5.1f} s"])
    table("7a. Concurrent sessions (cells after each session's first; target at 200: no errors, p99 < 1 s, no swap, no OOM)",
          ["sessions", "cells each", "errors", "p50", "p99", "total PSS", "swap growth", "OOM kills", "wall"], rows)


def bench_noisy_neighbour(samples: int) -> None:
    with running_pool("--ready-sessions", "0") as pool, httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as http:
        execute(http, "neighbour-quiet", "1")
        execute(http, "neighbour-hog", "1")

        def measure() -> list[float]:
            out = []
            for _ in range(samples):
                t = time.perf_counter()
                execute(http, "neighbour-quiet", "1 + 1")
                out.append(time.perf_counter() - t)
            return out

        idle = measure()
        http.post("/executions", params={"api-version": API, "identifier": "neighbour-hog"},
                  json={"code": "import multiprocessing as m, time\n"
                                "def burn():\n    while True: pass\n"
                                "ps = [m.Process(target=burn) for _ in range(4)]\n[p.start() for p in ps]\ntime.sleep(60)",
                        "executionType": "Asynchronous", "timeoutInSeconds": 120})
        time.sleep(1.0)
        busy = measure()
        http.delete("/session", params={"api-version": API, "identifier": "neighbour-hog"})
    i50, i99 = summary(idle)
    b50, b99 = summary(busy)
    table("7b. One session's cell latency while another burns CPU (4 processes; target ratio ≤ 2)",
          ["figure", "idle neighbour", "CPU-hog neighbour", "ratio"],
          [["p50", ms(i50), ms(b50), f"{b50 / i50:.2f}"], ["p99", ms(i99), ms(b99), f"{b99 / i99:.2f}"]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", default="10,50,200", help="concurrency levels for figure 7 (default 10,50,200)")
    p.add_argument("--quick", action="store_true", help="fewer samples, concurrency 10 only")
    p.add_argument("--only", choices=["allocation", "memory", "files", "scale", "neighbour"], action="append")
    args = p.parse_args(argv)
    only = set(args.only or ["allocation", "memory", "files", "scale", "neighbour"])
    counts = [10] if args.quick else [int(x) for x in args.sessions.split(",")]
    if "allocation" in only:
        bench_allocation(5 if args.quick else 15)
    if "memory" in only:
        bench_memory()
    if "files" in only:
        bench_files()
    if "scale" in only:
        bench_scale(counts, 5)
    if "neighbour" in only:
        bench_noisy_neighbour(20 if args.quick else 50)
    return 0


if __name__ == "__main__":
    sys.exit(main())
