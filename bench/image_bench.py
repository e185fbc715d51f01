"""The session image's build time with uv (what ``image build`` uses) against pip, in one run.

``.venv/bin/python bench/image_bench.py`` (several minutes; downloads the lock's
packages from PyPI twice). Builds from the same lock into fresh directories
under ``--work`` (default: a temporary directory, removed at the end), one
after the other, and prints each build's time with the load average beside
it, then the image's size. Not part of ``run_all.py``: it needs the network
and minutes of both cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from azure_sessions_kernel.pool.image import LOCK_FILE


def _timed(label: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[str, float, float]:
    load = os.getloadavg()[0]
    started = time.monotonic()
    subprocess.run(argv, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return label, time.monotonic() - started, max(load, os.getloadavg()[0])


def _disk_usage(path: Path) -> int:
    return int(subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="where to build (needs ~4 GB; default: a temporary directory)")
    p.add_argument("--python", default="/usr/bin/python3", help="the interpreter images are built from")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="image-bench-"))
    os.chmod(work, 0o755)  # images must be enterable by the sandbox's uids: image build checks
    cli = [sys.executable, "-m", "azure_sessions_kernel", "image", "build", "--python", args.python, "--dir"]
    uv_cache = {"UV_CACHE_DIR": str(work / "uv-cache")}
    rows = [
        _timed("uv, empty cache", [*cli, str(work / "uv-1")], uv_cache),
        _timed("uv, warm cache", [*cli, str(work / "uv-2")], uv_cache),
        _timed("uv, nothing changed", [*cli, str(work / "uv-2")], uv_cache),
    ]
    size = _disk_usage(work / "uv-2")
    for label, cache in (("pip, no cache", ["--no-cache-dir"]), ("pip, warm cache", [])):
        venv = work / "pip"
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        rows.append(_timed(label, [str(venv / "bin" / "pip"), "install", "--quiet", *cache, "--require-hashes", "-r", str(LOCK_FILE)]))
    print(f"{'build':<22} {'time':>8} {'load':>6}")
    for label, seconds, load in rows:
        print(f"{label:<22} {seconds:>7.1f}s {load:>6.1f}")
    print(f"image size: {size / 2**20:.0f} MiB ({work / 'uv-2'})")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
