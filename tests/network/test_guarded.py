"""Guarded egress end to end: a real session netns, nftables, gateway and resolver in
`guarded` mode, against the fake internet from conftest.

Guarded relays TLS and HTTP to names no allow entry lists; it still denies SSH (unless
an allow entry lifts it), mining, opaque protocols, the deny list, and the inside
(metadata, link-local, LAN, this host), and records every connection. Clients run in the
session's netns; the only servers are the fake internet's (TEST-NET-2/3, in the test's
own netns) and an upstream DNS server this module runs on 127.0.0.1. Denied inside
addresses are only ever sent to the gateway, which refuses them before connecting
anywhere: nothing here reaches a real outside, metadata or LAN address.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from sandbox import Sandbox, Store, load_profile, network
from sandbox.errors import SetupError
from sandbox.events import ListEmit
from sandbox.guard import build_engine
from sandbox.jail.profile import NetworkSection
from sandbox.network.scans import SCAN_TARGETS
from tests.helpers import make_workspace, wait_for
from tests.network.conftest import (
    GOOD_IP,
    POOL_IP,
    SSH_IP,
    STANDIN_IP,
    FakeInternet,
    NetBox,
    _serve,
    in_netns,
    ip,
)

pytestmark = pytest.mark.root

METADATA_IP = "169.254.169.254"
LAN_IP = "10.20.30.40"
# The upstream this module serves: the fake internet's names, plus names that point
# inside (DNS rebinding). Only the answers are data; no connection ever goes there.
UPSTREAM_NAMES: dict[str, list[str]] = {
    "good.test": [GOOD_IP], "bad.test": [GOOD_IP], "ssh.test": [SSH_IP],
    "pool.test": [POOL_IP], "lan.test": [LAN_IP], "meta.test": [METADATA_IP],
    "mixed.test": [LAN_IP, GOOD_IP],
}
# 20 web sites of this module's own, in the fake internet's netns (TEST-NET-3).
WEB = {f"web{i}.test": f"203.0.113.{120 + i}" for i in range(20)}
UPSTREAM_NAMES.update({name: [addr] for name, addr in WEB.items()})


class _Upstream(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in UPSTREAM_NAMES:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for addr in UPSTREAM_NAMES[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(addr), ttl=60))
        return reply


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """A DNS server on loopback (the supervisor's side), as "127.0.0.1:port"."""
    server = DNSServer(_Upstream(), address="127.0.0.1", port=0,
                       logger=DNSLogger(log="-recv,-send,-request,-reply", prefix=False))
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()


@pytest.fixture(scope="module")
def web_hosts(fake_internet: FakeInternet) -> Iterator[dict[str, str]]:
    """An HTTP server on port 80 of each WEB address (added to the fake internet's lo,
    removed afterwards)."""
    netns, added, socks, stop = fake_internet.netns, [], [], threading.Event()

    def http(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def listen(addr: str) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 80))
        s.listen(16)
        return s

    try:
        for addr in WEB.values():
            ip("-n", netns, "addr", "add", f"{addr}/32", "dev", "lo")
            added.append(addr)
        socks = in_netns(netns, lambda: [listen(a) for a in WEB.values()])
        for sock in socks:
            threading.Thread(target=_serve, args=(sock, http, stop), daemon=True).start()
        yield WEB
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        for addr in added:
            ip("-n", netns, "addr", "del", f"{addr}/32", "dev", "lo", check=False)


def section(upstream: str, allow: list[str] | None = None) -> NetworkSection:
    # Nothing the tests reach is on an allow list: guarded is what lets it through.
    return NetworkSection(mode="guarded", allow=allow or [],
                          deny=["bad.test", "*.blocked.test"], upstream_dns=upstream)


