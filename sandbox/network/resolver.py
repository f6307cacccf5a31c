"""The allowlisting DNS resolver a session's netns sees (UDP and TCP, via the redirect).

Answers A queries for allowed names (allowlist: names an allow entry matches; guarded:
any name no deny entry denies) through the upstream, and remembers which IPs it handed
out for which name: in allowlist mode the gateway allows a connection only to those. An
answer address the policy denies (metadata/link-local, loopback, LAN, this host, a deny
CIDR: a public name rebound onto the inside) is dropped from the reply and recorded in
the query's `refused`; when nothing is left the reply is NXDOMAIN. AAAA and other
types for allowed names get an empty answer (the sandbox has no IPv6, and TXT/NULL are the
usual tunnel carriers). Every other name gets NXDOMAIN, not REFUSED: resolvers retry on
REFUSED ("temporary failure"), which turns one denied name into a slow retry loop.
Every query is a `dns.query` event; tunnel shapes (long, high-entropy, or hex/base32-
shaped names even when short) raise one `dns.tunnel` event per domain and reason per
window.

nftables redirects DNS to *any* address here, so a query the sandbox sent to another
resolver (`dig @198.51.100.9`, a hard-coded 8.8.8.8) is answered by this one, and is
surfaced: its original destination comes from conntrack (UDP) or SO_ORIGINAL_DST (TCP),
and the first query to each foreign resolver per window is a `net.attempt` with protocol
`dns` (the guard flags it). This resolver's address and the host's nameservers (a jail
may see the host's resolv.conf) are the sandbox's own, not foreign.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import threading
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer, TCPServer, UDPServer

from ..events import Emit
from .entries import normalize_name
from .policy import Policy
from .relay import original_dst

LONG_LABEL = 40  # chars; real host labels are rarely this long, base32/hex payloads are
LONG_NAME = 120
ENTROPY_BITS = 3.6  # bits/char over a label of >= ENTROPY_MIN chars
ENTROPY_MIN = 20
UNIQUE_SUBDOMAINS = 30  # distinct names under one domain within WINDOW_S
TXT_FLOOD = 20  # TXT/NULL/ANY queries within WINDOW_S
WINDOW_S = 60.0
UPSTREAM_TIMEOUT_S = 3.0
# Encoded data in short names: the labels left of the base domain, dots removed.
HEX_MIN = 12  # chars of [0-9a-f] with both digits and letters: 6+ bytes of hex
BASE32_MIN = 16  # chars of [a-z2-7] with digits: 10+ bytes of base32
MIXED_MIN = 12  # letters and digits interleaved (base36/base64-ish), no hyphens
CONNTRACK = Path("/proc/self/net/nf_conntrack")
CONNTRACK_MAX_BYTES = 8 * 1024 * 1024  # read at most this much of the table per lookup
CONNTRACK_LOOKUPS_PER_S = 20  # beyond this many UDP queries a second, skip the lookup


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


def host_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> set[str]:
    """Every nameserver the host's resolv.conf names (what a jail that sees the host's
    /etc/resolv.conf sends its queries to, before the redirect)."""
    out: set[str] = set()
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                out.add(parts[1])
    except OSError:
        pass
    return out


def _entropy(label: str) -> float:
    counts = Counter(label)
    return -sum(c / len(label) * math.log2(c / len(label)) for c in counts.values())


def _base_domain(name: str) -> str:
    return ".".join(name.split(".")[-2:])


_HEX = re.compile(r"[0-9a-f]+")
_B32 = re.compile(r"[a-z2-7]+")
_ALNUM = re.compile(r"[a-z0-9]+")


def encoded_shape(name: str) -> str | None:
    """Why the subdomain part of `name` looks like encoded data, or None.

    Short exfiltration names (`4a6f686e2e446f65.x.test`, `mzxw6ytboi.x.test` split over
    labels) are neither long nor high-entropy per label; their alphabet gives them away.
    """
    sub = "".join(name.lower().rstrip(".").split(".")[:-2])
    digits = sum(c.isdigit() for c in sub)
    letters = sum(c.isalpha() for c in sub)
    if len(sub) >= HEX_MIN and _HEX.fullmatch(sub) and digits >= 2 and letters >= 2:
        return f"hex-encoded name: {len(sub)} chars"
    if len(sub) >= BASE32_MIN and _B32.fullmatch(sub) and digits >= 2:
        return f"base32-encoded name: {len(sub)} chars"
    if len(sub) >= MIXED_MIN and _ALNUM.fullmatch(sub) and digits >= 3 and letters >= 3:
        switches = sum(1 for a, b in itertools.pairwise(sub)
                       if a.isdigit() != b.isdigit())
        if switches >= len(sub) // 3 and _entropy(sub) >= 3.0:
            return f"encoded-looking name: {len(sub)} chars, {switches} letter/digit switches"
    return None


def conntrack_original_dst(client: tuple[str, int], local: tuple[str, int],
                           table: Path = CONNTRACK) -> tuple[str, int] | None:
    """Where a redirected UDP packet from `client` was going before nftables sent it to
    `local`: the original tuple of the conntrack entry whose reply comes from `local`.
    None when conntrack is not readable or holds no such entry."""
    want_reply = f"src={local[0]} dst={client[0]} sport={local[1]} dport={client[1]} "
    try:
        with table.open("r", encoding="ascii", errors="replace") as f:
            read = 0
            for line in f:
                read += len(line)
                if read > CONNTRACK_MAX_BYTES:
                    return None
                if " udp " not in line or want_reply not in line:
                    continue
                # The original tuple comes first, the reply tuple (ours) after it.
                orig = dict(kv.split("=", 1) for kv in line.split(want_reply)[0].split()
                            if "=" in kv)
                if orig.get("src") == client[0] and orig.get("sport") == str(client[1]):
                    return orig["dst"], int(orig["dport"])
    except (OSError, ValueError, KeyError):
        return None
    return None


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
        else:
            shape = encoded_shape(name)
            if shape:
                self._flag(domain, shape, name)
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
        self._foreign_seen: dict[tuple[str, int], float] = {}
        # Where the sandbox's own lookups go: this resolver, or (when the jail sees the
        # host's resolv.conf) the host's nameservers; both end up here. Anything else is
        # a resolver the agent picked.
        self.own = {(address, 53), *((ns, 53) for ns in host_nameservers())}
        self._lookups: deque[float] = deque()

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

    def asked_resolver(self, handler: Any) -> tuple[str, int] | None:
        """The address the client sent this query to, when nftables redirected it here."""
        if getattr(handler, "protocol", "udp") == "tcp":
            with contextlib.suppress(OSError):
                return original_dst(handler.request)
            return None
        client = getattr(handler, "client_address", None)
        if not client:
            return None
        # Bounded cost: a query flood must not turn into a conntrack-table reading flood
        # (the flood itself is what the tunnel detector reports).
        now = time.monotonic()
        with self._lock:
            while self._lookups and now - self._lookups[0] > 1.0:
                self._lookups.popleft()
            if len(self._lookups) >= CONNTRACK_LOOKUPS_PER_S:
                return None
            self._lookups.append(now)
        return conntrack_original_dst((str(client[0]), int(client[1])),
                                      (self.address, self.udp_port))

    def _check_foreign(self, handler: Any, name: str, qtype: str) -> None:
        asked = self.asked_resolver(handler)
        if asked is None or asked in self.own:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._foreign_seen.get(asked, -WINDOW_S) < WINDOW_S:
                return
            self._foreign_seen[asked] = now
        ip, port = asked
        self.emit("net.attempt", {
            "dst_ip": ip, "dst_port": port, "protocol": "dns", "name": name, "qtype": qtype,
            "transport": getattr(handler, "protocol", "udp"), "verdict": "deny",
            "reason": f"DNS query to {ip}:{port}, not the sandbox resolver: redirected and "
                      f"answered by the sandbox resolver (once per {WINDOW_S:g}s per resolver)",
        }, severity="warning", action="block")

    def _answer(self, reply: DNSRecord, upstream: DNSRecord, name: str, answers: list[str],
                refused: list[str]) -> tuple[str, str]:
        """Copy the upstream's A/CNAME records, minus addresses the policy denies."""
        kept = []
        for rr in upstream.rr:
            if rr.rtype == QTYPE.A:
                why = self.policy.answer_denied(str(rr.rdata))
                if why:
                    refused.append(f"{rr.rdata}: {why}")
                    continue
                answers.append(str(rr.rdata))
            if rr.rtype in (QTYPE.A, QTYPE.CNAME):
                kept.append(rr)
        if refused and not answers:
            # Security choice: a name that points only inside (169.254.169.254, 10.x) gets
            # nothing; NXDOMAIN, as for a denied name, so that clients do not retry.
            reply.header.rcode = RCODE.NXDOMAIN
            return "deny", f"answer denied: {'; '.join(refused)}"
        reply.header.rcode = upstream.header.rcode
        for rr in kept:
            reply.add_answer(rr)
        self.remember(name, answers)
        if refused:
            return "allow", f"allowed name; dropped {'; '.join(refused)}"
        return "allow", "allowed name"

    # dnslib calls this from its server threads.
    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = normalize_name(str(request.q.qname))
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        try:
            self._check_foreign(handler, name, qtype)
        except Exception as e:  # surfacing must never break answering
            self.emit("session.warning", {"reason": f"resolver: foreign check failed: {e}"},
                      severity="warning")
        reply = request.reply()
        answers: list[str] = []
        refused: list[str] = []
        verdict, reason = "deny", ("name denied by a deny entry" if self.policy.guarded
                                   else "name not allowed")
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
                verdict, reason = self._answer(reply, upstream, name, answers, refused)
        detail: dict[str, Any] = {"name": name, "qtype": qtype, "verdict": verdict,
                                  "reason": reason, "answers": answers}
        if refused:
            detail["refused"] = refused
        self.emit("dns.query", detail, severity="info" if verdict == "allow" else "warning")
        self.tunnels.observe(name, qtype)
        return reply
