"""A fake internet in the test's own network namespace, and helpers to act from a sandbox.

Safety: every address here is one this file creates, on TEST-NET-2/3 only
(198.51.100.0/24, 203.0.113.0/24). The host gets exactly two routes (203.0.113.0/24 and
198.51.100.0/25 via the fake internet) and one /30 on a veth; the finalizer removes the
routes, veth and namespace even when a test fails. The host firewall is never touched
except for the session tables `sandbox.network` creates and removes by name.

    host  tnet<r>h 198.51.100.253/30  <-->  netns tnet-<r>: eth0 198.51.100.254/30, lo:
        203.0.113.10  TLS+HTTP on 443 (cert for good.test and bad.test)
        203.0.113.22  SSH banner server on 22 and 443
        203.0.113.33  stratum pool on 3333
        203.0.113.99  HTTP on 80: stand-in for a metadata service (denied by entry)
        198.51.100.53 DNS upstream: good.test, bad.test -> .10, ssh.test -> .22,
                      pool.test -> .33, everything else NXDOMAIN
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from sandbox import network
from sandbox.events import ListEmit

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

GOOD_IP = "203.0.113.10"
SSH_IP = "203.0.113.22"
POOL_IP = "203.0.113.33"
STANDIN_IP = "203.0.113.99"
DNS_IP = "198.51.100.53"
HOST_LINK_IP = "198.51.100.253"
INET_LINK_IP = "198.51.100.254"
NAMES = {"good.test": GOOD_IP, "bad.test": GOOD_IP, "ssh.test": SSH_IP, "pool.test": POOL_IP}
ROUTES = ("203.0.113.0/24", "198.51.100.0/25")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a thread that joined `netns` (sockets it makes stay in that netns)."""
    box: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def netns_socket(netns: str, family: int = socket.AF_INET,
                 kind: int = socket.SOCK_STREAM) -> socket.socket:
    return in_netns(netns, lambda: socket.socket(family, kind))


def _serve(sock: socket.socket, handler: Callable[[socket.socket], None],
           stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        conn.settimeout(5)
        threading.Thread(target=_guarded, args=(handler, conn), daemon=True).start()


def _guarded(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    try:
        handler(conn)
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    for _ in range(64):  # bounded
        if b"\r\n\r\n" in data:
            break
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@dataclass
class FakeInternet:
    netns: str
    host_if: str
    cert: Path
    hits: dict[str, int] = field(default_factory=dict)


def _make_cert(dirpath: Path) -> tuple[Path, Path]:
    cert, key = dirpath / "cert.pem", dirpath / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=good.test", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:good.test,DNS:bad.test"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


class _UpstreamDNS(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name in NAMES and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(NAMES[name]), ttl=60))
        elif name not in NAMES:
            reply.header.rcode = 3
        return reply


@contextlib.contextmanager
def fake_internet_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeInternet]:
    """The fake internet, up until the block ends. The `fake_internet` fixture is defined
    once, in tests/conftest.py: a session fixture imported into a second conftest or test
    module is a second fixture, and a second copy would add the same host routes again."""
    tag = secrets.token_hex(3)
    netns, host_if = f"tnet-{tag}", f"tnet{tag}h"
    certdir = tmp_path_factory.mktemp("certs")
    cert, key = _make_cert(certdir)
    stop = threading.Event()
    servers: list[Any] = []
    routes_added: list[str] = []
    inet = FakeInternet(netns, host_if, cert)
    try:
        ip("netns", "add", netns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("addr", "add", f"{HOST_LINK_IP}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        for args in (["link", "set", "lo", "up"],
                     ["addr", "add", f"{INET_LINK_IP}/30", "dev", "eth0"],
                     ["link", "set", "eth0", "up"],
                     ["route", "add", "default", "via", HOST_LINK_IP],
                     *(["addr", "add", f"{a}/32", "dev", "lo"]
                       for a in (GOOD_IP, SSH_IP, POOL_IP, STANDIN_IP, DNS_IP))):
            ip("-n", netns, *args)
        for r in ROUTES:
            ip("route", "add", r, "via", INET_LINK_IP)
            routes_added.append(r)

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)

        def https(conn: socket.socket) -> None:
            with tls.wrap_socket(conn, server_side=True) as s:
                head = _read_head(s)
                sni = getattr(s, "server_hostname", None)
                inet.hits["tls"] = inet.hits.get("tls", 0) + 1
                body = b"hello from the fake internet\n" + head.split(b"\r\n")[0] + b"\n"
                if head.startswith(b"BIG"):
                    body = b"x" * (4 * 1024 * 1024)
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                          % len(body) + body)
                del sni

        def ssh(conn: socket.socket) -> None:
            conn.sendall(b"SSH-2.0-OpenSSH_9.2 fake\r\n")
            data = conn.recv(256)
            inet.hits["ssh"] = inet.hits.get("ssh", 0) + 1
            conn.sendall(b"got " + data[:64])

        def stratum(conn: socket.socket) -> None:
            conn.recv(4096)
            inet.hits["stratum"] = inet.hits.get("stratum", 0) + 1
            conn.sendall(b'{"id":1,"result":[[],"08000002",4],"error":null}\n')

        def http(conn: socket.socket) -> None:
            _read_head(conn)
            inet.hits["standin"] = inet.hits.get("standin", 0) + 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

        def listen(addr: str, port: int) -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(64)
            return s

        plan = [((GOOD_IP, 443), https), ((SSH_IP, 22), ssh), ((SSH_IP, 443), ssh),
                ((POOL_IP, 3333), stratum), ((STANDIN_IP, 80), http)]
        socks = in_netns(netns, lambda: [listen(*addr) for addr, _ in plan])
        for sock, (_, handler) in zip(socks, plan, strict=True):
            servers.append(sock)
            threading.Thread(target=_serve, args=(sock, handler, stop), daemon=True).start()

        def dns_server() -> DNSServer:
            return DNSServer(_UpstreamDNS(), address=DNS_IP, port=53,
                             logger=DNSLogger(log="-recv,-send,-request,-reply", prefix=False))

        dns = in_netns(netns, dns_server)
        dns.start_thread()
        servers.append(dns)
        yield inet
    finally:
        stop.set()
        for s in servers:
            with contextlib.suppress(Exception):
                if isinstance(s, DNSServer):
                    s.stop()
                    s.server.server_close()
                else:
                    s.close()
        for r in routes_added:
            ip("route", "del", r, "via", INET_LINK_IP, check=False)
        ip("link", "del", host_if, check=False)
        ip("netns", "del", netns, check=False)


