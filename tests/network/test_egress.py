"""Allowlist egress end to end: a real session netns, nftables, gateway and resolver,
against the fake internet from conftest. Clients run inside the session's netns (threads
that joined it, or `ip netns exec`); nothing here talks to a real outside address."""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE

from sandbox import network
from sandbox.events import ListEmit
from sandbox.jail.profile import NetworkSection
from tests.network.conftest import (
    DNS_IP,
    GOOD_IP,
    HOST_LINK_IP,
    POOL_IP,
    SSH_IP,
    STANDIN_IP,
    FakeInternet,
    in_netns,
)
from tests.network.conftest import (
    NetBox as Box,
)

pytestmark = pytest.mark.root

SECTION = NetworkSection(
    mode="allowlist",
    allow=["good.test:443", "ssh.test:443,22", f"{STANDIN_IP}:80"],
    # The stand-in plays the metadata service: allowed by IP above, denied here; deny wins.
    deny=[f"{STANDIN_IP}/32"],
    upstream_dns=DNS_IP,
)


@pytest.fixture(scope="module")
def box(fake_internet: FakeInternet) -> Iterator[Box]:
    emit = ListEmit()
    handle = network.setup("t" + secrets.token_hex(4), SECTION, emit)
    try:
        yield Box(handle, emit, fake_internet)
    finally:
        handle.teardown()


@pytest.fixture
def resolved(box: Box) -> Box:
    """The sandbox has asked for good.test and ssh.test (so their IPs were handed out)."""
    for name in ("good.test", "ssh.test"):
        assert box.resolve(name).a.rdata is not None
    return box


