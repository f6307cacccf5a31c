"""The allowlisting DNS resolver a session's netns sees (UDP and TCP, via the redirect).

Answers A queries for allowed names through the upstream, and remembers which IPs it
handed out for which name: the gateway allows a connection only to those. AAAA and other
types for allowed names get an empty answer (the sandbox has no IPv6, and TXT/NULL are the
usual tunnel carriers). Every other name gets NXDOMAIN, not REFUSED: resolvers retry on
REFUSED ("temporary failure"), which turns one denied name into a slow retry loop.
Every query is a `dns.query` event; tunnel shapes raise one `dns.tunnel` event per
domain and reason per window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer, TCPServer, UDPServer

from ..events import Emit
from .policy import Policy, normalize_name

LONG_LABEL = 40  # chars; real host labels are rarely this long, base32/hex payloads are
LONG_NAME = 120
ENTROPY_BITS = 3.6  # bits/char over a label of >= ENTROPY_MIN chars
ENTROPY_MIN = 20
UNIQUE_SUBDOMAINS = 30  # distinct names under one domain within WINDOW_S
TXT_FLOOD = 20  # TXT/NULL/ANY queries within WINDOW_S
WINDOW_S = 60.0
UPSTREAM_TIMEOUT_S = 3.0


def host_upstream(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    """The host's first nameserver (the default upstream)."""
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    except OSError:
        pass
    return ""


def _entropy(label: str) -> float:
    counts = Counter(label)
    return -sum(c / len(label) * math.log2(c / len(label)) for c in counts.values())


def _base_domain(name: str) -> str:
    return ".".join(name.split(".")[-2:])


class TunnelDetector:
    """Flags long/high-entropy labels, many unique subdomains, TXT/NULL floods; rate-limited."""

    def __init__(self, emit: Emit, clock: Any = time.monotonic) -> None:
        self.emit = emit
        self.clock = clock
        self._names: dict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._txt: deque[float] = deque()
        self._flagged: dict[tuple[str, str], float] = {}

    def _flag(self, domain: str, reason: str, name: str, **extra: Any) -> None:
        now = self.clock()
        key = (domain, reason.split(":")[0])
        if now - self._flagged.get(key, -WINDOW_S) < WINDOW_S:
            return
        self._flagged[key] = now
        self.emit("dns.tunnel", {"name": name, "domain": domain, "reason": reason, **extra},
                  severity="alert", action="flag")

    def observe(self, name: str, qtype: str) -> None:
        now = self.clock()
        domain = _base_domain(name)
        labels = name.split(".")[:-2] or [""]
        longest = max(labels, key=len)
        if len(longest) >= LONG_LABEL or len(name) >= LONG_NAME:
            self._flag(domain, f"long label: {len(longest)} chars", name)
        elif len(longest) >= ENTROPY_MIN and _entropy(longest) >= ENTROPY_BITS:
            self._flag(domain, f"high-entropy label: {_entropy(longest):.1f} bits/char", name)
        seen = self._names[domain]
        seen.append((now, name))
        while seen and now - seen[0][0] > WINDOW_S:
            seen.popleft()
        unique = len({n for _, n in seen})
        if unique >= UNIQUE_SUBDOMAINS:
            self._flag(domain, f"many unique subdomains: {unique}", name, unique=unique)
        if qtype in ("TXT", "NULL", "ANY"):
            self._txt.append(now)
            while self._txt and now - self._txt[0] > WINDOW_S:
                self._txt.popleft()
            if len(self._txt) >= TXT_FLOOD:
                self._flag(domain, f"{qtype} flood: {len(self._txt)} queries", name)


class _Handler(DNSHandler):  # type: ignore[misc]
    def setup(self) -> None:
        super().setup()
        if hasattr(self.request, "settimeout"):  # TCP: a silent client must not pin a thread
            self.request.settimeout(5)


class _Quiet(DNSLogger):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-error,-data", prefix=False)


class Resolver:
    """The session's DNS server: `start()` binds UDP and TCP on `address`, `close()` ends."""

    def __init__(
        self, policy: Policy, emit: Emit, *, upstream: str, address: str, dns: bool = True
    ) -> None:
        self.policy = policy
        self.emit = emit
        host, _, port = upstream.partition(":") if upstream.count(":") == 1 else (upstream, "", "")
        self.upstream = (host, int(port or 53))
        self.address = address
        self.enabled = dns
        self.tunnels = TunnelDetector(emit)
        self._lock = threading.Lock()
        self._by_name: dict[str, set[str]] = defaultdict(set)
        self._by_ip: dict[str, set[str]] = defaultdict(set)
        self._servers: list[DNSServer] = []
        self.udp_port = 0
        self.tcp_port = 0

    # The gateway's view of what was handed out.
    def ips_for(self, name: str) -> set[str]:
        with self._lock:
            return set(self._by_name.get(normalize_name(name), ()))

    def names_for(self, ip: str) -> set[str]:
        with self._lock:
            return set(self._by_ip.get(ip, ()))

    def known_ips(self) -> set[str]:
        with self._lock:
            return set(self._by_ip)

    def remember(self, name: str, ips: list[str]) -> None:
        with self._lock:
            for ip in ips:
                self._by_name[normalize_name(name)].add(ip)
                self._by_ip[ip].add(normalize_name(name))

    def start(self) -> None:
        for tcp, server_cls in ((False, UDPServer), (True, TCPServer)):
            server = DNSServer(self, address=self.address, port=0, tcp=tcp, logger=_Quiet(),
                               handler=_Handler, server=server_cls)
            # A short poll interval: shutdown() waits for it, and teardown waits for that.
            threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True,
                             name=f"resolver:{'tcp' if tcp else 'udp'}").start()
            self._servers.append(server)
        self.udp_port = self._servers[0].server.server_address[1]
        self.tcp_port = self._servers[1].server.server_address[1]

    def close(self) -> None:
        stoppers = [threading.Thread(target=s.stop) for s in self._servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(2)
        for server in self._servers:
            server.server.server_close()
        self._servers.clear()

    # dnslib calls this from its server threads.
    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = normalize_name(str(request.q.qname))
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        reply = request.reply()
        answers: list[str] = []
        verdict, reason = "deny", "name not allowed"
        if not self.enabled:
            reply.header.rcode = RCODE.REFUSED
            reason = "dns disabled by profile"
        elif not self.policy.name_allowed(name):
            reply.header.rcode = RCODE.NXDOMAIN
        elif qtype != "A":
            verdict, reason = "allow", f"{qtype} answered empty"
        else:
            try:
                upstream = DNSRecord.parse(
                    request.send(self.upstream[0], self.upstream[1], timeout=UPSTREAM_TIMEOUT_S)
                )
            except Exception as e:  # timeout, bad packet: the client sees SERVFAIL
                reply.header.rcode = RCODE.SERVFAIL
                verdict, reason = "error", f"upstream {self.upstream[0]}: {e or type(e).__name__}"
            else:
                reply.header.rcode = upstream.header.rcode
                for rr in upstream.rr:
                    if rr.rtype in (QTYPE.A, QTYPE.CNAME):
                        reply.add_answer(rr)
                        if rr.rtype == QTYPE.A:
                            answers.append(str(rr.rdata))
                self.remember(name, answers)
                verdict, reason = "allow", "allowed name"
        self.emit("dns.query", {"name": name, "qtype": qtype, "verdict": verdict,
                                "reason": reason, "answers": answers},
                  severity="info" if verdict == "allow" else "warning")
        self.tunnels.observe(name, qtype)
        return reply
