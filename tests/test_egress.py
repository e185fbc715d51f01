"""The egress allow-list and its proxy, on the host (no sandbox): the grammar, the decisions, the relay.

The attacks from inside a sandbox are in ``tests/test_attacks.py`` (``test_e*``);
``%pip`` through a pool with ``--egress pypi`` is in ``tests/kernel/test_egress.py``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_sessions_kernel._runtime import EgressListError, parse_egress
from azure_sessions_kernel.pool.egress import EgressPolicy, EgressProxy, host_addresses
from azure_sessions_kernel.pool.server import build_parser

from .conftest import load_runner

# --------------------------------------------------------------------------
# The list
# --------------------------------------------------------------------------


def test_entries_are_normalised_sorted_and_unique() -> None:
    assert parse_egress("PyPI, Example.COM.:8443,*.Foo.org,pypi") == ("*.foo.org", "example.com:8443", "pypi")
    assert parse_egress("") == parse_egress("none") == parse_egress(" , ") == ()
    assert parse_egress("a.example.,A.example") == ("a.example",)  # one list, one shared pool


@pytest.mark.parametrize("entry, says", [
    ("10.0.0.1", "is an IP address"),
    ("[::1]", "is an IP address"),
    ("2130706433", "is an IP address"),  # what resolvers read as 127.0.0.1
    ("0x7f.1", "is an IP address"),
    ("127.1", "is an IP address"),
    ("a_b.example", "is not a host name"),
    ("exa mple.com", "is not a host name"),
    ("-x.example", "is not a host name"),
    ("example.com:0", "the port must be a number from 1 to 65535"),
    ("example.com:99999", "the port must be a number from 1 to 65535"),
    ("example.com:https", "the port must be a number"),
    ("*", "egress to every host is not offered"),
    ("pypi,none", "'none' cannot be combined"),
])
def test_bad_entries_are_refused_naming_the_entry(entry, says) -> None:
    with pytest.raises(EgressListError, match=says):
        parse_egress(entry)


def test_serve_refuses_a_bad_list_before_starting(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--egress", "pypi,169.254.169.254"])
    assert exit_.value.code == 2
    assert "'169.254.169.254' is an IP address" in capsys.readouterr().err


# --------------------------------------------------------------------------
# The decisions
# --------------------------------------------------------------------------


def test_names_ports_aliases_and_wildcards() -> None:
    policy = EgressPolicy.from_text("pypi,example.com,api.example.net:8443,*.corp.example")
    assert policy.refuse_name("pypi.org", 443) is None
    assert policy.refuse_name("FILES.pythonhosted.org.", 443) is None
    assert policy.refuse_name("pypi.org", 80) == "port 80 of pypi.org is not on this pool's egress allow-list"  # the alias is HTTPS only
    assert policy.refuse_name("example.com", 80) is None and policy.refuse_name("example.com", 443) is None
    assert "port 22 of example.com" in policy.refuse_name("example.com", 22)
    assert policy.refuse_name("api.example.net", 8443) is None and policy.refuse_name("api.example.net", 443) is not None
    assert policy.refuse_name("git.corp.example", 443) is None
    assert policy.refuse_name("corp.example", 443) == "corp.example is not on this pool's egress allow-list"
    assert policy.refuse_name("evilcorp.example", 443) is not None
    assert policy.refuse_name("example.com.evil.test", 443) is not None
    for literal in ("1.1.1.1", "::1", "169.254.169.254", "2130706433", "0x7f.0.0.1"):
        assert "is an IP address" in policy.refuse_name(literal, 443)
    assert "files.pythonhosted.org:443" in policy.hosts and "example.com:80" in policy.hosts


def test_addresses_of_this_machine_loopback_and_link_local_are_refused() -> None:
    policy = EgressPolicy.from_text("example.com", pool_ports=[8000])
    refused = {
        "127.0.0.1": "a loopback address", "127.9.9.9": "a loopback address", "::1": "a loopback address",
        "::ffff:127.0.0.1": "a loopback address", "169.254.169.254": "link-local", "fe80::1": "link-local",
        "0.0.0.0": "not a host address", "224.0.0.1": "not a host address",
    }
    for address, why in refused.items():
        assert why in policy.refuse_address("example.com", address, 443), address
    own = next(a for a in host_addresses() if not a.is_loopback and a.version == 4)
    assert policy.refuse_address("example.com", str(own), 443) == f"example.com resolves to {own}, this machine"
    assert policy.refuse_address("example.com", str(own), 8000) == f"example.com resolves to {own}, this machine (the pool's own port)"
    # Private and reserved ranges are other machines: on this network the package index resolves into one.
    for address in ("203.0.113.80", "10.1.2.3", "192.168.7.7", "100.64.0.9", "240.0.0.1", "2001:db8::5"):
        assert ipaddress.ip_address(address) not in host_addresses()
        assert policy.refuse_address("example.com", address, 443) is None, address


def test_host_addresses_cover_every_interface() -> None:
    addresses = host_addresses()
    assert ipaddress.ip_address("127.0.0.1") in addresses
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent: only the route is looked up
        except OSError:
            pytest.skip("this host has no IPv4 route")
        assert ipaddress.ip_address(probe.getsockname()[0]) in addresses


# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


class Upstream:
    """A server on loopback that records what reaches it and answers ``pong``."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                self.received.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong" if data.startswith(b"GET") else b"pong:" + data)
                time.sleep(0.05)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.sock.close()


