"""Scan detection over the gateway's connection attempts: bursts and control-plane probes.

`ScanDetector`: many distinct targets (denied (ip, port) pairs) in a short window are one
`net.scan` of kind `burst`, then a cooldown.

A few denied connections to control-plane ports of one address (Docker 2375, kubelet
10250, kube-apiserver 6443, etcd 2379, Elasticsearch 9200, Redis 6379) are one
`net.scan` of kind `control_plane`: the first steps of probing internal services, long
before a burst is big enough to be a scan.

In guarded mode the gateway relays TLS and HTTP to any destination the denies leave
open, so "denied" no longer covers a sweep: the scan detector also counts allowed
connections that look like fan-out rather than use, i.e. to an IP the resolver never
handed out (an IP literal) or to a port other than 80/443.

The gateway tells both detectors about each such target; they only count and emit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ..events import Emit

SCAN_TARGETS = 15  # distinct denied (ip, port) pairs within SCAN_WINDOW_S make a scan
SCAN_WINDOW_S = 10.0
SCAN_COOLDOWN_S = 30.0
# Services whose API on the network is a way into a host or cluster, and that an agent has
# no business dialling unless an allow entry names them: what probing "internal network
# resources" tries first (the Docker API, kubelet, kube-apiserver, etcd, Elasticsearch,
# Redis, plus their usual siblings).
CONTROL_PLANE_PORTS: dict[int, str] = {
    2375: "docker", 2376: "docker-tls", 2379: "etcd", 2380: "etcd-peer",
    6443: "kube-apiserver", 10250: "kubelet", 10255: "kubelet-ro", 10257: "kube-controller",
    10259: "kube-scheduler", 9200: "elasticsearch", 6379: "redis",
}
# Two distinct control-plane ports of one address: one client never needs both (a single
# refused Redis or retries to one port stay quiet). The window is long because an agent
# probes one command per turn, not in a burst.
CONTROL_PLANE_MIN_PORTS = 2
CONTROL_PLANE_WINDOW_S = 600.0
CONTROL_PLANE_MAX_HITS = 256  # memory bound over the window


class ScanDetector:
    """Many distinct targets in a short window -> one `net.scan`, then a cooldown.

    A target is a denied (ip, port), or, in guarded mode, an allowed one that looks like
    fan-out (`Gateway._fans_out`); `allowed_targets` in the event counts the latter."""

    def __init__(self, emit: Emit, clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.clock = clock
        self._hits: deque[tuple[float, str, int, bool]] = deque()
        self._quiet_until = 0.0
        self._lock = threading.Lock()

    def denied(self, ip: str, port: int) -> None:
        self.target(ip, port, allowed=False)

    def target(self, ip: str, port: int, *, allowed: bool) -> None:
        with self._lock:
            now = self.clock()
            self._hits.append((now, ip, port, allowed))
            while self._hits and now - self._hits[0][0] > SCAN_WINDOW_S:
                self._hits.popleft()
            targets = {(i, p) for _, i, p, _ in self._hits}
            if len(targets) < SCAN_TARGETS or now < self._quiet_until:
                return
            self._quiet_until = now + SCAN_COOLDOWN_S
            hosts = sorted({i for i, _ in targets})
            ports = sorted({p for _, p in targets})
            allowed_targets = len({(i, p) for _, i, p, a in self._hits if a})
        self.emit("net.scan", {
            "kind": "burst", "distinct_targets": len(targets), "hosts": len(hosts),
            "n_ports": len(ports),
            "sample_hosts": hosts[:10], "ports": ports[:50], "window_s": SCAN_WINDOW_S,
            "allowed_targets": allowed_targets,
        }, severity="alert", action="flag")


class ControlPlaneDetector:
    """A few control-plane ports of one address -> one `net.scan` (kind control_plane)
    per address and window. Counts what `ScanDetector` counts (denied connections, and in
    guarded mode allowed fan-out), on `CONTROL_PLANE_PORTS` only."""

    def __init__(self, emit: Emit, clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.clock = clock
        self._hits: deque[tuple[float, str, int, bool]] = deque(maxlen=CONTROL_PLANE_MAX_HITS)
        self._flagged: dict[str, float] = {}  # ip -> when its event was emitted
        self._lock = threading.Lock()

    def target(self, ip: str, port: int, *, allowed: bool) -> None:
        if port not in CONTROL_PLANE_PORTS:
            return
        with self._lock:
            now = self.clock()
            self._hits.append((now, ip, port, allowed))
            while self._hits and now - self._hits[0][0] > CONTROL_PLANE_WINDOW_S:
                self._hits.popleft()
            for old in [i for i, t in self._flagged.items()
                        if now - t > CONTROL_PLANE_WINDOW_S]:
                del self._flagged[old]
            mine = [(p, a) for _, i, p, a in self._hits if i == ip]
            ports = sorted({p for p, _ in mine})
            if len(ports) < CONTROL_PLANE_MIN_PORTS or ip in self._flagged:
                return
            self._flagged[ip] = now
            allowed_targets = len({p for p, a in mine if a})
        self.emit("net.scan", {
            "kind": "control_plane", "distinct_targets": len(ports), "hosts": 1,
            "n_ports": len(ports), "sample_hosts": [ip], "ports": ports,
            "services": [CONTROL_PLANE_PORTS[p] for p in ports], "attempts": len(mine),
            "window_s": CONTROL_PLANE_WINDOW_S, "allowed_targets": allowed_targets,
        }, severity="alert", action="flag")
