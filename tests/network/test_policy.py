"""Policy: parsing allow/deny entries and the one decision (pure, no sockets)."""

from __future__ import annotations

import pytest

from sandbox.network.entries import default_protocols, name_matches, parse_rule
from sandbox.network.policy import Policy

HOST_NETS = ["198.51.100.253", "198.51.100.252/30"]


def policy(allow: list[str], deny: list[str] = (), protocols: dict[str, list[str]] | None = None) -> Policy:  # type: ignore[assignment]
    return Policy(allow, deny, protocols, host_networks=HOST_NETS)


def guarded(allow: list[str] = (), deny: list[str] = (), protocols: dict[str, list[str]] | None = None) -> Policy:  # type: ignore[assignment]
    return Policy(allow, deny, protocols, host_networks=HOST_NETS, mode="guarded")


def test_port_implies_protocol() -> None:
    """443 means tls, 80 http, 22 ssh, anything else tls or http."""
    assert default_protocols(443) == {"tls"}
    assert default_protocols(80) == {"http"}
    assert default_protocols(22) == {"ssh"}
    assert default_protocols(8443) == {"tls", "http"}


def test_parse_entries() -> None:
    """Entries carry host pattern or network, ports and per-port protocols."""
    r = parse_rule("github.com:443,22")
    assert r.pattern == "github.com" and r.ports == {443, 22}
    assert r.protocols_for(443) == {"tls"} and r.protocols_for(22) == {"ssh"}
    r = parse_rule("*.PythonHosted.org:443")
    assert r.pattern == "*.pythonhosted.org"
    r = parse_rule("203.0.113.0/28:443")
    assert r.network is not None and r.pattern is None
    r = parse_rule("git.example.org:8443", {"git.example.org": ["ssh"]})
    assert r.protocols_for(8443) == {"ssh"}


@pytest.mark.parametrize("bad", ["pypi.org", "pypi.org:0", "pypi.org:x", "a*b.org:443",
                                 "*.:443", "exa mple.org:443"])
def test_bad_entries_rejected(bad: str) -> None:
    """Missing/bad ports and malformed patterns are errors, not silently ignored."""
    with pytest.raises(ValueError):
        parse_rule(bad)


def test_unknown_protocol_rejected() -> None:
    with pytest.raises(ValueError, match="unknown"):
        parse_rule("a.org:443", {"a.org": ["ftp"]})


def test_wildcards() -> None:
    """*.x matches subdomains at any depth, never the apex or look-alikes."""
    assert name_matches("*.pythonhosted.org", "files.pythonhosted.org")
    assert name_matches("*.pythonhosted.org", "a.b.pythonhosted.org.")
    assert not name_matches("*.pythonhosted.org", "pythonhosted.org")
    assert not name_matches("*.pythonhosted.org", "evilpythonhosted.org")
    assert name_matches("pypi.org", "PyPI.org.")
    assert not name_matches("pypi.org", "pypi.org.evil.com")


def test_allows_only_name_port_protocol_and_resolved_ip() -> None:
    """Allow needs all four: name, port, protocol, and an IP the resolver handed out."""
    p = policy(["good.test:443", "ssh.test:443,22"])
    ok = p.decide("good.test", "tls", "203.0.113.10", 443, {"203.0.113.10"})
    assert ok.allowed and "good.test:443" in ok.reason
    assert "not allowed" in p.decide("bad.test", "tls", "203.0.113.10", 443, set()).reason
    assert "port 8443" in p.decide("good.test", "tls", "203.0.113.10", 8443, {"203.0.113.10"}).reason
    mismatch = p.decide("ssh.test", "ssh", "203.0.113.22", 443, {"203.0.113.22"})
    assert not mismatch.allowed and "protocol mismatch" in mismatch.reason
    assert p.decide("ssh.test", "ssh", "203.0.113.22", 22, {"203.0.113.22"}).allowed
    fronted = p.decide("good.test", "tls", "203.0.113.50", 443, {"203.0.113.10"})
    assert not fronted.allowed and "not resolved" in fronted.reason


def test_ip_literals_only_when_written() -> None:
    """No name (TLS without SNI, bare IP) is denied unless an IP/CIDR entry says so."""
    p = policy(["good.test:443"])
    assert not p.decide(None, "tls", "203.0.113.10", 443, set()).allowed
    assert p.precheck("203.0.113.7", 443, set()) is not None
    p = policy(["203.0.113.0/28:443"])
    assert p.precheck("203.0.113.7", 443, set()) is None
    assert p.decide(None, "tls", "203.0.113.7", 443, set()).allowed
    assert not p.decide(None, "tls", "203.0.113.7", 80, set()).allowed
    assert not p.decide(None, "ssh", "203.0.113.7", 443, set()).allowed


