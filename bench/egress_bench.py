"""Egress through the pool's proxy (issue 11): what the relay and the proxy cost against the host's own network.

Two figures, each timed inside a session of a pool started with
``--egress pypi`` (the session's relay → the Unix socket → the pool's proxy →
the package index) and, as the baseline, by this process on the host going
straight to the same host, in the same run, samples interleaved:

* opening a connection: a ``CONNECT files.pythonhosted.org:443`` answered
  ``200`` by the proxy, against a TCP connect from the host;
* downloading a wheel of about 12 MB from files.pythonhosted.org over HTTPS
  (the proxy tunnels TLS; the session verifies against the host's CA bundle).

The session times itself (``time.perf_counter`` around the work), so the
execute call's own overhead is not counted.

Run: ``.venv/bin/python bench/egress_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import ssl
import sys
import time
import urllib.request
from pathlib import Path

import httpx

from _common import API, ms, running_pool, summary, table

#: A fixed file (pandas 2.2.3, manylinux x86_64, CPython 3.11), found through the index's simple page at run time.
PROJECT, VERSION, SUFFIX = "pandas", "2.2.3", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
HOST = "files.pythonhosted.org"

SESSION_CODE = r"""
import socket, time, urllib.request, json
def tunnel():
    t = time.perf_counter()
    with socket.create_connection(('127.0.0.1', 3128), timeout=30) as s:
        s.sendall(b'CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n')
        assert s.makefile('rb').readline().startswith(b'HTTP/1.1 200')
    return time.perf_counter() - t
def download():
    t = time.perf_counter()
    n = len(urllib.request.urlopen({url!r}, timeout=120).read())
    return time.perf_counter() - t, n
"""


def wheel_url() -> str:
    with urllib.request.urlopen(f"https://pypi.org/simple/{PROJECT}/", timeout=60) as r:
        page = r.read().decode()
    match = re.search(rf'href="([^"#]*/{PROJECT}-{VERSION}-{re.escape(SUFFIX)})', page)
    if match is None:
        raise RuntimeError(f"{PROJECT} {VERSION} ({SUFFIX}) is not on the index page")
    return match.group(1)


def host_connect() -> float:
    started = time.perf_counter()
    socket.create_connection((HOST, 443), timeout=30).close()
    return time.perf_counter() - started


def host_download(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    n = len(urllib.request.urlopen(url, timeout=120, context=ssl.create_default_context()).read())
    return time.perf_counter() - started, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples")
    args = p.parse_args(argv)
    connects, downloads = (20, 3) if args.quick else (100, 9)
    url = wheel_url()
    with running_pool("--egress", "pypi", "--ready-sessions", "1") as pool:
        http = httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=300)
        params = {"api-version": API, "identifier": "egress-bench"}

        def run(expression: str):
            code = f"import json as _json\n_json.dumps({expression})"
            r = http.post("/executions", params=params, json={"code": code, "timeoutInSeconds": 220})
            body = r.json()
            assert body["status"] == "Succeeded", body["result"]["stderr"][-2000:]
            return json.loads(body["result"]["executionResult"])

        setup = SESSION_CODE.replace("{host}", HOST).replace("{url!r}", repr(url))
        http.post("/executions", params=params, json={"code": setup, "timeoutInSeconds": 60}).raise_for_status()
        session_connect, local_connect, session_dl, local_dl = [], [], [], []
        for _ in range(connects):
            session_connect.append(run("tunnel()"))
            local_connect.append(host_connect())
        size = 0
        for _ in range(downloads):
            took, size = run("list(download())")
            session_dl.append(took)
            took, _ = host_download(url)
            local_dl.append(took)
        http.close()
    rows = []
    for label, ours, base in (("open a connection (CONNECT → 200 vs TCP connect), p50", session_connect, local_connect),
                              (f"download {size / 2**20:.1f} MiB over HTTPS, p50", session_dl, local_dl)):
        o50, o99 = summary(ours)
        b50, b99 = summary(base)
        rows.append([label, ms(o50), ms(b50), f"{o50 / b50:5.2f}", ""])
        rows.append(["  p99" if "connection" in label else "  max", ms(o99), ms(b99), f"{o99 / b99:5.2f}", ""])
    o50 = summary(session_dl)[0]
    rows.append(["  throughput, session", f"{size / o50 / 2**20:.1f} MiB/s", f"{size / summary(local_dl)[0] / 2**20:.1f} MiB/s", "", ""])
    table(f"10. Egress through the pool's proxy ({connects} connections, {downloads} downloads, interleaved)",
          ["figure", "session (proxy)", "host (direct)", "ratio", ""], rows)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
