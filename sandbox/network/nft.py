"""The per-session nftables table: built as text by a pure function, applied atomically.

One table per session (`table inet sbx_<id>`), found and removed by name only: the host's
own ruleset is never listed for rewriting, flushed or touched. Everything the sandbox sends
enters the host on the session's host-side veth, so every rule keys on that interface:

- prerouting (filter, before NAT): IPv6, ICMP, UDP other than 53 and any other protocol
  are dropped and counted; TCP and DNS go on;
- prerouting (NAT): UDP/TCP 53 to any address -> the resolver, every other TCP -> the
  gateway (both listen on the host end of the veth; the original destination stays in
  conntrack for SO_ORIGINAL_DST);
- input: only the resolver and gateway ports on the host veth address; the rest of the
  host is unreachable (dropped, counted);
- forward: nothing from or to the sandbox is ever forwarded (ip_forward is not changed;
  this holds even if someone else turns it on).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from ..errors import DependencyMissing, SetupError
from ..jail import launch

TABLE_PREFIX = "sbx_"
COUNTERS = ("udp", "icmp", "ipv6", "host", "other")


@dataclass(frozen=True)
class RulesetSpec:
    """What the ruleset needs: names, the host veth address, and the listening ports."""

    table: str
    host_if: str
    host_ip: str
    gateway_port: int
    dns_udp_port: int
    dns_tcp_port: int


def table_name(session_key: str) -> str:
    return f"{TABLE_PREFIX}{session_key}"


def ruleset(spec: RulesetSpec) -> str:
    """The nft script that creates the session's table (no flush of anything else)."""
    i = f'iifname "{spec.host_if}"'
    o = f'oifname "{spec.host_if}"'
    counters = "\n".join(f"  counter drop_{c} {{ }}" for c in COUNTERS)
    return f"""table inet {spec.table} {{
{counters}

  chain filter_pre {{
    type filter hook prerouting priority mangle; policy accept;
    {i} meta nfproto ipv6 counter name drop_ipv6 drop
    {i} meta l4proto tcp accept
    {i} udp dport 53 accept
    {i} meta l4proto udp counter name drop_udp drop
    {i} meta l4proto icmp counter name drop_icmp drop
    {i} counter name drop_other drop
  }}

  chain nat_pre {{
    type nat hook prerouting priority dstnat; policy accept;
    {i} udp dport 53 redirect to :{spec.dns_udp_port}
    {i} tcp dport 53 redirect to :{spec.dns_tcp_port}
    {i} meta l4proto tcp redirect to :{spec.gateway_port}
  }}

  chain input {{
    type filter hook input priority filter; policy accept;
    {i} ip daddr {spec.host_ip} tcp dport {{ {spec.gateway_port}, {spec.dns_tcp_port} }} accept
    {i} ip daddr {spec.host_ip} udp dport {spec.dns_udp_port} accept
    {i} counter name drop_host drop
  }}

  chain forward {{
    type filter hook forward priority filter; policy accept;
    {i} counter name drop_other drop
    {o} drop
  }}
}}
"""


def nft_binary() -> str:
    """`nft` from the trusted system PATH (root runs it: never the caller's PATH)."""
    try:
        return launch.tool("nft")
    except DependencyMissing:
        raise DependencyMissing(
            "nft not found: apt-get install nftables (or use network mode none)"
        ) from None


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nft_binary(), *args], input=stdin, capture_output=True, text=True, timeout=10,
        check=False, env=launch.supervisor_env(),
    )


def apply(text: str) -> None:
    """Load a ruleset script atomically (`nft -f -`: all of it or nothing)."""
    r = _run(["-f", "-"], text)
    if r.returncode != 0:
        raise SetupError(f"nftables rejected the session ruleset: {r.stderr.strip()}")


def delete(table: str) -> None:
    """Remove one table by name; a table that is already gone is fine."""
    r = _run(["delete", "table", "inet", table])
    if r.returncode != 0 and "No such file" not in r.stderr:
        raise SetupError(f"cannot delete nft table inet {table}: {r.stderr.strip()}")


def tables(prefix: str = TABLE_PREFIX) -> list[str]:
    """Names of inet tables starting with `prefix` (ours; nothing else is ever touched)."""
    r = _run(["list", "tables", "inet"])
    if r.returncode != 0:
        return []
    names = [line.split()[-1] for line in r.stdout.splitlines() if line.startswith("table inet")]
    return [n for n in names if n.startswith(prefix)]


def counters(table: str) -> dict[str, int]:
    """Dropped packets per counter of one session table (empty when it is gone)."""
    r = _run(["-j", "list", "counters", "table", "inet", table])
    if r.returncode != 0:
        return {}
    out: dict[str, int] = {}
    for item in json.loads(r.stdout).get("nftables", []):
        c = item.get("counter")
        if c and c.get("name", "").startswith("drop_"):
            out[c["name"][5:]] = int(c.get("packets", 0))
    return out