def test_mining_and_unknown_never_allowed() -> None:
    p = policy(["good.test:443", "203.0.113.0/24:3333"])
    d = p.decide("good.test", "mining", "203.0.113.10", 443, {"203.0.113.10"})
    assert not d.allowed and d.reason == "mining protocol"
    assert not p.decide(None, "mining", "203.0.113.33", 3333, set()).allowed
    assert not p.decide("good.test", "unknown", "203.0.113.10", 443, {"203.0.113.10"}).allowed


def test_deny_list_wins() -> None:
    """A deny entry beats any allow entry, by name (with optional port) or by CIDR."""
    p = policy(["*.example.test:443", "203.0.113.0/24:443"],
               deny=["evil.example.test", "203.0.113.64/26", "x.example.test:443"])
    assert p.decide("a.example.test", "tls", "203.0.113.10", 443, {"203.0.113.10"}).allowed
    assert not p.decide("evil.example.test", "tls", "203.0.113.10", 443, {"203.0.113.10"}).allowed
    assert not p.decide("x.example.test", "tls", "203.0.113.10", 443, {"203.0.113.10"}).allowed
    assert not p.decide(None, "tls", "203.0.113.70", 443, set()).allowed
    assert not p.name_allowed("evil.example.test")
    assert p.name_allowed("b.example.test")


@pytest.mark.parametrize("ip,category", [
    ("169.254.169.254", "link-local/metadata"),
    ("169.254.1.1", "link-local/metadata"),
    ("127.0.0.1", "loopback"),
    ("224.0.0.251", "multicast/broadcast"),
    ("10.1.2.3", "lan"),
    ("172.16.5.4", "lan"),
    ("192.168.1.1", "lan"),
    ("198.51.100.253", "this host/its subnets"),
    ("100.96.0.1", "this host/its subnets"),
])
def test_builtin_denies_beat_patterns(ip: str, category: str) -> None:
    """Metadata, link-local, loopback, multicast, LAN, this host: denied even when the
    resolver handed the IP out for an allowed name (checked as data, never live)."""
    p = policy(["good.test:80", "good.test:443"])
    d = p.decide("good.test", "http", ip, 80, {ip})
    assert not d.allowed and category in d.reason
    assert p.precheck(ip, 80, {ip}) is not None


def test_explicit_ip_lifts_only_lan() -> None:
    """An explicit LAN entry (an internal mirror) works; metadata/loopback never do."""
    p = policy(["10.9.0.0/16:443", "169.254.169.254:80", "127.0.0.1:80"])
    assert p.decide(None, "tls", "10.9.1.1", 443, set()).allowed
    assert not p.decide(None, "http", "169.254.169.254", 80, set()).allowed
    assert not p.decide(None, "http", "127.0.0.1", 80, set()).allowed


def test_port_specific_deny_leaves_the_name_resolvable() -> None:
    """`x.test:22` denies port 22 only: the name still resolves, its port 443 works."""
    p = policy(["x.example.test:443,22"], deny=["x.example.test:22"])
    assert p.name_allowed("x.example.test")
    assert not p.name_allowed("x.example.test", 22)
    assert p.decide("x.example.test", "tls", "203.0.113.10", 443, {"203.0.113.10"}).allowed
    assert not p.decide("x.example.test", "ssh", "203.0.113.10", 22, {"203.0.113.10"}).allowed


def test_unknown_mode_has_no_policy() -> None:
    with pytest.raises(ValueError, match="mode"):
        Policy([], mode="open")


# -- guarded mode ----------------------------------------------------------------------


def test_guarded_allows_tls_and_http_anywhere() -> None:
    """Any name, any port, an IP literal, an IP the resolver never gave out: allowed."""
    p = guarded()
    assert p.guarded and not policy([]).guarded
    ok = p.decide("anything.example", "tls", "203.0.113.10", 443, set())
    assert ok.allowed and ok.reason == "guarded: tls to anything.example:443"
    assert p.decide("api.example", "http", "203.0.113.10", 8080, set()).allowed
    assert p.decide(None, "tls", "203.0.113.10", 443, set()).allowed
    assert p.decide(None, "http", "198.51.100.7", 80, set()).allowed
    assert p.precheck("203.0.113.77", 9999, set()) is None  # the first bytes decide
    # The same calls in allowlist mode are all denied.
    a = policy([])
    assert not a.decide("anything.example", "tls", "203.0.113.10", 443, set()).allowed
    assert a.precheck("203.0.113.77", 9999, set()) is not None


def test_guarded_resolves_any_name_but_denied_ones() -> None:
    p = guarded(deny=["bad.test", "*.blocked.test", "half.test:22"])
    assert p.name_allowed("never-listed.example")
    assert not p.name_allowed("bad.test") and not p.name_allowed("a.b.blocked.test")
    assert p.name_allowed("half.test") and not p.name_allowed("half.test", 22)
    assert not policy([]).name_allowed("never-listed.example")