class Box(NetBox):
    """A live guarded session network plus its events."""

    def tls_get(self, ip: str, sni: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.inet.cert))

        def go() -> bytes:
            with socket.create_connection((ip, 443), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % sni.encode())
                data = b""
                for _ in range(1000):  # bounded
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data

        return self.run(go)  # type: ignore[no-any-return]


@contextlib.contextmanager
def session(inet: FakeInternet, upstream: str,
            allow: list[str] | None = None) -> Iterator[Box]:
    emit = ListEmit()
    handle = network.setup("t" + secrets.token_hex(4), section(upstream, allow), emit)
    try:
        # The redirect is in place before any test sends a byte (nothing can leak past it).
        assert handle.counters(), "session nft table missing"
        yield Box(handle, emit, inet)
    finally:
        handle.teardown()


@pytest.fixture(scope="module")
def box(fake_internet: FakeInternet, upstream: str) -> Iterator[Box]:
    with session(fake_internet, upstream) as b:
        yield b


def verdicts(event: dict[str, Any], kind: str = "net.attempt") -> set[str]:
    """The guard rules (built-in packs) that fire on one recorded event."""
    return {v.rule_id for v in build_engine().evaluate_event({"kind": kind, "detail": event})}


# -- allowed: the open internet ------------------------------------------------------------


def test_tls_to_a_name_on_no_list_is_allowed_and_recorded(box: Box) -> None:
    """curl --noproxy '*' https://good.test/: good.test is on no allow list; guarded
    resolves it and relays TLS to it, and the attempt is on record with its bytes."""
    m, hits = box.mark(), box.inet.hits.get("tls", 0)
    r = subprocess.run(
        ["ip", "netns", "exec", box.h.netns, "curl", "-sS", "--noproxy", "*", "--max-time",
         "10", "--cacert", str(box.inet.cert), "https://good.test/"],
        capture_output=True, text=True, timeout=20, check=False)
    assert r.returncode == 0, r.stderr
    assert "hello from the fake internet" in r.stdout
    assert box.inet.hits.get("tls", 0) == hits + 1
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "allow" and attempt["name"] == "good.test"
    assert attempt["protocol"] == "tls" and attempt["dst_ip"] == GOOD_IP
    assert attempt["reason"] == "guarded: tls to good.test:443"
    assert attempt["bytes_up"] > 0 and attempt["bytes_down"] > 0
    [query] = box.since(m, "dns.query",
                        pred=lambda d: d["name"] == "good.test" and d["qtype"] == "A")
    assert query["verdict"] == "allow" and query["answers"] == [GOOD_IP]


def test_http_to_an_ip_literal_is_allowed_and_recorded(box: Box) -> None:
    """Plain HTTP by IP (no name ever resolved for it): allowed in guarded mode."""
    m = box.mark()
    got = box.exchange(STANDIN_IP, 80, b"GET / HTTP/1.1\r\nHost: 203.0.113.99\r\n\r\n")
    assert isinstance(got, bytes) and got.startswith(b"HTTP/1.1 200"), got
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "allow" and attempt["protocol"] == "http"
    assert attempt["dst_ip"] == STANDIN_IP and attempt["reason"].startswith("guarded: http")


# -- denied: the protocol rules ------------------------------------------------------------


def test_ssh_is_denied_and_recorded(box: Box) -> None:
    """SSH to a resolved public host: denied (tunnel protocol), the server never sees it,
    and the guard's ssh rule fires on the recorded attempt."""
    assert str(box.resolve("ssh.test").a.rdata) == SSH_IP
    m, hits = box.mark(), box.inet.hits.get("ssh", 0)
    assert box.exchange(SSH_IP, 22, b"SSH-2.0-OpenSSH_9.2\r\n") == "ConnectionResetError"
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "deny" and attempt["protocol"] == "ssh"
    assert attempt["name"] == "ssh.test" and "tunnel protocol" in attempt["reason"]
    assert box.inet.hits.get("ssh", 0) == hits
    assert "tunnels.ssh_denied" in verdicts(attempt)