@pytest.fixture
def proxy(tmp_path, upstream, monkeypatch) -> Iterator[tuple[EgressProxy, Path, Path]]:
    policy = EgressPolicy.from_text(f"localhost:{upstream.port},example.invalid")
    # Loopback is refused to sessions; here it stands in for a server elsewhere.
    monkeypatch.setattr(EgressPolicy, "refuse_address", lambda self, host, address, port: None)
    log_file = tmp_path / "egress.jsonl"
    proxy = EgressProxy(policy, log_file=log_file)
    path = tmp_path / "egress.sock"
    proxy.listen(path, lambda: "slot 7 session abc…")
    yield proxy, path, log_file
    proxy.close()


def ask(path: Path, request: bytes) -> tuple[socket.socket, bytes]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    s.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return s, head


def log_lines(log_file: Path, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"expected {count} log lines: {lines}")


def test_connect_tunnels_to_an_allowed_name_and_logs_it(proxy, upstream) -> None:
    _, path, log_file = proxy
    assert oct(path.stat().st_mode & 0o777) == "0o666"
    s, head = ask(path, f"CONNECT localhost:{upstream.port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
    s.sendall(b"hello")
    assert s.recv(100) == b"pong:hello"
    s.close()
    [line] = log_lines(log_file, 1)
    assert line["session"] == "slot 7 session abc…" and line["decision"] == "allowed"
    assert (line["host"], line["port"], line["address"], line["bytes_out"], line["bytes_in"]) == ("localhost", upstream.port, "127.0.0.1", 5, 10)


def test_plain_http_is_forwarded_in_origin_form_without_proxy_headers(proxy, upstream) -> None:
    _, path, log_file = proxy
    s, head = ask(path, f"GET http://localhost:{upstream.port}/simple/x/?q=1 HTTP/1.1\r\nHost: localhost\r\n"
                        "Proxy-Authorization: Basic c2VjcmV0\r\nAccept: */*\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200 OK")
    s.close()
    assert upstream.received == [b"GET /simple/x/?q=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"]
    assert log_lines(log_file, 1)[0]["method"] == "GET"


@pytest.mark.parametrize("request_, status, says", [
    (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", 403, "example.com is not on this pool's egress allow-list"),
    (b"CONNECT localhost:1 HTTP/1.1\r\n\r\n", 403, "port 1 of localhost is not on this pool's egress allow-list"),
    (b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n", 403, "127.0.0.1 is an IP address"),
    (b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n", 403, "::1 is an IP address"),
    (b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n", 403, "169.254.169.254 is an IP address"),
    (b"GET https://example.invalid/ HTTP/1.1\r\n\r\n", 400, "https:// goes through CONNECT"),
    (b"GET /relative HTTP/1.1\r\n\r\n", 400, "needs an absolute http:// URL"),
    (b"CONNECT example.invalid HTTP/1.1\r\n\r\n", 400, "CONNECT needs host:port"),
    (b"\xff\xfe garbage\r\n\r\n", 400, "not an HTTP request line"),
    (b"CONNECT example.invalid:443 HTTP/1.1\r\n\r\n", 502, "cannot resolve example.invalid"),
])
def test_refusals_say_why_in_the_status_line_and_are_logged(proxy, request_, status, says) -> None:
    _, path, log_file = proxy
    s, head = ask(path, request_)
    s.close()
    status_line = head.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith(f"HTTP/1.1 {status} ") and says in status_line, status_line
    [line] = log_lines(log_file, 1)
    assert line["decision"] == "refused" and says in line["reason"]


def test_an_oversized_head_is_refused_without_harm(proxy, upstream) -> None:
    _, path, log_file = proxy
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    with pytest.raises(OSError):
        for _ in range(64):
            s.sendall(b"X-Padding: " + b"a" * 4096 + b"\r\n")
        s.recv(10)
        raise OSError("the proxy kept the connection")
    s.close()
    assert "bad or incomplete request" in log_lines(log_file, 1)[0]["reason"]
    s, head = ask(path, f"CONNECT localhost:{upstream.port} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200")
    s.close()


def test_closing_a_listener_cuts_its_tunnels_and_removes_the_socket(proxy, upstream) -> None:
    p, path, log_file = proxy
    s, head = ask(path, f"CONNECT localhost:{upstream.port} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    p.close_listener(path)
    assert s.recv(100) in (b"", b"pong:")  # the tunnel ends (EOF), promptly
    assert time.monotonic() - started < 5
    assert not path.exists()
    assert log_lines(log_file, 1)[0]["decision"] == "allowed"


def test_serve_refuses_egress_without_a_sandbox() -> None:
    done = subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "serve", "--insecure-no-sandbox", "--egress", "pypi"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--egress needs the sandbox: with --insecure-no-sandbox sessions already have this machine's whole network" in done.stderr


def test_connections_beyond_the_cap_are_refused_at_once(proxy) -> None:
    from azure_sessions_kernel.pool.egress.proxy import MAX_TUNNELS

    _, path, log_file = proxy
    held = []
    for _ in range(MAX_TUNNELS):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        held.append(s)
    time.sleep(0.2)  # let the proxy accept them all
    s, head = ask(path, b"CONNECT localhost:1 HTTP/1.1\r\n\r\n")
    s.close()
    assert head.startswith(b"HTTP/1.1 429 too many connections through the egress proxy at once (64 per session)")
    assert log_lines(log_file, 1)[0]["reason"] == "too many connections"
    for s in held:
        s.close()


# --------------------------------------------------------------------------
# The relay inside the session (127.0.0.1:3128 to the proxy's socket)
# --------------------------------------------------------------------------


@pytest.fixture
def relay(tmp_path) -> Iterator[tuple[object, Path, int]]:
    """The session's relay on an ephemeral loopback port, to a proxy socket path the test provides."""
    import asyncio

    runner = load_runner()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(runner.EGRESS_RELAY_BACKLOG)
    path = tmp_path / "proxy.sock"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        relaying = asyncio.ensure_future(runner._relay_egress(listener, str(path)))
        await stop.wait()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
        await asyncio.sleep(0.05)  # let the connections' tasks see their cancellation

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    yield runner, path, listener.getsockname()[1]
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    loop.close()
    listener.close()


def first_line(port: int, timeout: float = 30) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        data = b""
        while b"\r\n" not in data and (chunk := s.recv(4096)):
            data += chunk
        return data.split(b"\r\n")[0].decode()


def test_a_burst_waits_for_room_in_the_proxy_queue_instead_of_being_dropped(relay) -> None:
    # A proxy whose loop is busy: its queue holds 2 and it accepts nothing for a second. Connecting to a full Unix
    # queue fails at once (EAGAIN), and the relay used to close such a connection without a word.
    _, path, port = relay
    proxy = socket.socket(socket.AF_UNIX)
    proxy.bind(str(path))
    proxy.listen(1)

    def serve_late() -> None:
        time.sleep(1)
        while True:
            try:
                conn, _ = proxy.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 429 too many\r\n\r\n")
            conn.close()

    threading.Thread(target=serve_late, daemon=True).start()
    answers: list[str] = []
    clients = [threading.Thread(target=lambda: answers.append(first_line(port))) for _ in range(30)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    proxy.close()
    assert answers == ["HTTP/1.1 429 too many"] * 30


def test_a_proxy_that_is_gone_or_full_is_named_in_the_status_line(relay, monkeypatch) -> None:
    runner, path, port = relay
    assert first_line(port) == "HTTP/1.1 503 the pool's egress proxy is not answering (No such file or directory)"
    proxy = socket.socket(socket.AF_UNIX)
    proxy.bind(str(path))
    proxy.listen(0)  # never accepts: one connection fills the queue
    monkeypatch.setattr(runner, "EGRESS_CONNECT_PATIENCE", 0.5)
    fillers = []
    try:
        while True:  # fill the queue until a connect would block
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            s.connect(str(path))
            fillers.append(s)
    except BlockingIOError:
        s.close()
    started = time.monotonic()
    assert first_line(port) == "HTTP/1.1 503 the pool's egress proxy is busy: no room in its queue for 0.5 s"
    assert time.monotonic() - started < 5
    for s in fillers:
        s.close()
    proxy.close()
