"""Row 4: egress through the gateway vs direct over a veth, to the same local server.

The bench makes its own server: a network namespace `sbxb-<id>` with a veth to the host on
203.0.113.200/30 (TEST-NET-3; host .201, server .202), a python server in it, and removes
both at the end. Nothing outside this machine is ever contacted. The same client script
measures connect latency (connect + the server's first byte) and bulk throughput, once
from the host (direct) and once inside an allowlist sandbox (through the gateway).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import uuid

from sandbox import Sandbox

from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable
from .netcheck import allowlist_profile, check_isolated, network_problem

PY = "/usr/bin/python3"  # readable by the agent user inside the jail
# The link is a /30 on the host; the server sits behind it on the netns' loopback, so it
# is not on one of the host's own subnets (which the gateway always denies).
HOST_IP, LINK_IP, SERVER_IP = "203.0.113.201", "203.0.113.202", "198.51.100.77"
BULK_PORT, CONNECT_PORT = 5201, 5202

SERVER = """
import os, signal, socket, threading
signal.alarm({life})
def serve(port, payload):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{ip}", port)); s.listen(128)
    while True:
        c, _ = s.accept()
        try:
            c.recv(4096)  # the client's request line: the gateway decides on first bytes
            if payload:
                buf = bytes(1 << 20); left = payload
                while left > 0: left -= c.send(buf[:min(left, len(buf))])
            else: c.send(b"!")
        except OSError: pass
        c.close()
threading.Thread(target=serve, args=({bulk}, {nbytes}), daemon=True).start()
serve({conn}, 0)
"""

CLIENT = """
import json, socket, time
ip, k = "{ip}", {k}
# An HTTP request first, as real clients send: the gateway reads the first bytes to decide
# (a server-speaks-first stream would be "unknown" and denied). Same client for direct.
REQ = ("GET / HTTP/1.0\\r\\nHost: " + ip + "\\r\\n\\r\\n").encode()
lat = []
for _ in range(k):
    t0 = time.perf_counter()
    s = socket.create_connection((ip, {conn}), timeout=5); s.sendall(REQ); s.recv(1); s.close()
    lat.append(time.perf_counter() - t0)
tput = []
for _ in range({reps}):
    t0 = time.perf_counter(); s = socket.create_connection((ip, {bulk}), timeout=10); got = 0
    s.sendall(REQ)
    while True:
        b = s.recv(1 << 20)
        if not b: break
        got += len(b)
    s.close(); tput.append(got / 1e6 / (time.perf_counter() - t0))
print("EGRESS_JSON " + json.dumps({{"connect": lat, "bulk": tput}}))
"""


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=30)


def _wait_listening(ip: str, port: int, timeout: float = 10.0) -> None:
    dl = Deadline(timeout)
    while dl.left():
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the bench's server on {ip}:{port} did not come up in {timeout:.0f}s")


def _parse(text: str) -> dict[str, list[float]]:
    for line in text.splitlines():
        if line.startswith("EGRESS_JSON "):
            data: dict[str, list[float]] = json.loads(line.split(" ", 1)[1])
            return data
    raise RuntimeError("client printed no result: " + text[-300:])


def run(ctx: Ctx) -> Row:
    row = Row("egress", "Egress through the gateway vs direct (local server, veth)")
    goal_c = Goal("<= +1 ms per connect", lambda v: v <= 1.0, on="value")
    goal_t = Goal(">= 50 % of direct", lambda r: r >= 50.0)
    why = network_problem()
    if why is not None:
        row.add(unavailable("connect latency: extra through the gateway", "ms", why, goal=goal_c))
        row.add(unavailable("bulk throughput through the gateway", "MB/s", why, goal=goal_t))
        return row
    prof = allowlist_profile(
        ctx, f'{SERVER_IP}:{BULK_PORT}", "{SERVER_IP}:{CONNECT_PORT}')
    try:  # cheap check first: does an allowlist session start, in its own netns?
        with Sandbox(profile=str(prof), workdir=ctx.workspace()) as sb:
            why = check_isolated(sb)
    except Exception as e:
        why = f"allowlist session fails to start: {type(e).__name__}: {e}"
    if why is not None:
        row.add(unavailable("connect latency: extra through the gateway", "ms", why, goal=goal_c))
        row.add(unavailable("bulk throughput through the gateway", "MB/s", why, goal=goal_t))
        return row
    tag = uuid.uuid4().hex[:6]
    ns, host_if, srv_if = f"sbxb-{tag}", f"sbxbh{tag}", f"sbxbs{tag}"
    nbytes = 200_000_000 if not ctx.quick else 20_000_000
    k, reps = ctx.reps(200, 30), ctx.reps(5, 2)
    client = CLIENT.format(ip=SERVER_IP, k=k, reps=reps, conn=CONNECT_PORT, bulk=BULK_PORT)
    server: subprocess.Popen[bytes] | None = None
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", srv_if)
        _sh("ip", "link", "set", srv_if, "netns", ns)
        _sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{LINK_IP}/30", "dev", srv_if)
        _sh("ip", "-n", ns, "link", "set", srv_if, "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", ns, "addr", "add", f"{SERVER_IP}/32", "dev", "lo")
        _sh("ip", "-n", ns, "route", "add", "default", "via", HOST_IP)
        # Removed with host_if when the veth goes (its nexthop device disappears).
        _sh("ip", "route", "add", f"{SERVER_IP}/32", "via", LINK_IP)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, PY, "-c", SERVER.format(
                life=300, ip=SERVER_IP, bulk=BULK_PORT, conn=CONNECT_PORT, nbytes=nbytes)])
        _wait_listening(SERVER_IP, CONNECT_PORT)
        p = subprocess.run([PY, "-c", client], capture_output=True, text=True, timeout=120,
                           check=False)
        direct = _parse(p.stdout + p.stderr)
        with Sandbox(profile=str(prof), workdir=ctx.workspace()) as sb:
            iso = check_isolated(sb)
            if iso:
                raise RuntimeError(iso)
            ws = sb._session.workdir
            (ws / "egress_client.py").write_text(client)
            r = sb.run(f"{PY} egress_client.py", timeout=180)
            gated = _parse(r.output)
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as e:
        why = f"{type(e).__name__}: {e}"
        row.add(unavailable("connect latency: extra through the gateway", "ms", why, goal=goal_c))
        row.add(unavailable("bulk throughput through the gateway", "MB/s", why, goal=goal_t))
        return row
    finally:
        if server is not None:
            server.kill()
            server.wait()
        with contextlib.suppress(Exception):
            _sh("ip", "netns", "del", ns)
        with contextlib.suppress(Exception):
            _sh("ip", "link", "del", host_if)
    d_conn = stat([v * 1000 for v in direct["connect"]])
    g_conn = stat([v * 1000 for v in gated["connect"]])
    row.add(Line("connect + first byte, direct", "ms", d_conn))
    row.add(Line("connect + first byte, through the gateway", "ms", g_conn,
                 baseline="connect + first byte, direct"))
    extra = stat([g - d_conn.median for g in (v * 1000 for v in gated["connect"])])
    row.add(Line("connect latency: extra through the gateway", "ms", extra, goal=goal_c))
    row.add(Line("bulk throughput, direct", "MB/s", stat(direct["bulk"])))
    row.add(Line("bulk throughput through the gateway", "MB/s", stat(gated["bulk"]),
                 baseline="bulk throughput, direct", ratio_kind="%", goal=goal_t))
    return row
