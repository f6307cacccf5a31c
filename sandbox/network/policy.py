"""Egress policy: allow entries, deny entries, built-in denies, and the one decision.

Pure: no sockets, no files. The gateway asks `Policy.decide` with what it saw on the wire
(name from SNI/Host or, for nameless protocols, the name the resolver handed out for the
destination IP), and the resolver asks `Policy.name_allowed` before it answers and
`Policy.answer_denied` for each address it would hand out.

Two modes share everything but the last step. Order of a decision, first match wins:
1. built-in denies on the destination IP (metadata/link-local, loopback, multicast,
   this host's own addresses and connected subnets, the veth pool, RFC1918/CGNAT LAN);
   an explicit IP/CIDR allow entry lifts only the LAN category, never the others;
2. the profile's deny list (names, IPs, CIDRs, optional ports);
3. mining protocols, always; protocols the sniffer could not name (`unknown`, `none`:
   opaque bytes, SOCKS, VPNs, server-speaks-first protocols, silent clients), always;
4. an allow entry that matches name, port and protocol, *and* the destination IP is one
   the resolver gave this sandbox for that name (no domain fronting onto other IPs);
   or an explicit IP/CIDR entry that contains the destination;
5. `allowlist`: nothing else. `guarded`: TLS and HTTP to any other name, IP and port;
   SSH (a tunnel protocol) only where step 4 allowed it, i.e. an allow entry lifts it
   for a named host and port.

Parsing one entry (`parse_rule`) and matching a name against it are in `entries`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .entries import (
    PROTOCOLS,
    IPAddr,
    IPNet,
    Rule,
    default_protocols,
    in_any,
    name_matches,
    normalize_name,
    parse_rule,
)

MODES = ("allowlist", "guarded")
# Security choice: what guarded mode relays without an allow entry. TLS and HTTP are what
# "the open internet" means to package managers, git over https, APIs and browsers, and
# they are the protocols whose first bytes name the destination (SNI, Host), so the deny
# list and the record can see it. SSH is the tunnel protocol (-R/-L/-D, ProxyJump) and
# stays off unless an allow entry names the host; everything the sniffer cannot name is
# denied in both modes (it could be anything, including a tunnel).
GUARDED_PROTOCOLS = frozenset({"tls", "http"})

# Security choice: these are denied whatever the profile says (only LAN can be lifted by
# an explicit IP entry). 169.254.169.254 is the cloud metadata service on most platforms.
BUILTIN_DENY: dict[str, tuple[str, ...]] = {
    "link-local/metadata": ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"),
    "loopback": ("127.0.0.0/8", "::1/128"),
    "unspecified": ("0.0.0.0/8", "::/128"),
    "multicast/broadcast": ("224.0.0.0/4", "240.0.0.0/4", "ff00::/8"),
    "lan": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
}


@dataclass(frozen=True)
class Decision:
    """A verdict ("allow" or "deny") and the reason recorded with it."""

    verdict: str
    reason: str
    name: str | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"


UNRESOLVED = "destination IP was not resolved for an allowed name"
FRONTING = "domain fronting: "  # reason prefix the guard's fronting rule keys on


def fronting(name: str, dst_ip: str) -> Decision:
    """The deny for an allowed name on an address the resolver never gave for it."""
    return Decision("deny", f"{FRONTING}{dst_ip} was not resolved for {normalize_name(name)}",
                    name)


class Policy:
    """The parsed allow/deny lists plus this host's addresses; `decide` is the only verdict."""

    def __init__(
        self,
        allow: Iterable[str],
        deny: Iterable[str] = (),
        protocols: Mapping[str, Iterable[str]] | None = None,
        *,
        host_networks: Iterable[str] = (),
        pool: str = "100.96.0.0/16",
        mode: str = "allowlist",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"network mode {mode!r} has no policy (one of {', '.join(MODES)})")
        self.mode = mode
        self.allow = [parse_rule(e, protocols) for e in allow]
        self.deny = [parse_rule(e, need_port=False) for e in deny]
        # Security choice: this host's addresses and connected subnets, and every other
        # session's veth, are never reachable through the gateway.
        own = [ipaddress.ip_network(n, strict=False) for n in host_networks]
        self.builtin: dict[str, list[IPNet]] = {
            "this host/its subnets": [*own, ipaddress.ip_network(pool, strict=False)],
            **{k: [ipaddress.ip_network(n) for n in v] for k, v in BUILTIN_DENY.items()},
        }

    @property
    def guarded(self) -> bool:
        return self.mode == "guarded"

    def builtin_denied(self, ip: IPAddr) -> str | None:
        """The built-in category that denies `ip`, or None."""
        for category, nets in self.builtin.items():
            if in_any(ip, nets):
                if category == "lan" and self._explicit_ip_rule(ip) is not None:
                    continue
                return category
        return None

    def _explicit_ip_rule(self, ip: IPAddr, port: int | None = None) -> Rule | None:
        for rule in self.allow:
            if rule.network is not None and in_any(ip, [rule.network]) and (
                port is None or rule.port_ok(port)
            ):
                return rule
        return None

    def name_denied(self, name: str, port: int | None = None) -> str | None:
        for rule in self.deny:
            if rule.pattern and name_matches(rule.pattern, name) and (
                port is None or rule.port_ok(port)
            ):
                return rule.text
        return None

    def name_allowed(self, name: str, port: int | None = None) -> bool:
        """May the resolver answer for `name` (allowlist: some allow entry names it;
        guarded: any name), and no deny entry denies it (on `port`, or: on every port)?"""
        if port is None:
            # A port-specific deny entry (`x.test:22`) leaves the name's other ports usable.
            if any(r.pattern and not r.ports and name_matches(r.pattern, name)
                   for r in self.deny):
                return False
        elif self.name_denied(name, port) is not None:
            return False
        if self.guarded:
            return True
        return any(r.pattern and name_matches(r.pattern, name) for r in self.allow)

    def claims_allowed(self, name: str, dst_port: int) -> bool:
        """allowlist: an allow entry names `name` (on any port) and no deny entry denies
        it on `dst_port`: a connection that says it is `name` but dials an address never
        resolved for it borrows the name's standing, fronting by IP."""
        if self.guarded or self.name_denied(name, dst_port) is not None:
            return False
        return any(r.pattern and name_matches(r.pattern, name) for r in self.allow)

    def target_allowed(self, host: str, port: int) -> bool:
        """Could a connection to `host:port` (a name or an IP literal, as written in a
        URL) be allowed at all? The guard asks, to tell an upload to an allowed host from
        one to a host the profile does not allow. Names: an allow entry for name and port
        (guarded: no deny entry), not denied; IPs: the built-in and profile denies, then
        (allowlist) an explicit IP/CIDR entry. Loopback is the jail's own (it never
        reaches the gateway), so it counts as allowed."""
        host = normalize_name(host)
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not host or self.name_denied(host, port) is not None:
                return False
            if self.guarded:
                return True
            return any(r.pattern and name_matches(r.pattern, host) and r.port_ok(port)
                       for r in self.allow)
        if ip.is_loopback:
            return True
        if self.builtin_denied(ip) is not None:
            return False
        if any(r.network is not None and in_any(ip, [r.network]) and r.port_ok(port)
               for r in self.deny):
            return False
        return self.guarded or self._explicit_ip_rule(ip, port) is not None

    def answer_denied(self, dst_ip: str) -> str | None:
        """Why the resolver must not hand out `dst_ip` (a built-in deny, or a deny CIDR on
        every port), or None. A public name pointing at the metadata service or the LAN
        (DNS rebinding) gets no answer, in either mode."""
        try:
            ip = ipaddress.ip_address(dst_ip)
        except ValueError:
            return f"not an address: {dst_ip!r}"
        category = self.builtin_denied(ip)
        if category:
            return f"built-in deny: {category}"
        for rule in self.deny:
            if rule.network is not None and not rule.ports and in_any(ip, [rule.network]):
                return f"deny entry {rule.text}"
        return None

    def proxy_denied(self, target: str) -> str | None:
        """Why an HTTP proxy request (`CONNECT host:port`, absolute URI) may not go to
        `target`, or None. Only names (a literal hides nothing but shows no name either),
        allowed as names; in guarded mode also only to ports that imply TLS or HTTP (a
        CONNECT to port 22 is an SSH tunnel) unless an allow entry names host and port."""
        host, sep, port_text = target.rpartition(":")
        if not sep:
            host, port_text = target, ""
        port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
        try:
            ipaddress.ip_address(host.strip("[]"))
            return "an IP literal target"
        except ValueError:
            pass
        if not self.name_allowed(host, port):
            return "a name not allowed"
        if self.guarded and port is not None and not default_protocols(port) & GUARDED_PROTOCOLS:
            lifted = any(r.pattern and name_matches(r.pattern, host) and r.port_ok(port)
                         for r in self.allow)
            if not lifted:
                implied = "/".join(sorted(default_protocols(port)))
                return f"port {port} ({implied}): guarded mode tunnels only tls and http"
        return None

    def precheck(self, dst_ip: str, dst_port: int, known_ips: Iterable[str]) -> Decision | None:
        """Deny before reading a byte when no name or entry could ever allow this IP."""
        ip = ipaddress.ip_address(dst_ip)
        category = self.builtin_denied(ip)
        if category:
            return Decision("deny", f"built-in deny: {category}")
        for rule in self.deny:
            if rule.network is not None and in_any(ip, [rule.network]) and rule.port_ok(dst_port):
                return Decision("deny", f"deny entry {rule.text}")
        if self.guarded:  # any other IP may be fine: the first bytes decide
            return None
        if dst_ip in set(known_ips) or self._explicit_ip_rule(ip, dst_port):
            return None
        return Decision("deny", UNRESOLVED)

    def decide(
        self,
        name: str | None,
        protocol: str,
        dst_ip: str,
        dst_port: int,
        resolved_ips_for_name: Iterable[str],
    ) -> Decision:
        """allowlist: only a matching name+port+protocol to an IP resolved for that name.
        guarded: that, or TLS/HTTP anywhere the built-in and profile denies leave open."""
        ip = ipaddress.ip_address(dst_ip)
        category = self.builtin_denied(ip)
        if category:
            return Decision("deny", f"built-in deny: {category}", name)
        for rule in self.deny:
            if rule.network is not None and in_any(ip, [rule.network]) and rule.port_ok(dst_port):
                return Decision("deny", f"deny entry {rule.text}", name)
        if name:
            denied = self.name_denied(name, dst_port)
            if denied:
                return Decision("deny", f"deny entry {denied}", name)
        if protocol == "mining":
            return Decision("deny", "mining protocol", name)
        if protocol not in PROTOCOLS:
            if self.guarded:
                return Decision(
                    "deny", f"protocol {protocol} is never allowed (guarded mode relays "
                            "tls and http; ssh only to hosts an allow entry names)", name)
            return Decision("deny", f"protocol {protocol} is never allowed", name)
        entry = self._by_entry(name, protocol, ip, dst_ip, dst_port, resolved_ips_for_name)
        if entry.allowed or not self.guarded:
            return entry
        target = normalize_name(name) if name else dst_ip
        if protocol in GUARDED_PROTOCOLS:
            return Decision("allow", f"guarded: {protocol} to {target}:{dst_port}", name)
        return Decision(
            "deny", f"guarded: {protocol} to {target}:{dst_port} is a tunnel protocol, "
                    f"allowed only by an allow entry for the host ({entry.reason})", name)

    def _by_entry(self, name: str | None, protocol: str, ip: IPAddr, dst_ip: str,
                  dst_port: int, resolved_ips_for_name: Iterable[str]) -> Decision:
        """Step 4: an allow entry (IP/CIDR, or name+port+protocol+resolved IP)."""
        ip_rule = self._explicit_ip_rule(ip, dst_port)
        if ip_rule is not None and protocol in ip_rule.protocols_for(dst_port):
            return Decision("allow", f"allow entry {ip_rule.text}", name)
        if not name:
            return Decision("deny", f"no host name in {protocol} and IP not allowed", name)
        name_rules = [r for r in self.allow if r.pattern and name_matches(r.pattern, name)]
        if not name_rules:
            return Decision("deny", f"name {normalize_name(name)} not allowed", name)
        port_rules = [r for r in name_rules if r.port_ok(dst_port)]
        if not port_rules:
            return Decision("deny", f"port {dst_port} not allowed for {name}", name)
        proto_rules = [r for r in port_rules if protocol in r.protocols_for(dst_port)]
        if not proto_rules:
            wanted = "/".join(sorted(port_rules[0].protocols_for(dst_port)))
            return Decision(
                "deny", f"protocol mismatch: {protocol} on {name}:{dst_port} (wants {wanted})",
                name,
            )
        if dst_ip not in set(resolved_ips_for_name):
            return fronting(name, dst_ip)
        return Decision("allow", f"allow entry {proto_rules[0].text}", name)
