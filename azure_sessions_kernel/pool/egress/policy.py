"""What a session may reach through the egress proxy: host names on an allow-list, never this machine.

:class:`EgressPolicy` is built once by ``serve --egress`` and consulted by
:mod:`.proxy` twice per connection: :meth:`EgressPolicy.refuse_name` before
anything is resolved (IP literals and names not on the list end there), then
:meth:`EgressPolicy.refuse_address` for every address the name resolves to,
so a listed name that points at loopback, link-local (cloud metadata at
169.254.169.254), one of the host's own addresses or the pool's port is
refused too (DNS rebinding). Private and reserved ranges are not refused: on
many networks, this one included, an allowed name resolves into them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..._runtime import EGRESS_ALIASES, looks_like_address, parse_egress, parse_egress_entry

__all__ = ["EgressPolicy", "host_addresses"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Ports a bare host name allows: HTTPS and HTTP.
DEFAULT_PORTS = (443, 80)
_HOST_ADDRESSES_TTL = 5.0


@dataclasses.dataclass(frozen=True)
class Rule:
    """One allow-list entry: ``host`` exactly, or any subdomain of ``suffix`` (``*.suffix``)."""

    host: str
    ports: tuple[int, ...]

    def matches(self, host: str, port: int) -> bool:
        if port not in self.ports:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


@dataclasses.dataclass(frozen=True)
class EgressPolicy:
    """The allow-list of one pool, and the addresses it never lets a session reach.

    ``entries`` is the list as given (aliases unexpanded, as
    :func:`~azure_sessions_kernel._runtime.parse_egress` returns it);
    ``pool_ports`` are the ports the pool itself listens on.
    """

    entries: tuple[str, ...]
    rules: tuple[Rule, ...]
    pool_ports: frozenset[int] = frozenset()

    @classmethod
    def from_text(cls, text: str | Iterable[str], pool_ports: Iterable[int] = ()) -> EgressPolicy:
        """Parse ``serve --egress`` (raises ``EgressListError`` naming a bad entry)."""
        entries = parse_egress(text if isinstance(text, str) else ",".join(text))
        rules = []
        for entry in entries:
            for item in EGRESS_ALIASES.get(entry, (entry,)):
                host, port = parse_egress_entry(item)
                rules.append(Rule(host, (port,) if port else DEFAULT_PORTS))
        return cls(entries, tuple(rules), frozenset(pool_ports))

    @property
    def hosts(self) -> list[str]:
        """Every allowed ``host:port``, aliases expanded (for the banner and ``/metadata``)."""
        return [f"{r.host}:{p}" for r in self.rules for p in r.ports]

    def refuse_name(self, host: str, port: int) -> str | None:
        """Why a connection to ``host:port`` is refused before resolving it, or ``None``."""
        if looks_like_address(host) or ":" in host:
            return f"{host} is an IP address; the egress proxy connects to allowed host names only"
        name = host.lower().rstrip(".")
        if not any(rule.matches(name, port) for rule in self.rules):
            if any(rule.matches(name, p) for rule in self.rules for p in rule.ports):
                return f"port {port} of {name} is not on this pool's egress allow-list"
            return f"{name} is not on this pool's egress allow-list"
        return None

    def refuse_address(self, host: str, address: str, port: int) -> str | None:
        """Why ``host`` may not be reached at ``address``, or ``None``; called for every address it resolves to."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        what = None
        if ip.is_loopback:
            what = "a loopback address"
        elif ip.is_link_local:
            what = "a link-local address (cloud metadata lives there)"
        elif ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            what = "not a host address"
        elif ip in host_addresses():
            what = "this machine" + (" (the pool's own port)" if port in self.pool_ports else "")
        return f"{host} resolves to {ip}, {what}" if what else None


class _HostAddresses:
    """The host's own addresses (every interface, every namespace the pool sees), re-read every few seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -_HOST_ADDRESSES_TTL
        self._addresses: frozenset[IPAddress] = frozenset()

    def __call__(self) -> frozenset[IPAddress]:
        with self._lock:
            if time.monotonic() - self._at > _HOST_ADDRESSES_TTL:
                self._addresses = frozenset(_read_host_addresses())
                self._at = time.monotonic()
            return self._addresses


def _read_host_addresses() -> set[IPAddress]:
    found: set[IPAddress] = set()
    # IPv4: the kernel's local routing table lists every local address as "/32 host LOCAL".
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL":
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv4Address(previous.split()[-1]))
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    except OSError:
        pass
    # What the host's name resolves to counts as the host too.
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    except OSError:
        pass
    return found


host_addresses = _HostAddresses()