def tls_get(box: Box, ip: str, sni: str | None, request: bytes = b"GET / HTTP/1.1\r\n\r\n",
            port: int = 443) -> bytes:
    ctx = ssl.create_default_context(cafile=str(box.inet.cert))
    if sni is None:
        ctx.check_hostname = False

    def go() -> bytes:
        with socket.create_connection((ip, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(request)
            data = b""
            for _ in range(10_000):  # bounded
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

    return box.run(go)


class TestAllowed:
    def test_curl_end_to_end(self, box: Box) -> None:
        """curl --noproxy '*' reaches the allowed name over TLS (resolver + gateway)."""
        m = box.mark()
        r = box.exec("curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert",
                     str(box.inet.cert), "https://good.test/")
        assert r.returncode == 0, r.stderr
        assert "hello from the fake internet" in r.stdout
        [attempt] = box.since(m, "net.attempt")
        assert attempt["verdict"] == "allow" and attempt["name"] == "good.test"
        assert attempt["protocol"] == "tls" and attempt["dst_ip"] == GOOD_IP
        assert attempt["bytes_up"] > 0 and attempt["bytes_down"] > 0
        assert box.since(m, "dns.query", pred=lambda d: d["verdict"] == "allow")

    def test_raw_socket_big_download(self, resolved: Box) -> None:
        """A raw Python TLS socket works too, and 4 MiB come through with byte counts."""
        m = resolved.mark()
        data = tls_get(resolved, GOOD_IP, "good.test", b"BIG / HTTP/1.1\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200") and len(data) > 4 * 1024 * 1024
        [attempt] = resolved.since(m, "net.attempt")
        assert attempt["verdict"] == "allow" and attempt["bytes_down"] > 4 * 1024 * 1024

    def test_ssh_to_allowed_ssh_port(self, resolved: Box) -> None:
        """SSH has no name on the wire; it is matched by the IP handed out for ssh.test."""
        m = resolved.mark()
        got = resolved.exchange(SSH_IP, 22, b"SSH-2.0-OpenSSH_9.2\r\n")
        assert isinstance(got, bytes) and got.startswith(b"SSH-2.0-")
        [attempt] = resolved.since(m, "net.attempt")
        assert attempt["verdict"] == "allow" and attempt["protocol"] == "ssh"
        assert attempt["name"] == "ssh.test"

    def test_dns_over_tcp_and_to_any_server(self, box: Box) -> None:
        """DNS to any address, UDP or TCP, lands on the session resolver and is recorded."""
        m = box.mark()
        assert box.resolve("good.test", tcp=True).a.rdata is not None
        assert str(box.resolve("good.test", server="203.0.113.200").a.rdata) == GOOD_IP
        assert len(box.since(m, "dns.query", pred=lambda d: d["name"] == "good.test",
                             count=2)) == 2


class TestDenied:
    def test_disallowed_sni_on_allowed_ip(self, resolved: Box) -> None:
        """Same IP, other SNI (the cert would even match): reset, recorded, server untouched."""
        m, hits = resolved.mark(), resolved.inet.hits.get("tls", 0)
        with pytest.raises((ConnectionResetError, ssl.SSLError)):
            tls_get(resolved, GOOD_IP, "bad.test")
        [attempt] = resolved.since(m, "net.attempt")
        assert attempt["verdict"] == "deny" and attempt["name"] == "bad.test"
        assert "not allowed" in attempt["reason"]
        assert resolved.inet.hits.get("tls", 0) == hits

    def test_ip_literal(self, resolved: Box) -> None:
        """curl to the allowed host's IP literal sends no SNI: denied and recorded."""
        m = resolved.mark()
        r = resolved.exec("curl", "-sS", "-k", "--noproxy", "*", "--max-time", "10",
                          f"https://{GOOD_IP}/")
        assert r.returncode != 0
        [attempt] = resolved.since(m, "net.attempt")
        assert attempt["verdict"] == "deny" and attempt["dst_ip"] == GOOD_IP
        assert "no host name" in attempt["reason"]

    def test_disallowed_name_refused_by_dns(self, box: Box) -> None:
        m = box.mark()
        reply = box.resolve("bad.test")
        assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
        r = box.exec("curl", "-sS", "--noproxy", "*", "--max-time", "10", "https://bad.test/")
        assert r.returncode != 0
        denied = box.since(m, "dns.query", pred=lambda d: d["name"] == "bad.test")
        assert denied and all(d["verdict"] == "deny" for d in denied)

    def test_unresolved_ip_denied_fast(self, box: Box) -> None:
        """An IP nobody resolved is reset at once, before any byte is read."""
        m = box.mark()
        assert box.exchange("203.0.113.201", 443, b"x") == "ConnectionResetError"
        [attempt] = box.since(m, "net.attempt")
        assert "not resolved" in attempt["reason"]

    def test_ssh_banner_to_https_port(self, resolved: Box) -> None:
        """An SSH client on the allowed host's 443 (a tunnel over the HTTPS hole): denied."""
        m, hits = resolved.mark(), resolved.inet.hits.get("ssh", 0)
        got = resolved.exchange(SSH_IP, 443, b"SSH-2.0-OpenSSH_9.2\r\n")
        assert not (isinstance(got, bytes) and got.startswith(b"SSH-"))
        [attempt] = resolved.since(m, "net.attempt")
        assert attempt["verdict"] == "deny" and attempt["protocol"] == "ssh"
        assert "protocol mismatch" in attempt["reason"]
        assert resolved.inet.hits.get("ssh", 0) == hits

    @pytest.mark.parametrize("target", [(GOOD_IP, 443), (POOL_IP, 3333)])
    def test_stratum_is_mining(self, resolved: Box, target: tuple[str, int]) -> None:
        """mining.subscribe to an allowed host:port or to a pool IP: denied, seen as mining."""
        m, hits = resolved.mark(), resolved.inet.hits.get("stratum", 0)
        payload = b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}\n'
        resolved.exchange(*target, payload)
        [attempt] = resolved.since(m, "net.attempt")
        assert attempt["verdict"] == "deny" and attempt["protocol"] == "mining"
        assert resolved.emit.events[-1]["severity"] == "alert" or any(
            e["severity"] == "alert" for e in resolved.emit.events[m:])
        assert resolved.inet.hits.get("stratum", 0) == hits

    def test_metadata_standin_denied_even_if_allowed(self, box: Box) -> None:
        """Deny beats an explicit allow entry (live, against a TEST-NET stand-in)."""
        m, hits = box.mark(), box.inet.hits.get("standin", 0)
        got = box.exchange(STANDIN_IP, 80, b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n")
        assert got == "ConnectionResetError"
        [attempt] = box.since(m, "net.attempt")
        assert attempt["reason"] == f"deny entry {STANDIN_IP}/32"
        assert box.inet.hits.get("standin", 0) == hits

    def test_host_unreachable_but_two_ports(self, box: Box) -> None:
        """TCP to the host (veth end or another host address) is reset by the gateway;
        UDP to the host is dropped and counted."""
        m = box.mark()
        for ip in (box.h.host_ip, HOST_LINK_IP):
            assert box.exchange(ip, 22, b"SSH-2.0-x\r\n") == "ConnectionResetError"
        attempts = box.since(m, "net.attempt", pred=lambda d: d["dst_port"] == 22, count=2)
        assert len(attempts) == 2
        assert all("this host" in a["reason"] for a in attempts)
        before = box.h.counters()["udp"]
        box.run(lambda: _udp_send(box.h.host_ip, 123))
        assert box.wait_counter("udp", before) > before


def _udp_send(ip: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"ping", (ip, port))


def _icmp_echo(ip: str) -> bool:
    """One ICMP echo from a raw socket; True if anything answered within 1 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(1)
        body = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"sandbox"
        csum = sum(struct.unpack(f"!{len(body) // 2}H", body[: len(body) // 2 * 2]))
        csum = ~((csum >> 16) + (csum & 0xFFFF)) & 0xFFFF
        s.sendto(body[:2] + struct.pack("!H", csum) + body[4:], (ip, 0))
        try:
            s.recv(1024)
            return True
        except TimeoutError:
            return False


class TestDropped:
    def test_udp_not_53(self, box: Box) -> None:
        before = box.h.counters()["udp"]
        box.run(lambda: [_udp_send(GOOD_IP, p) for p in (123, 443, 9999)])
        assert box.wait_counter("udp", before + 2) >= before + 3

    def test_icmp(self, box: Box) -> None:
        before = box.h.counters()["icmp"]
        assert box.run(lambda: _icmp_echo(GOOD_IP)) is False
        assert box.wait_counter("icmp", before) > before

    def test_ipv6(self, box: Box) -> None:
        """No IPv6 route at all; and IPv6 that does leave the netns is dropped and counted."""
        def connect6() -> str:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                try:
                    s.connect(("2001:db8::1", 443))
                except OSError as e:
                    return type(e).__name__
                return "connected"

        assert box.run(connect6) != "connected"
        before = box.h.counters()["ipv6"]
        subprocess.run(["ip", "-n", box.h.netns, "-6", "addr", "add", "fe80::2/64", "dev",
                        "eth0", "nodad"], check=True, timeout=10)

        def multicast6() -> None:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", ("ff02::1", 9, 0, socket.if_nametoindex("eth0")))

        box.run(multicast6)
        assert box.wait_counter("ipv6", before) > before


class TestDns:
    def test_tunnel_burst_flagged_once(self, box: Box) -> None:
        """20 long random labels: every query recorded and denied, one dns.tunnel event."""
        m = box.mark()
        for _ in range(20):
            box.resolve(f"{secrets.token_hex(26)}.exfil.test")
        queries = box.since(m, "dns.query", pred=lambda d: d["name"].endswith("exfil.test"),
                            count=20)
        assert len(queries) == 20 and all(q["verdict"] == "deny" for q in queries)
        tunnels = box.since(m, "dns.tunnel")
        assert len(tunnels) == 1 and tunnels[0]["domain"] == "exfil.test"

    def test_aaaa_and_txt_for_allowed_name_are_empty(self, box: Box) -> None:
        for qtype in ("AAAA", "TXT"):
            reply = box.resolve("good.test", qtype)
            assert reply.header.rcode == RCODE.NOERROR and not reply.rr
        assert QTYPE.get(QTYPE.TXT) == "TXT"


def test_port_scan_is_one_event(fake_internet: FakeInternet) -> None:
    """A 50-port connect scan: 50 denied attempts, one net.scan event with counts."""
    emit = ListEmit()
    handle = network.setup("t" + secrets.token_hex(4), SECTION, emit)
    try:
        def scan() -> int:
            opened = 0
            for port in range(1, 51):
                with contextlib.suppress(OSError), \
                        socket.create_connection((GOOD_IP, port), timeout=2):
                    opened += 1
            return opened

        in_netns(handle.netns, scan)
        deadline = time.monotonic() + 5
        while len(emit.of_kind("net.attempt")) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(emit.of_kind("net.attempt")) == 50
        assert all(e["detail"]["verdict"] == "deny" for e in emit.of_kind("net.attempt"))
        [scan_event] = emit.of_kind("net.scan")
        assert scan_event["detail"]["distinct_targets"] >= 15
        assert scan_event["detail"]["hosts"] == 1 and scan_event["detail"]["n_ports"] >= 15
    finally:
        handle.teardown()


def test_sessions_are_isolated_from_each_other(box: Box) -> None:
    """A second session gets its own /30, and neither can reach the other's veth."""
    other = network.setup("t" + secrets.token_hex(4), SECTION, ListEmit())
    try:
        assert other.resources["subnet"] != box.h.resources["subnet"]
        m = box.mark()
        assert box.exchange(other.sandbox_ip, 22, b"x") == "ConnectionResetError"
        [attempt] = box.since(m, "net.attempt")
        assert "this host" in attempt["reason"]
        before = box.h.counters()["udp"]
        box.run(lambda: _udp_send(other.sandbox_ip, 9))
        assert box.wait_counter("udp", before) > before
    finally:
        other.teardown()


def test_teardown_ends_open_connections_and_records_them(fake_internet: FakeInternet) -> None:
    """An allowed connection still open at teardown is cut, and its attempt is on record
    by the time teardown returns (the session's store may close right after)."""
    emit = ListEmit()
    handle = network.setup("t" + secrets.token_hex(4), SECTION, emit)
    box = Box(handle, emit, fake_internet)
    try:
        box.resolve("good.test")
        ctx = ssl.create_default_context(cafile=str(fake_internet.cert))

        def open_tls() -> ssl.SSLSocket:
            raw = socket.create_connection((GOOD_IP, 443), timeout=5)
            return ctx.wrap_socket(raw, server_hostname="good.test")

        conn = box.run(open_tls)
    finally:
        handle.teardown()
    try:
        [attempt] = emit.of_kind("net.attempt")
        assert attempt["detail"]["verdict"] == "allow" and attempt["detail"]["bytes_down"] > 0
    finally:
        conn.close()
