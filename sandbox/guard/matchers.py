"""Matchers: one small frozen dataclass per evidence kind, each saying why it matches.

`Rule` (in `rule`) holds at most one of each and asks the one for the evidence's kind;
`match` returns a short human reason (a snippet around the hit, the target, the
threshold crossed) or None. The text matchers here take already-normalised strings:
variants come from `normalize`, invocation strings from `invocations`. `url_targets`
and `Egress` serve the `egress_denied` qualifier (a URL toward a host the session's
egress policy does not allow).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .evidence import DnsQuery, NetworkAttempt, ProcessExec, ResourceSample, ScanEvent, TamperSignal


def snippet(text: str, match: re.Match[str]) -> str:
    """The match with 20 characters either side, at most 200 in all (a verdict's reason)."""
    start, end = match.span()
    piece = text[max(0, start - 20):min(len(text), end + 20)]
    return piece if len(piece) <= 200 else piece[:197] + "..."


def search_any(patterns: Sequence[re.Pattern[str]], texts: Sequence[str]) -> str | None:
    """The text around the first match of any pattern in any text, or None."""
    for text in texts:
        for pattern in patterns:
            m = pattern.search(text)
            if m:
                return snippet(text, m)
    return None


@dataclass(frozen=True)
class ProcessMatch:
    """Matches an exec by the names it goes by and/or its argv."""

    exe: frozenset[str] = frozenset()
    argv: tuple[re.Pattern[str], ...] = ()

    def match(self, ev: ProcessExec, argv_variants: Sequence[str]) -> str | None:
        why = []
        if self.exe:
            hit = ev.names() & self.exe
            if not hit:
                return None
            why.append("exe " + ",".join(sorted(hit)))
        if self.argv:
            found = search_any(self.argv, argv_variants)
            if found is None:
                return None
            why.append(found)
        return "; ".join(why) or None


@dataclass(frozen=True)
class NetworkMatch:
    """Matches a gateway connection attempt; every given condition must hold."""

    protocol: frozenset[str] = frozenset()
    port: frozenset[int] = frozenset()
    verdict: frozenset[str] = frozenset()
    name: tuple[re.Pattern[str], ...] = ()
    dst: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    reason: tuple[re.Pattern[str], ...] = ()
    payload: tuple[re.Pattern[str], ...] = ()  # over the first bytes sent (latin-1)
    # `network = [{...}, {...}]`: any one alternative (a name OR an IP OR a request shape;
    # the fields of one table all must hold, so one table cannot say "or").
    any_of: tuple[NetworkMatch, ...] = ()

    def match(self, ev: NetworkAttempt) -> str | None:
        for alternative in self.any_of:
            why = alternative.match(ev)
            if why is not None:
                return why
        if self.any_of:
            return None
        if self.protocol and ev.protocol.lower() not in self.protocol:
            return None
        if self.port and ev.dst_port not in self.port:
            return None
        if self.verdict and ev.verdict not in self.verdict:
            return None
        if self.name and search_any(self.name, [ev.name]) is None:
            return None
        if self.dst:
            try:
                ip = ipaddress.ip_address(ev.dst_ip)
            except ValueError:
                return None
            if not any(ip in net for net in self.dst):
                return None
        if self.reason and search_any(self.reason, [ev.reason]) is None:
            return None
        first = ""
        if self.payload:
            first = search_any(self.payload, [ev.payload[:4096].decode("latin-1")]) or ""
            if not first:
                return None
        target = f"{ev.name or ev.dst_ip}:{ev.dst_port}"
        why = f"{ev.protocol or 'unknown'} to {target} ({ev.verdict})"
        return f"{why}: {first}" if first else why


@dataclass(frozen=True)
class ScanMatch:
    """Matches the gateway's scan events of a kind (burst, control_plane) above a size."""

    min_targets: int = 1
    min_ports: int = 0
    kind: frozenset[str] = frozenset()

    def match(self, ev: ScanEvent) -> str | None:
        if self.kind and ev.kind not in self.kind:
            return None
        if ev.distinct_targets < self.min_targets or len(ev.ports) < self.min_ports:
            return None
        what = f"{ev.distinct_targets} targets, {len(ev.ports)} ports in {ev.window_s:g}s"
        if ev.kind != "burst":
            ports = ",".join(str(p) for p in ev.ports[:10])
            what = f"{ev.kind}: {what} ({', '.join(ev.hosts[:3]) or '?'} ports {ports})"
        return what


@dataclass(frozen=True)
class DnsMatch:
    """Matches DNS questions by name, type and resolver verdict."""

    name: tuple[re.Pattern[str], ...] = ()
    qtype: frozenset[str] = frozenset()
    verdict: frozenset[str] = frozenset()

    def match(self, ev: DnsQuery) -> str | None:
        if self.qtype and ev.qtype.upper() not in self.qtype:
            return None
        if self.verdict and ev.verdict not in self.verdict:
            return None
        if self.name and search_any(self.name, [ev.name.rstrip(".").lower()]) is None:
            return None
        return f"{ev.qtype or 'query'} {ev.name} ({ev.verdict or 'seen'})"


SAMPLE_FIELDS = ("cpu_percent", "mem_bytes", "pids", "gpu_util", "gpu_mem_bytes")


@dataclass(frozen=True)
class SampleMatch:
    """Matches resource samples at or over thresholds, held for at least min_window_s."""

    source: frozenset[str] = frozenset()
    thresholds: tuple[tuple[str, float], ...] = ()
    min_window_s: float = 0.0
    reason: frozenset[str] = frozenset()  # a breach's reason (empty: any)

    def match(self, ev: ResourceSample) -> str | None:
        if self.source and ev.source not in self.source:
            return None
        if self.reason and ev.reason not in self.reason:
            return None
        if ev.window_s < self.min_window_s:
            return None
        parts = []
        for name, minimum in self.thresholds:
            value = float(getattr(ev, name))
            if value < minimum:
                return None
            parts.append(f"{name}={value:g}")
        parts.append(f"over {ev.window_s:g}s")
        return f"{ev.source}: " + " ".join(parts)


@dataclass(frozen=True)
class TamperMatch:
    """Matches recorder tamper signals by kind."""

    kind: frozenset[str] = frozenset()

    def match(self, ev: TamperSignal) -> str | None:
        if self.kind and ev.kind not in self.kind:
            return None
        return ev.kind


Egress = Callable[[str, int], bool]  # (host, port) -> does the session's egress allow it
_URL = re.compile(r"(?i)\b(https?|ftps?|wss?)://(?:[^\s/@\u2423]*@)?"
                  r"(\[[0-9a-f:.]+\]|[^\s/:?#@\u2423'\"]+)(?::(\d{1,5}))?")
_SCHEME_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 990, "ws": 80, "wss": 443}


def url_targets(text: str) -> list[tuple[str, int]]:
    """(host, port) of every URL with a scheme in `text` (a bare `host/path` has none)."""
    out = []
    for m in _URL.finditer(text):
        port = int(m.group(3)) if m.group(3) else _SCHEME_PORTS[m.group(1).lower()]
        if 0 < port < 65536:
            out.append((m.group(2).strip("[]").rstrip(".").lower(), port))
    return out

