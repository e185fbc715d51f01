"""Every benchmark of issue 5 in one run: ``make bench`` (``.venv/bin/python bench/run_all.py``).

Prints the machine, then figures 1–3 (``kernel_bench``), 4–7
(``pool_bench``), 8 (``burst_bench``, issue 12), 9 (``widget_bench``, issue 10) and 10 (``egress_bench``, issue 11), each as a table of
medians, p99 and ratios with its
baseline and target beside it. A benchmark that fails is reported and the
rest still run: benchmarks report, they never fail the build (exit 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import burst_bench  # noqa: E402
import egress_bench  # noqa: E402
import kernel_bench  # noqa: E402
import pool_bench  # noqa: E402
import widget_bench  # noqa: E402
from _common import REPO, cpu_count  # noqa: E402


def machine() -> str:
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu_count()} CPUs, {int(mem) / 2**20:.1f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, load average {load} at start, commit {commit}{' (modified)' if dirty else ''}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples and concurrency 10 only (about a minute)")
    args = p.parse_args(argv)
    started = time.monotonic()
    print(f"# azure-sessions-kernel benchmarks\n\nmachine: {machine()}")
    print("Ratios compare figures measured in this same run; absolute times drift on a shared machine.")
    quick = ["--quick"] if args.quick else []
    burst = ["--kernels", "10"] if args.quick else []
    benches = (
        ("kernel (figures 1-3)", lambda: kernel_bench.main(quick)),
        ("pool (figures 4-7)", lambda: pool_bench.main(quick)),
        ("burst (figure 8)", lambda: burst_bench.main(burst)),
        ("widgets (figure 9)", lambda: widget_bench.main(quick)),
        ("egress (figure 10)", lambda: egress_bench.main(quick)),
    )
    for name, run in benches:
        t = time.monotonic()
        try:
            run()
        except Exception:  # report and go on: one broken figure must not hide the others
            print(f"\n!! the {name} benchmark failed:\n{traceback.format_exc()}", flush=True)
        print(f"\n({name}: {time.monotonic() - t:.0f} s)", flush=True)
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
