"""``azure-sessions-kernel serve`` as a process: token file, HTTPS, shutdown, discovery leases."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from azure_sessions_kernel.client import acquire_local_pool_sync

from .conftest import REPO

pytestmark = pytest.mark.slow

V = "2025-10-02-preview"


def _serve(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "azure_sessions_kernel", "serve", "--port", "0", "--ready-sessions", "0", *args],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Isolation:"):
            break
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(30)


def test_generated_token_is_private_and_required(tmp_path):
    token_file = tmp_path / "token"
    proc, banner = _serve("--token-file", str(token_file))
    try:
        endpoint = banner[0].split(": ", 1)[1]
        assert endpoint.startswith("http://127.0.0.1:")
        assert str(token_file) in banner[1] and "Isolation:" in banner[-1]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32 and token not in "\n".join(banner)
        q = {"api-version": V}
        assert httpx.get(endpoint + "/metadata", params=q).status_code == 401
        assert httpx.get(endpoint + "/metadata", params=q, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        assert _stop(proc) == 0
    assert not token_file.exists(), "the generated token file is removed on exit"


def test_https_with_certificate(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    proc, banner = _serve("--token", "tls-token", "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem"))
    try:
        endpoint = banner[0].split(": ", 1)[1]
        assert endpoint.startswith("https://")
        r = httpx.get(endpoint + "/metadata", params={"api-version": V}, headers={"Authorization": "Bearer tls-token"}, verify=False)
        assert r.status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):
            httpx.get(endpoint.replace("https", "http") + "/metadata")  # plain HTTP is not served
    finally:
        assert _stop(proc) == 0


def test_shutdown_leaves_no_session_process(start_pool):
    pool = start_pool()
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=60) as http:
        pids = []
        for ident in ("shut-a", "shut-b"):
            code = "import os, subprocess\nsubprocess.Popen('setsid sleep 1000 &', shell=True)\nos.getpid()"
            r = http.post("/executions", params={"api-version": V, "identifier": ident}, json={"code": code})
            assert r.status_code == 200 and r.json()["status"] == "Succeeded", r.text
        children = _descendants(pool.process.pid)
        assert children, "sessions run as children of the pool"
    assert pool.stop() == 0
    time.sleep(0.5)
    alive = [p for p in children if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
    assert alive == [], f"processes left after shutdown: {alive}"


def test_leases_start_reuse_and_end_the_shared_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_SESSIONS_KERNEL_RUNTIME_DIR", str(tmp_path))
    first = acquire_local_pool_sync(["--ready-sessions", "0"])
    try:
        assert first.started_here and "token" not in repr(first)
        second = acquire_local_pool_sync()
        assert not second.started_here and second.endpoint == first.endpoint and second.pid == first.pid
        info = json.loads((tmp_path / "local-pool.json").read_text())
        assert info["pid"] == first.pid and stat.S_IMODE((tmp_path / "local-pool.json").stat().st_mode) == 0o600
        first.release()
        time.sleep(3.5)
        assert _running(first.pid), "the pool stays while a lease is held"
    finally:
        second.release()
    deadline = time.monotonic() + 20
    while _running(first.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(first.pid), "the pool exits once the last lease is released"


def test_lease_of_a_killed_holder_is_released(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_SESSIONS_KERNEL_RUNTIME_DIR", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from azure_sessions_kernel.client import acquire_local_pool_sync\n"
        "lease = acquire_local_pool_sync(['--ready-sessions', '0']); print(lease.pid, flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    pool_pid = int(holder.stdout.readline())
    holder.kill()  # no release(): the pool must notice the dead pid itself
    holder.wait()
    deadline = time.monotonic() + 20
    while _running(pool_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pool_pid)


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _descendants(root: int) -> list[int]:
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


def test_insecure_mode_warns_loudly_and_says_so_in_metadata():
    proc = subprocess.Popen([sys.executable, "-m", "azure_sessions_kernel", "serve", "--port", "0", "--token", "tok",
                             "--ready-sessions", "0", "--insecure-no-sandbox"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        endpoint = proc.stdout.readline().split(": ", 1)[1].strip()
        isolation_line = [proc.stdout.readline() for _ in range(2)][-1]
        assert isolation_line.startswith("Isolation: none")
        m = httpx.get(endpoint + "/metadata", params={"api-version": V}, headers={"Authorization": "Bearer tok"}).json()
        assert m["localPool"]["isolation"]["level"] == "none"
    finally:
        assert _stop(proc) == 0
    warning = proc.stderr.read()
    assert "WARNING: --insecure-no-sandbox" in warning and "full access to this machine" in warning


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's memory limit is a cgroup only as root")
def test_the_pool_refuses_limits_that_let_files_oom_kill_a_session():
    r = subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "serve", "--memory", "512M"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "--tmp-size 256 MiB + /dev/shm 64 MiB are memory" in r.stderr and "--memory (512 MiB)" in r.stderr
    assert "--insecure-no-sandbox" not in r.stderr


def test_without_a_working_sandbox_the_pool_refuses_to_start():
    r = subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "serve", "--bwrap", "/nonexistent/bwrap"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "bubblewrap" in r.stderr and "--insecure-no-sandbox" in r.stderr
