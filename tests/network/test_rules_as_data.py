"""The nftables ruleset text, the scan detector and the DNS-tunnel detector, as data."""

from __future__ import annotations

import re

from sandbox.events import ListEmit
from sandbox.network import nft
from sandbox.network.resolver import TunnelDetector
from sandbox.network.scans import SCAN_TARGETS, ScanDetector

SPEC = nft.RulesetSpec(table="sbx_abc123", host_if="sbxabc123h", host_ip="100.96.0.1",
                       gateway_port=40001, dns_udp_port=40002, dns_tcp_port=40003)


def rules() -> list[str]:
    return [line.strip() for line in nft.ruleset(SPEC).splitlines()]


def test_one_table_named_for_the_session_and_no_flush() -> None:
    """Only our own table is created; nothing flushes or deletes anything else."""
    text = nft.ruleset(SPEC)
    assert text.startswith("table inet sbx_abc123 {")
    assert len(re.findall(r"^table ", text, re.M)) == 1
    assert "flush" not in text and "delete" not in text


def test_every_rule_keys_on_the_session_veth() -> None:
    """No rule can catch host traffic that did not come from this session's veth."""
    body = [r for r in rules() if r and not r.startswith(("table", "chain", "type", "counter",
                                                          "}"))]
    assert body and all(r.startswith(('iifname "sbxabc123h"', 'oifname "sbxabc123h"'))
                        for r in body)


def test_redirects() -> None:
    """DNS (udp/tcp 53, to any address) goes to the resolver, every other TCP to the gateway."""
    r = rules()
    udp53 = r.index('iifname "sbxabc123h" udp dport 53 redirect to :40002')
    tcp53 = r.index('iifname "sbxabc123h" tcp dport 53 redirect to :40003')
    tcp = r.index('iifname "sbxabc123h" meta l4proto tcp redirect to :40001')
    assert udp53 < tcp and tcp53 < tcp


def test_drops_are_counted() -> None:
    """IPv6, other UDP, ICMP and anything else are dropped with a named counter."""
    r = rules()
    for proto in ("ipv6", "udp", "icmp", "other", "host"):
        assert f"counter drop_{proto} {{ }}" in r
    assert 'iifname "sbxabc123h" meta nfproto ipv6 counter name drop_ipv6 drop' in r
    assert 'iifname "sbxabc123h" meta l4proto udp counter name drop_udp drop' in r
    assert 'iifname "sbxabc123h" meta l4proto icmp counter name drop_icmp drop' in r


def test_host_reachable_only_on_two_ports() -> None:
    """Input from the sandbox: gateway and resolver ports on the veth address, else drop."""
    r = rules()
    chain = r[r.index("chain input {"):]
    accepts = [x for x in chain[: chain.index("}")] if x.endswith("accept")]
    assert accepts == [
        'iifname "sbxabc123h" ip daddr 100.96.0.1 tcp dport { 40001, 40003 } accept',
        'iifname "sbxabc123h" ip daddr 100.96.0.1 udp dport 40002 accept',
    ]
    assert 'iifname "sbxabc123h" counter name drop_host drop' in chain


def test_nothing_forwarded() -> None:
    r = rules()
    chain = r[r.index("chain forward {"):]
    assert 'iifname "sbxabc123h" counter name drop_other drop' in chain
    assert 'oifname "sbxabc123h" drop' in chain


def test_ruleset_parses() -> None:
    """`nft -c` (check only, nothing applied) accepts the text."""
    import subprocess

    r = subprocess.run(["nft", "-c", "-f", "-"], input=nft.ruleset(SPEC), text=True,
                       capture_output=True, timeout=10, check=False)
    assert r.returncode == 0, r.stderr


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_scan_is_one_event_with_counts() -> None:
    """50 denied ports in a burst make one net.scan (rate-limited), with counts."""
    emit, clock = ListEmit(), Clock()
    det = ScanDetector(emit, clock)
    for port in range(1, 51):
        det.denied("203.0.113.10", port)
        clock.t += 0.01
    scans = emit.of_kind("net.scan")
    assert len(scans) == 1
    assert scans[0]["detail"]["distinct_targets"] == SCAN_TARGETS
    assert scans[0]["detail"]["hosts"] == 1 and scans[0]["action"] == "flag"


def test_slow_denials_are_not_a_scan() -> None:
    emit, clock = ListEmit(), Clock()
    det = ScanDetector(emit, clock)
    for port in range(1, 51):
        det.denied("203.0.113.10", port)
        clock.t += 5
    assert emit.of_kind("net.scan") == []


def test_dns_tunnel_shapes() -> None:
    """Long labels, high entropy, many unique subdomains, TXT floods: flagged, rate-limited."""
    emit, clock = ListEmit(), Clock()
    det = TunnelDetector(emit, clock)
    det.observe("files.pythonhosted.org", "A")
    det.observe("pypi.org", "A")
    assert emit.of_kind("dns.tunnel") == []
    for i in range(10):
        det.observe(f"{'a1b2c3d4e5' * 5}{i}.tunnel.test", "A")
    tunnels = emit.of_kind("dns.tunnel")
    assert len(tunnels) == 1 and "long label" in tunnels[0]["detail"]["reason"]
    det.observe("k8f3jq9zx2m4v7p1w6r5t0y.other.test", "A")
    assert "high-entropy" in emit.of_kind("dns.tunnel")[-1]["detail"]["reason"]
    for i in range(40):
        det.observe(f"w{i}.many.test", "A")
    assert any("unique subdomains" in e["detail"]["reason"] for e in emit.of_kind("dns.tunnel"))
    for i in range(25):
        det.observe(f"t{i}.txt.test", "TXT")
    assert any("TXT flood" in e["detail"]["reason"] for e in emit.of_kind("dns.tunnel"))
