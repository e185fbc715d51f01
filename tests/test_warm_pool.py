"""The warm pool: refilling, fresh and isolated sessions, preloading, ``--ready-sessions 0``.

Behaviour only: how fast any of this is belongs to ``bench/``. Every pool
here is a real ``azure-sessions-kernel serve`` with its sandbox.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from azure_sessions_kernel.pool.server import DEFAULT_PRELOAD, build_parser

pytestmark = pytest.mark.slow

V = "2025-10-02-preview"


def client(pool) -> httpx.Client:
    return httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120)


def stats(http: httpx.Client) -> dict:
    return http.get("/metadata", params={"api-version": V}).json()["localPool"]


def wait_ready(http: httpx.Client, n: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stats(http)
        if s["readySessions"] == n and s["startingSessions"] == 0:
            return s
        time.sleep(0.1)
    raise AssertionError(f"readySessions did not reach {n}: {stats(http)}")


def run(http: httpx.Client, ident: str, code: str):
    r = http.post("/executions", params={"api-version": V, "identifier": ident}, json={"code": code, "timeoutInSeconds": 60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Succeeded", body
    return body["result"]["executionResult"]


def stream(http: httpx.Client, ident: str, code: str) -> list[dict]:
    with http.stream("POST", "/.local/executions/stream", params={"api-version": V, "identifier": ident},
                     json={"code": code, "timeoutInSeconds": 60}) as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line]


# What a session's user namespace must not hold before its first cell: anything
# the warm-up or the preload could have bound.
LEAK_CHECK = (
    "sorted(n for n in ('numpy', 'np', 'pandas', 'pd', 'matplotlib', 'plt', 'importlib', 'x', 'm', 'scope') if n in globals())"
)


def test_pool_refills_after_claims_and_deletes(start_pool):
    pool = start_pool("--preload", "none", ready=2)
    with client(pool) as http:
        wait_ready(http, 2)
        for ident in ("refill-a-0001", "refill-b-0001"):
            assert run(http, ident, "1 + 1") == 2
        assert stats(http)["activeSessions"] == 2
        assert wait_ready(http, 2)["activeSessions"] == 2  # two claims, two replacements
        http.delete("/session", params={"api-version": V, "identifier": "refill-a-0001"})
        assert wait_ready(http, 2)["activeSessions"] == 1


def test_a_burst_of_new_identifiers_is_served_and_the_pool_refills(start_pool):
    """Issue 12: more new identifiers at once than ready sandboxes and than parallel starts; each gets a
    fresh session of its own, and the ready pool is back at its target afterwards."""
    pool = start_pool("--preload", "none", "--parallel-starts", "2", ready=2)
    with client(pool) as http:
        wait_ready(http, 2)
        code = "import os\nopen(f'/mnt/data/{ident}', 'w').close()\nsorted(os.listdir('/mnt/data'))"
        idents = [f"burst-{i}-0001" for i in range(6)]

        def first_cell(ident: str) -> str:
            with client(pool) as own:  # a connection each, all at once
                return run(own, ident, f"ident = {ident!r}\n{code}")

        with concurrent.futures.ThreadPoolExecutor(len(idents)) as workers:
            listings = list(workers.map(first_cell, idents))
        assert listings == [f"['{ident}']" for ident in idents]
        assert wait_ready(http, 2)["activeSessions"] == 6


def test_session_from_the_pool_is_fresh(local_pool, identifier):
    # local_pool runs the defaults: warm-up and preload both ran in this session before it was claimed.
    with client(local_pool) as http:
        wait_ready(http, 1)
        events = stream(http, identifier, "1 + 1")
        results = [e for e in events if e.get("msg_type") == "execute_result"]
        assert [r["content"]["execution_count"] for r in results] == [1]  # the user's first cell is number 1
        assert run(http, identifier, LEAK_CHECK) == "[]"
        # Second cell: history holds exactly the user's two earlier cells, Out only the first result.
        assert run(http, identifier, "(len(In), sorted(Out))") == "(4, [1, 2])"
        assert run(http, identifier, "__import__('os').listdir('/mnt/data')") == "[]"


def test_azure_contract_first_cell_sees_an_empty_history(local_pool, identifier):
    with client(local_pool) as http:
        wait_ready(http, 1)
        # Exactly what a brand-new session shows: its first cell is In[1], nothing in Out, `_` empty.
        assert run(http, identifier, "(len(In), In[0], dict(Out), _)") == "(2, '', {}, '')"


def test_sessions_from_the_pool_are_isolated(local_pool):
    with client(local_pool) as http:
        a, b = "iso-a-" + "1" * 12, "iso-b-" + "2" * 12
        wait_ready(http, 1)
        run(http, a, "secret = 41\nopen('/mnt/data/mine.txt', 'w').write('a')\nimport sys; sys.modules['numpy'].tag = 'a'")
        wait_ready(http, 1)
        assert run(http, b, "'secret' in globals()") is False
        assert run(http, b, "__import__('os').listdir('/mnt/data')") == "[]"
        # Preloaded modules are each session's own copies, not shared objects.
        assert run(http, b, "hasattr(__import__('sys').modules.get('numpy'), 'tag')") is False
        for ident in (a, b):
            http.delete("/session", params={"api-version": V, "identifier": ident})


def test_preload_imports_without_binding_names(start_pool):
    # `wave` is stdlib and imported by neither IPython, ipykernel nor matplotlib.
    preloaded, plain = start_pool("--preload", "wave,json"), start_pool("--preload", "none")
    with client(preloaded) as http:
        wait_ready(http, 1)
        assert run(http, "pre-1234567890", "'wave' in __import__('sys').modules") is True
        assert run(http, "pre-1234567890", "sorted(n for n in ('wave', 'json', 'importlib') if n in globals())") == "[]"
    with client(plain) as http:
        wait_ready(http, 1)
        assert run(http, "plain-1234567890", "'wave' in __import__('sys').modules") is False


def test_default_preload_is_in_ready_sessions(local_pool, identifier):
    with client(local_pool) as http:
        wait_ready(http, 1)
        names = "[m for m in %r if m not in __import__('sys').modules]" % (list(DEFAULT_PRELOAD),)
        assert run(http, identifier, names) == "[]"


def test_a_preload_that_fails_still_serves_sessions(start_pool):
    pool = start_pool("--preload", "no_such_module_for_the_test")
    with client(pool) as http:
        wait_ready(http, 1)
        assert run(http, "broken-preload-1", "1 + 1") == 2


def test_no_ready_sessions(start_pool):
    pool = start_pool(ready=0)
    with client(pool) as http:
        time.sleep(1.0)
        assert stats(http)["readySessions"] == 0 and stats(http)["startingSessions"] == 0
        assert run(http, "cold-123456789", "1 + 1") == 2
        assert run(http, "cold-123456789", "(len(In), dict(Out))") == "(3, {1: 2})"
        time.sleep(1.0)
        s = stats(http)
        assert (s["readySessions"], s["startingSessions"], s["activeSessions"]) == (0, 0, 1)


def test_preload_option_parsing():
    parse = build_parser().parse_args
    assert parse([]).preload == DEFAULT_PRELOAD
    assert parse(["--preload", "none"]).preload == ()
    assert parse(["--preload", "numpy, scipy.stats"]).preload == ("numpy", "scipy.stats")
    with pytest.raises(SystemExit):
        parse(["--preload", "os; import x"])