def test_ssh_lifted_for_a_named_host_and_port_only(fake_internet: FakeInternet,
                                                    upstream: str) -> None:
    """allow = ["ssh.test:22"] lifts SSH for that host on port 22, nowhere else."""
    with session(fake_internet, upstream, allow=["ssh.test:22"]) as b:
        b.resolve("ssh.test")
        m = b.mark()
        got = b.exchange(SSH_IP, 22, b"SSH-2.0-OpenSSH_9.2\r\n")
        assert isinstance(got, bytes) and got.startswith(b"SSH-2.0-"), got
        [attempt] = b.since(m, "net.attempt")
        assert attempt["verdict"] == "allow" and attempt["reason"] == "allow entry ssh.test:22"
        m = b.mark()
        assert b.exchange(SSH_IP, 443, b"SSH-2.0-OpenSSH_9.2\r\n") == "ConnectionResetError"
        [attempt] = b.since(m, "net.attempt")
        assert attempt["verdict"] == "deny" and attempt["protocol"] == "ssh"


def test_stratum_is_denied(box: Box) -> None:
    """A stratum mining.subscribe to a pool's IP: denied, recorded as mining, alerted."""
    m, hits = box.mark(), box.inet.hits.get("stratum", 0)
    payload = b'{"id":1,"method":"mining.subscribe","params":["xmrig/6.21"]}\n'
    assert box.exchange(POOL_IP, 3333, payload) == "ConnectionResetError"
    [attempt] = box.since(m, "net.attempt")
    [event] = [e for e in box.emit.events[m:] if e["kind"] == "net.attempt"]
    assert event["severity"] == "alert"
    assert attempt["verdict"] == "deny" and attempt["protocol"] == "mining"
    assert attempt["reason"] == "mining protocol"
    assert box.inet.hits.get("stratum", 0) == hits
    assert "mining.stratum_protocol" in verdicts(attempt)


def test_opaque_protocol_is_denied(box: Box) -> None:
    """Bytes that are neither TLS nor HTTP (a SOCKS5 greeting) on the TLS host's port."""
    m, hits = box.mark(), box.inet.hits.get("tls", 0)
    assert box.exchange(GOOD_IP, 443, b"\x05\x01\x00") == "ConnectionResetError"
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "deny" and attempt["protocol"] == "unknown"
    assert "never allowed" in attempt["reason"]
    assert box.inet.hits.get("tls", 0) == hits


# -- denied: the deny list and the inside --------------------------------------------------


def test_deny_list_name(box: Box) -> None:
    """bad.test is on the deny list: no answer, and TLS naming it (on an IP that serves
    it, with a valid certificate) is reset before the server sees a byte."""
    m, hits = box.mark(), box.inet.hits.get("tls", 0)
    assert box.resolve("bad.test").header.rcode == RCODE.NXDOMAIN
    assert box.resolve("x.blocked.test").header.rcode == RCODE.NXDOMAIN
    with pytest.raises((ConnectionResetError, ssl.SSLError)):
        box.tls_get(GOOD_IP, "bad.test")
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "deny" and attempt["name"] == "bad.test"
    assert attempt["reason"] == "deny entry bad.test"
    assert box.inet.hits.get("tls", 0) == hits
    queries = box.since(m, "dns.query", count=2)
    assert [q["verdict"] for q in queries] == ["deny", "deny"]