def wait_events(emit: Any, kind: str, pred: Callable[[dict[str, Any]], bool],
                timeout: float = 5.0) -> list[dict[str, Any]]:
    """Events of `kind` whose detail satisfies `pred`, polling up to `timeout` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in emit.of_kind(kind) if pred(e["detail"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


class NetBox:
    """A live session network (`network.setup`) plus its events: what the egress and
    guarded tests drive."""

    def __init__(self, handle: network.NetworkHandle, emit: ListEmit, inet: FakeInternet):
        self.h, self.emit, self.inet = handle, emit, inet

    def run(self, fn: Callable[[], Any]) -> Any:
        return in_netns(self.h.netns, fn)

    def mark(self) -> int:
        return len(self.emit.events)

    def since(self, mark: int, kind: str, timeout: float = 5.0,
              pred: Callable[[dict[str, Any]], bool] = lambda d: True,
              count: int = 1) -> list[dict[str, Any]]:
        """Events of `kind` after `mark`, once at least `count` arrived (or on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e["detail"] for e in self.emit.events[mark:]
                     if e["kind"] == kind and pred(e["detail"])]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def resolve(self, name: str, qtype: str = "A", server: str | None = None,
                tcp: bool = False) -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        raw = self.run(lambda: q.send(server or self.h.host_ip, 53, tcp=tcp, timeout=3))
        return DNSRecord.parse(raw)

    def exec(self, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.h.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def wait_counter(self, name: str, above: int) -> int:
        deadline = time.monotonic() + 3
        while True:
            value = self.h.counters().get(name, 0)
            if value > above or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def exchange(self, ip: str, port: int, payload: bytes) -> bytes | str:
        """Send payload, return the reply, or the error's class name (a reset...)."""
        def go() -> bytes | str:
            try:
                with socket.create_connection((ip, port), timeout=5) as s:
                    s.sendall(payload)
                    return s.recv(4096)
            except OSError as e:
                return type(e).__name__

        return self.run(go)  # type: ignore[no-any-return]
