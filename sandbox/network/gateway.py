"""The transparent TCP gateway: every TCP connection from the sandbox ends here first.

It runs in the session owner's process, outside the sandbox, listening on the host end of
the veth. For each connection: original destination from conntrack (SO_ORIGINAL_DST), a
cheap IP pre-check (most scans and IP literals end here, without waiting for bytes), then
the client's first bytes within SNIFF_TIMEOUT_S, a decision by name and protocol, and then
either a relay to the real destination or a reset. Every attempt is one `net.attempt`
event (emitted when a denied attempt is reset, or when an allowed one closes, with byte
counts); bursts of denied destinations become one `net.scan` event per window.

An HTTP proxy request (`CONNECT host:port`, `GET http://host/`) sent to an allowed host
is allowed only when its target is itself allowed by name; the attempt records the target
as `proxy` (and its first bytes, which the guard's proxy rule reads).

SSH carries no name: it is matched by the names the resolver handed out for the
destination IP. TLS without SNI and HTTP without Host carry none either, but those are IP
literals and stay denied unless an explicit IP entry allows them (allowlist mode).

A connection that names an allowed host (TLS SNI, HTTP Host) but dials an address the
resolver never gave for it is fronting by IP (`curl --resolve good:443:OTHER`, a forged
Host): its reason says `domain fronting: ...`, whichever check denied it first.

In guarded mode the same path relays TLS and HTTP to any destination the denies leave
open, so "denied" no longer covers a sweep: the scan detector also counts allowed
connections that look like fan-out rather than use, i.e. to an IP the resolver never
handed out (an IP literal) or to a port other than 80/443.

The detectors are `scans`; the socket plumbing (original destination, reset, the splice
relay) is `relay`. This module is the per-connection path: peek, decide, relay, record.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Protocol

from ..events import Emit
from .entries import normalize_name
from .policy import UNRESOLVED, Decision, Policy, fronting
from .relay import original_dst, pump, reset
from .scans import ControlPlaneDetector, ScanDetector
from .sniff import MAX_SNIFF, Sniffed, sniff

SNIFF_TIMEOUT_S = 2.0
PEEK_TIMEOUT_S = 0.3  # after an IP pre-check deny: classify for the record, decide nothing
CONNECT_TIMEOUT_S = 10.0
FIRST_BYTES_KEPT = 1024
MAX_CONNECTIONS = 512
CLOSE_WAIT_S = 1.0
WEB_PORTS = frozenset({80, 443})  # guarded: allowed connections elsewhere count as fan-out


class Names(Protocol):
    """What the gateway needs from the resolver."""

    def ips_for(self, name: str) -> set[str]: ...
    def names_for(self, ip: str) -> set[str]: ...
    def known_ips(self) -> set[str]: ...


class Gateway:
    """Accepts redirected connections on `address`; `start()` binds, `close()` ends all."""

    def __init__(self, policy: Policy, names: Names, emit: Emit, *, address: str) -> None:
        self.policy = policy
        self.names = names
        self.emit = emit
        self.address = address
        self.scans = ScanDetector(emit)
        self.probes = ControlPlaneDetector(emit)
        self.port = 0
        self._listener: socket.socket | None = None
        self._live: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, 0))
        sock.listen(256)
        self._listener = sock
        self.port = sock.getsockname()[1]
        threading.Thread(target=self._accept_loop, name=f"gateway:{self.port}",
                         daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            live = list(self._live)
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        # Let in-flight handlers record their attempt before the session's store closes.
        deadline = time.monotonic() + CLOSE_WAIT_S
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                full = len(self._live) >= MAX_CONNECTIONS
                if not full:
                    self._live.add(conn)
            if full:
                reset(conn)
                continue
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._live.discard(s)

    def _read_first(self, conn: socket.socket, timeout: float) -> tuple[Sniffed, bytes]:
        data = b""
        deadline = time.monotonic() + timeout
        seen = sniff(data)
        while seen.need_more and len(data) < MAX_SNIFF:
            left = deadline - time.monotonic()
            if left <= 0:
                return Sniffed(seen.protocol if data else "none", seen.name, seen.detail
                               or f"no complete first message in {timeout}s"), data
            conn.settimeout(left)
            try:
                chunk = conn.recv(MAX_SNIFF - len(data))
            except TimeoutError:
                continue
            except OSError:  # reset by the client: same as closing
                chunk = b""
            if not chunk:
                return Sniffed(seen.protocol if data else "none", seen.name,
                               seen.detail or "client closed before sending"), data
            data += chunk
            seen = sniff(data)
        return seen, data

    def _decide(self, seen: Sniffed, ip: str, port: int) -> Decision:
        if seen.protocol == "ssh":
            # No name on the wire: try each allowed name that resolved to this IP.
            first: Decision | None = None
            for name in sorted(self.names.names_for(ip)):
                d = self.policy.decide(name, "ssh", ip, port, self.names.ips_for(name))
                if d.allowed:
                    return d
                first = first or d
            return first or self.policy.decide(None, "ssh", ip, port, ())
        ips = self.names.ips_for(seen.name) if seen.name else set()
        return self.policy.decide(seen.name, seen.protocol, ip, port, ips)

    def _check_proxy(self, target: str, via: str | None, decision: Decision) -> Decision:
        """An HTTP proxy request (CONNECT, absolute URI) through an allowed host reaches
        only a place the policy allows by name itself; anything else is denied."""
        if not decision.allowed:
            return decision
        host = target.rpartition(":")[0] or target
        if via and normalize_name(host) == normalize_name(via):
            return decision
        why = self.policy.proxy_denied(target)
        if why is not None:
            return Decision("deny", f"proxy request through {via or 'an allowed host'} to "
                                    f"{target}: not allowed ({why})", decision.name)
        return Decision("allow", f"{decision.reason}; proxy request to {target} (allowed "
                                 "name)", decision.name)

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._handle_one(conn)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _handle_one(self, conn: socket.socket) -> None:
        t0 = time.monotonic()
        info: dict[str, Any] = {"dst_ip": "", "dst_port": 0, "protocol": "none", "name": None}
        try:
            ip, port = original_dst(conn)
            info.update(dst_ip=ip, dst_port=port)
            decision = self.policy.precheck(ip, port, self.names.known_ips())
            # Denied already: still look briefly at the first bytes, for the record only
            # (a miner sends mining.subscribe at once; a scanner closes at once).
            seen, data = self._read_first(
                conn, PEEK_TIMEOUT_S if decision is not None else SNIFF_TIMEOUT_S
            )
            info.update(protocol=seen.protocol, name=seen.name, detail=seen.detail,
                        # What the client sent first (plaintext protocols show secrets
                        # here: the guard scans it for honeytokens). Bounded.
                        first_bytes=data[:FIRST_BYTES_KEPT].decode("latin-1"))
            if decision is None:
                decision = self._decide(seen, ip, port)
                info["name"] = decision.name or seen.name
            elif (decision.reason == UNRESOLVED and seen.name
                  and self.policy.claims_allowed(seen.name, port)):
                # Denied for its address already; the name it sent says why it came.
                decision = fronting(seen.name, ip)
            if seen.proxy:
                info["proxy"] = seen.proxy
                decision = self._check_proxy(seen.proxy, info["name"], decision)
        except OSError as e:
            decision = Decision("deny", f"gateway error before decision: {e}")
            data = b""
        if not decision.allowed:
            reset(conn)
            self._forget(conn)
            self._record(info, decision, 0, 0, t0)
            if info["dst_ip"]:
                self.scans.denied(info["dst_ip"], info["dst_port"])
                self.probes.target(info["dst_ip"], info["dst_port"], allowed=False)
            return
        if self._fans_out(info["dst_ip"], info["dst_port"]):
            self.scans.target(info["dst_ip"], info["dst_port"], allowed=True)
            self.probes.target(info["dst_ip"], info["dst_port"], allowed=True)
        self._relay(conn, data, info, decision, t0)

    def _fans_out(self, ip: str, port: int) -> bool:
        """Guarded mode: an allowed connection counts toward a scan when it goes to an IP
        no name was resolved to (an IP literal) or to a port other than 80/443. Browsing
        by name on web ports (a crawler, pip, git over https) never does."""
        if not self.policy.guarded:
            return False
        return port not in WEB_PORTS or ip not in self.names.known_ips()

    def _relay(self, conn: socket.socket, first: bytes, info: dict[str, Any],
               decision: Decision, t0: float) -> None:
        try:
            upstream = socket.create_connection((info["dst_ip"], info["dst_port"]),
                                                timeout=CONNECT_TIMEOUT_S)
        except OSError as e:
            reset(conn)
            self._forget(conn)
            self._record(info, Decision("allow", f"{decision.reason}; upstream failed: {e}"),
                         0, 0, t0)
            return
        with self._lock:
            self._live.add(upstream)
        conn.settimeout(None)
        upstream.settimeout(None)
        counts = [len(first), 0]
        with contextlib.suppress(OSError):  # a failed send shows up in the pumps
            upstream.sendall(first)
        down = threading.Thread(target=pump, args=(upstream, conn, counts, 1), daemon=True)
        down.start()
        pump(conn, upstream, counts, 0)
        down.join()
        for s in (conn, upstream):
            s.close()
        self._forget(conn, upstream)
        self._record(info, decision, counts[0], counts[1], t0)

    def _record(self, info: dict[str, Any], d: Decision, up: int, down: int, t0: float) -> None:
        mining = info.get("protocol") == "mining"
        self.emit("net.attempt", {
            **info, "verdict": d.verdict, "reason": d.reason, "bytes_up": up,
            "bytes_down": down, "duration": round(time.monotonic() - t0, 4),
        }, severity="info" if d.allowed else ("alert" if mining else "warning"),
           action="record" if d.allowed else "block")