@pytest.mark.parametrize("ip,category,rule", [
    (METADATA_IP, "link-local/metadata", "secrets.metadata_network"),
    (LAN_IP, "lan", "recon.private_range_denied"),
])
def test_inside_addresses_are_denied_at_the_gateway(box: Box, ip: str, category: str,
                                                    rule: str) -> None:
    """HTTP to the metadata service or a LAN address: nftables hands it to the gateway,
    which denies it on the address alone (it never connects anywhere), and records it."""
    m = box.mark()
    got = box.exchange(ip, 80, b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got in ("ConnectionResetError", b""), got
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "deny" and attempt["dst_ip"] == ip
    assert attempt["reason"] == f"built-in deny: {category}"
    assert attempt["bytes_up"] == 0 and attempt["bytes_down"] == 0
    assert rule in verdicts(attempt)


def test_dns_answers_pointing_inside_are_refused(box: Box) -> None:
    """A public name rebound onto the LAN or the metadata service gets NXDOMAIN, with the
    refused answer on record; a mixed answer keeps only the public address."""
    m = box.mark()
    for name in ("lan.test", "meta.test"):
        reply = box.resolve(name)
        assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
    lan, meta = box.since(m, "dns.query", count=2)
    assert lan["verdict"] == "deny" and lan["answers"] == []
    assert lan["refused"] == [f"{LAN_IP}: built-in deny: lan"]
    assert meta["verdict"] == "deny" and METADATA_IP in meta["refused"][0]
    mixed = box.resolve("mixed.test")
    assert [str(rr.rdata) for rr in mixed.rr] == [GOOD_IP]
    [q] = box.since(m, "dns.query", pred=lambda d: d["name"] == "mixed.test")
    assert q["verdict"] == "allow" and q["answers"] == [GOOD_IP] and q["refused"]
    assert box.h.resolver.names_for(LAN_IP) == set()  # never handed out


# -- scans: the destination fan-out rule ---------------------------------------------------


def _connect_only(ip: str, ports: range) -> None:
    for port in ports:
        with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=2):
            pass


def test_port_scan_is_one_net_scan_and_the_guard_fires(fake_internet: FakeInternet,
                                                       upstream: str) -> None:
    """A connect scan (connect, send nothing) over 30 ports: every attempt recorded and
    denied, one net.scan, and the recon pack's gateway_scan rule fires on it."""
    with session(fake_internet, upstream) as b:
        b.run(lambda: _connect_only(GOOD_IP, range(1, 31)))
        attempts = b.since(0, "net.attempt", count=30)
        assert len(attempts) == 30 and all(a["verdict"] == "deny" for a in attempts)
        [scan] = b.since(0, "net.scan")
        assert scan["distinct_targets"] >= SCAN_TARGETS and scan["hosts"] == 1
        assert "recon.gateway_scan" in verdicts(scan, "net.scan")