@pytest.mark.parametrize("ip,category", [
    ("169.254.169.254", "link-local/metadata"),
    ("127.0.0.1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.251", "multicast/broadcast"),
    ("10.1.2.3", "lan"),
    ("172.16.5.4", "lan"),
    ("192.168.1.1", "lan"),
    ("100.64.0.1", "lan"),
    ("198.51.100.253", "this host/its subnets"),
    ("100.96.0.1", "this host/its subnets"),
])
def test_guarded_keeps_builtin_denies(ip: str, category: str) -> None:
    """Open internet is not the inside: the built-in denies hold in guarded mode, before
    a byte is read, and the resolver will not hand these addresses out."""
    p = guarded()
    for proto in ("tls", "http"):
        d = p.decide("public.example", proto, ip, 443, {ip})
        assert not d.allowed and category in d.reason
    pre = p.precheck(ip, 443, set())
    assert pre is not None and category in pre.reason
    answer = p.answer_denied(ip)
    assert answer is not None and category in answer


def test_guarded_deny_list_wins() -> None:
    p = guarded(deny=["bad.test", "*.blocked.test", "203.0.113.64/26", "203.0.113.10:8443"])
    assert "deny entry bad.test" in p.decide("bad.test", "tls", "203.0.113.10", 443, set()).reason
    assert not p.decide("x.blocked.test", "http", "203.0.113.10", 80, set()).allowed
    assert not p.decide(None, "tls", "203.0.113.70", 443, set()).allowed
    assert p.precheck("203.0.113.70", 443, set()) is not None
    assert not p.decide("ok.test", "tls", "203.0.113.10", 8443, set()).allowed
    assert p.decide("ok.test", "tls", "203.0.113.10", 443, set()).allowed
    assert p.answer_denied("203.0.113.70") == "deny entry 203.0.113.64/26"
    assert p.answer_denied("203.0.113.10") is None  # a port-specific entry: still resolves


def test_guarded_denies_ssh_unless_an_entry_lifts_it() -> None:
    """SSH is the tunnel protocol: denied by default, on any port, by name or IP; an allow
    entry lifts it for that host and port only (and only to an IP resolved for it)."""
    p = guarded()
    d = p.decide("git.example", "ssh", "203.0.113.22", 22, {"203.0.113.22"})
    assert not d.allowed and "tunnel protocol" in d.reason
    assert not p.decide(None, "ssh", "203.0.113.22", 443, set()).allowed
    p = guarded(["ssh.test:22", "git.example:443"], protocols={"git.example": ["ssh"]})
    assert p.decide("ssh.test", "ssh", "203.0.113.22", 22, {"203.0.113.22"}).allowed
    assert not p.decide("ssh.test", "ssh", "203.0.113.22", 2222, {"203.0.113.22"}).allowed
    assert not p.decide("other.test", "ssh", "203.0.113.22", 22, {"203.0.113.22"}).allowed
    fronted = p.decide("ssh.test", "ssh", "203.0.113.50", 22, {"203.0.113.22"})
    assert not fronted.allowed and "not resolved" in fronted.reason
    assert p.decide("git.example", "ssh", "203.0.113.9", 443, {"203.0.113.9"}).allowed
    # An entry adds, never narrows: TLS still goes anywhere.
    assert p.decide("git.example", "tls", "203.0.113.9", 8443, set()).allowed
    # An explicit IP entry lifts SSH to that address too.
    assert guarded(["203.0.113.22:22"]).decide(None, "ssh", "203.0.113.22", 22, set()).allowed


@pytest.mark.parametrize("protocol", ["mining", "unknown", "none"])
def test_guarded_denies_mining_and_opaque_protocols(protocol: str) -> None:
    """Stratum always; bytes the sniffer cannot name (SOCKS, VPNs, raw shells, a client
    that sends nothing) too, even to a host an entry names."""
    p = guarded(["pool.test:3333", "203.0.113.0/24:3333"])
    d = p.decide("pool.test", protocol, "203.0.113.33", 3333, {"203.0.113.33"})
    assert not d.allowed
    assert d.reason == "mining protocol" if protocol == "mining" else "never allowed" in d.reason


def test_guarded_proxy_targets() -> None:
    """CONNECT through a proxy: names only, not denied, and not to an SSH port unless an
    entry lifts it (CONNECT host:22 is an SSH tunnel)."""
    p = guarded(["git.example:22"], deny=["bad.test"])
    assert p.proxy_denied("any.example:443") is None
    assert p.proxy_denied("any.example:8080") is None
    assert "ssh" in (p.proxy_denied("any.example:22") or "")
    assert p.proxy_denied("git.example:22") is None
    assert p.proxy_denied("bad.test:443") is not None
    assert p.proxy_denied("203.0.113.5:443") is not None
    assert policy(["good.test:443"]).proxy_denied("any.example:443") is not None
