"""Allow and deny entries: the profile's `host:port[,port]` strings parsed into `Rule`s.

Pure parsing and matching of one entry at a time (`parse_rule`, `name_matches`,
`default_protocols`); `policy.Policy` combines the entries into the one decision. A bad
entry raises ValueError naming the entry and what a good one looks like.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTOCOLS = frozenset({"tls", "http", "ssh"})
"""What an allow entry may name; the sniffer's other verdicts are never allowed."""


def default_protocols(port: int) -> frozenset[str]:
    """What a port implies when the profile does not say: 443 tls, 80 http, 22 ssh."""
    return {443: frozenset({"tls"}), 80: frozenset({"http"}), 22: frozenset({"ssh"})}.get(
        port, frozenset({"tls", "http"})
    )


@dataclass(frozen=True)
class Rule:
    """One parsed entry: a host pattern or an IP network, ports (empty = any), protocols."""

    text: str
    pattern: str | None = None
    network: IPNet | None = None
    ports: frozenset[int] = frozenset()
    protocols: Mapping[int, frozenset[str]] = field(default_factory=dict)
    any_protocols: frozenset[str] = frozenset()

    def port_ok(self, port: int) -> bool:
        return not self.ports or port in self.ports

    def protocols_for(self, port: int) -> frozenset[str]:
        return self.protocols.get(port, self.any_protocols)


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_matches(pattern: str, name: str) -> bool:
    """`*.example.org` matches any subdomain (any depth) but not the apex; others exactly."""
    name = normalize_name(name)
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def _parse_ports(text: str, entry: str) -> frozenset[int]:
    ports = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise ValueError(f"network entry {entry!r}: bad port {part!r}")
        ports.add(int(part))
    return frozenset(ports)


def _split(entry: str) -> tuple[str, str | None]:
    """'host:443,22' -> ('host', '443,22'); '[2001:db8::1]:443' and bare IPv6 handled."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if entry.count(":") > 1:  # bare IPv6 address or network, no port
        return entry, None
    host, sep, ports = entry.partition(":")
    return host, ports if sep else None


def _as_network(host: str) -> IPNet | None:
    try:
        return ipaddress.ip_network(host, strict=False)
    except ValueError:
        return None


def _check_pattern(host: str, entry: str) -> str:
    host = normalize_name(host)
    label_chars = set("abcdefghijklmnopqrstuvwxyz0123456789-.")
    bare = host[2:] if host.startswith("*.") else host
    if not bare or not set(bare) <= label_chars or "*" in bare or ".." in bare:
        raise ValueError(f"network entry {entry!r}: {host!r} is not a host name or *.domain")
    return host


def parse_rule(
    entry: str, protocols: Mapping[str, Iterable[str]] | None = None, *, need_port: bool = True
) -> Rule:
    """Parse one allow (need_port) or deny entry; `protocols` is NetworkSection.protocols."""
    host, port_text = _split(entry)
    if port_text is None and need_port:
        raise ValueError(f"network allow entry {entry!r} needs a port, e.g. {host}:443")
    ports = _parse_ports(port_text, entry) if port_text is not None else frozenset()
    net = _as_network(host)
    pattern = None if net is not None else _check_pattern(host, entry)
    chosen: frozenset[str] | None = None
    for key in (entry.strip(), host, pattern or host):
        if protocols and key in protocols:
            chosen = frozenset(p.lower() for p in protocols[key])
            if not chosen <= PROTOCOLS:
                bad = ", ".join(sorted(chosen - PROTOCOLS))
                raise ValueError(f"network protocols for {key!r}: unknown {bad} (tls, http, ssh)")
            break
    per_port = {p: chosen if chosen is not None else default_protocols(p) for p in ports}
    return Rule(
        text=entry, pattern=pattern, network=net, ports=ports, protocols=per_port,
        any_protocols=chosen if chosen is not None else PROTOCOLS,
    )


def in_any(ip: IPAddr, nets: Iterable[IPNet]) -> bool:
    """`ip` is in one of `nets` (of its own IP version: v4 in a v6 net raises otherwise)."""
    return any(ip.version == n.version and ip in n for n in nets)