def test_allowed_fan_out_is_a_scan(fake_internet: FakeInternet, upstream: str) -> None:
    """HTTP to 20 ports of one IP, each allowed in guarded mode (the upstream refuses):
    the fan-out still makes one net.scan, counted as allowed targets."""
    def sweep() -> None:
        for port in range(8000, 8020):
            with contextlib.suppress(OSError), \
                    socket.create_connection((GOOD_IP, port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n")
                s.recv(64)

    with session(fake_internet, upstream) as b:
        b.run(sweep)
        attempts = b.since(0, "net.attempt", count=20)
        assert len(attempts) == 20 and all(a["verdict"] == "allow" for a in attempts)
        [scan] = b.since(0, "net.scan")
        assert scan["allowed_targets"] >= SCAN_TARGETS
        assert "recon.gateway_scan" in verdicts(scan, "net.scan")


def test_host_sweep_by_ip_on_port_80_is_a_scan(fake_internet: FakeInternet, upstream: str,
                                               web_hosts: dict[str, str]) -> None:
    """HTTP to 20 IP literals on port 80 (web ports, but no name was ever resolved to
    them): each allowed and relayed, and together one net.scan."""
    def sweep() -> list[bytes]:
        out = []
        for addr in web_hosts.values():
            with socket.create_connection((addr, 80), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % addr.encode())
                out.append(s.recv(4096))
        return out

    with session(fake_internet, upstream) as b:
        assert all(r.endswith(b"\r\n\r\nok") for r in b.run(sweep))
        attempts = b.since(0, "net.attempt", count=20)
        assert len(attempts) == 20 and all(a["verdict"] == "allow" for a in attempts)
        [scan] = b.since(0, "net.scan")
        assert scan["allowed_targets"] >= SCAN_TARGETS and scan["n_ports"] == 1
        assert "recon.gateway_scan" in verdicts(scan, "net.scan")


def test_browsing_by_name_is_not_a_scan(fake_internet: FakeInternet, upstream: str,
                                        web_hosts: dict[str, str]) -> None:
    """A crawler: 20 sites by name on port 80 (20 distinct addresses, more than a scan's
    worth) plus TLS to good.test: all relayed, all recorded, no net.scan."""
    def crawl() -> list[bytes]:
        out = []
        for name, addr in web_hosts.items():
            with socket.create_connection((addr, 80), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
                out.append(s.recv(4096))
        return out

    with session(fake_internet, upstream) as b:
        for name in [*web_hosts, "good.test"]:
            assert b.resolve(name).a.rdata is not None
        assert all(r.endswith(b"\r\n\r\nok") for r in b.run(crawl))
        assert b.tls_get(GOOD_IP, "good.test").startswith(b"HTTP/1.1 200")
        attempts = b.since(0, "net.attempt", count=21)
        assert len(attempts) == 21 and all(a["verdict"] == "allow" for a in attempts)
        assert {a["name"] for a in attempts} == {*web_hosts, "good.test"}
        time.sleep(0.2)
        assert b.emit.of_kind("net.scan") == []


# -- set-up ---------------------------------------------------------------------------------


def test_not_root_fails_closed_naming_the_fix(monkeypatch: pytest.MonkeyPatch,
                                             upstream: str) -> None:
    sid = "t" + secrets.token_hex(4)
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    with pytest.raises(SetupError, match=r'mode guarded needs root.*mode = "none"'):
        network.setup(sid, section(upstream), ListEmit())
    monkeypatch.undo()
    assert not any(sid[:10] in name for name in network.leftovers())


def test_shipped_guarded_profile() -> None:
    net = load_profile("guarded").network
    assert net.mode == "guarded" and net.allow == [] and net.dns


SSH_FROM_JAIL = (
    "python3 -c \"import socket\n"
    "s = socket.create_connection(('ssh.test', 22), timeout=5)\n"
    "s.sendall(b'SSH-2.0-OpenSSH_9.2\\r\\n')\n"
    "try: print('got', s.recv(64))\n"
    "except OSError as e: print('reset', e)\""
)


def test_a_real_guarded_session(test_dir: Path, fake_internet: FakeInternet,
                                upstream: str) -> None:
    """A Sandbox on a profile extending the shipped `guarded`: curl reaches a name on no
    list, SSH is reset, both are stored, and the guard's ssh rule judged the attempt."""
    prof = test_dir / "g.toml"
    prof.write_text(f'extends = "guarded"\n[network]\nupstream_dns = "{upstream}"\n'
                    'deny = ["bad.test"]\n')
    with Sandbox(profile=str(prof), workdir=make_workspace(test_dir / "w")) as box:
        sid = box.id
        ok = box.run("curl -sSk --noproxy '*' --max-time 10 https://good.test/", timeout=30)
        assert "hello from the fake internet" in ok.output, ok.output
        r = box.run(SSH_FROM_JAIL, timeout=30)
        assert "reset" in r.output and "got" not in r.output, r.output

        def rules() -> set[str]:
            return {e["rule"] for e in Store().events(sid, kinds=("guard.verdict",))}

        assert wait_for(lambda: "tunnels.ssh_denied" in rules(), 10), rules()
    attempts = [e["detail"] for e in Store().events(sid, kinds=("net.attempt",))]
    assert [(a["name"], a["protocol"], a["verdict"]) for a in attempts] == [
        ("good.test", "tls", "allow"), ("ssh.test", "ssh", "deny")]
