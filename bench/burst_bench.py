"""Start-up under a burst (issue 12, figure 8): N kernels started together, kernel start → first result.

8a. Ours: N ``azure-sessions`` kernels started at the same moment against a
running local pool at its default settings (one ready sandbox), so N-1 of
their sessions start their sandboxes during the burst. Baseline, measured in
the same run on the same machine: N plain local ipykernels (the session
image's interpreter) started together. Also: how long the pool takes after
the burst to have its ready sandbox back.

8b. The pool alone: N new identifiers' first executions sent at once over
HTTP, on a pool with the default bound on parallel sandbox starts and on one
that starts them all at once (``--parallel-starts N``, the behaviour before
the bound), alternating.

Run: ``.venv/bin/python bench/burst_bench.py [--kernels 20] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time

import httpx

from _common import API, REPO, ms, percentile, running_pool, table, wait_until
from kernel_bench import LOCAL, OURS, environment, first_result, pool_of, pool_ready


def burst(name: str, n: int) -> tuple[list[float], list[str]]:
    """Start ``n`` kernels at once; each one's seconds from start to its first ``1+1`` result."""
    barrier = threading.Barrier(n)
    results: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            total, _ = first_result(name)
            with lock:
                results.append(total)
        except Exception as exc:  # report, do not hide the other kernels' figures
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results), errors


def http_burst(n: int, *pool_args: str) -> list[float]:
    """Seconds to each of ``n`` new identifiers' first result, all sent at once to a fresh pool."""
    with running_pool(*pool_args) as pool:
        async def run() -> list[float]:
            limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
            async with httpx.AsyncClient(base_url=pool.endpoint, headers=pool.headers, timeout=300, limits=limits) as client:
                while (await client.get("/metadata", params={"api-version": API})).json()["localPool"]["readySessions"] < 1:
                    await asyncio.sleep(0.1)

                async def one(i: int) -> float:
                    t = time.perf_counter()
                    r = await client.post("/executions", params={"api-version": API, "identifier": f"burst-{i}"},
                                          json={"code": "1+1", "timeoutInSeconds": 220})
                    if r.status_code != 200 or r.json()["result"]["executionResult"] != 2:
                        raise RuntimeError(f"burst-{i}: HTTP {r.status_code}: {r.text[:200]}")
                    return time.perf_counter() - t

                return sorted(await asyncio.gather(*(one(i) for i in range(n))))

        return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", type=int, default=20, help="kernels started together (default 20)")
    p.add_argument("--rounds", type=int, default=1, help="bursts of each kind, alternating (default 1)")
    args = p.parse_args(argv)
    n = args.kernels
    from azure_sessions_kernel.client import acquire_local_pool_sync

    with environment() as tmp:
        runtime = tmp / "runtime"
        lease = acquire_local_pool_sync()  # the pool a user's first notebook left running
        try:
            ours: list[float] = []
            local: list[float] = []
            refill: list[float] = []
            errors: list[str] = []
            for _ in range(args.rounds):
                wait_until(pool_ready(runtime), 120)
                o, e = burst(OURS, n)
                ours += o
                errors += e
                t = time.perf_counter()
                # The burst's kernels have ended; the ready sandbox is back once the pool refilled.
                wait_until(pool_ready(runtime), 120)
                refill.append(time.perf_counter() - t)
                lo, e = burst(LOCAL, n)
                local += lo
                errors += [f"baseline: {x}" for x in e]
            rows = []
            for label, q in (("p50", 50), ("p90", 90), ("max", 100)):
                o, lo = percentile(ours, q), percentile(local, q)
                rows.append([f"start → first result, {label}", ms(o), ms(lo), f"{o / lo:5.2f}"])
            rows.append(["failed kernels", str(len(errors)), "", ""])
            rows.append([f"pool back to its ready sandbox after the burst (pid {pool_of(runtime)['pid']})",
                         ms(max(refill)), "", ""])
            table(f"8. Burst: {n} kernels started together ({args.rounds} round(s); pool at default settings)",
                  ["figure", "ours (local pool)", "local ipykernel", "ratio"], rows)
            for error in errors[:5]:
                print(f"  {error}")
        finally:
            lease.release()

    bounded: list[float] = []
    unbounded: list[float] = []
    for _ in range(args.rounds):
        bounded += http_burst(n)
        unbounded += http_burst(n, "--parallel-starts", str(n))
    rows = []
    for label, q in (("p50", 50), ("p90", 90), ("max", 100)):
        b, u = percentile(bounded, q), percentile(unbounded, q)
        rows.append([f"first result, {label}", ms(b), ms(u), f"{b / u:5.2f}"])
    table(f"8b. Pool only: {n} new identifiers at once over HTTP ({args.rounds} round(s) each, alternating)",
          ["figure", "default --parallel-starts", f"--parallel-starts {n}", "ratio"], rows)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
