"""Egress for `allowlist` and `guarded` modes: netns + veth + nftables + gateway +
resolver, per session. The two share all the plumbing; only the policy differs
(`Policy(mode=...)`: allowlist relays what an allow entry names, guarded relays TLS and
HTTP anywhere the built-in denies, the deny list and the protocol rules leave open).

    handle = setup(session_id, profile.network, emit)   # root; fails closed
    store the JSON-able handle.resources before starting the jail, then run the jail as
        setns(<handle.netns>) and the drop to the agent user in the child, then firejail
    (`launch.Launch`; no --net: firejail inherits the namespace)
    handle.counters() -> nft drop counters; handle.teardown() at the end
    cleanup(resources) after a crash (`sandbox gc`); leftovers() lists our objects on host

`none` mode needs nothing from here (firejail --net=none).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..errors import SandboxError, SetupError
from ..events import Emit
from ..jail.profile import NetworkSection
from . import netns as _netns
from . import nft
from .gateway import Gateway
from .policy import MODES, Decision, Policy
from .resolver import Resolver, host_upstream

__all__ = [
    "Decision",
    "NetworkHandle",
    "Policy",
    "cleanup",
    "leftovers",
    "resources_for",
    "setup",
]


class NetworkHandle:
    """One session's live egress plumbing; `teardown()` removes all of it (idempotent)."""

    def __init__(self, ns: _netns.Netns, table: str, gateway: Gateway, resolver: Resolver,
                 emit: Emit) -> None:
        self.netns = ns.netns
        self.host_ip = ns.host_ip
        self.sandbox_ip = ns.sandbox_ip
        self.gateway = gateway
        self.resolver = resolver
        self.table = table
        self.resources: dict[str, Any] = {
            "key": ns.key, "netns": ns.netns, "host_if": ns.host_if, "table": table,
            "subnet": ns.subnet,
        }
        self._emit = emit
        self._lock = threading.Lock()
        self._done = False

    def counters(self) -> dict[str, int]:
        """Packets dropped so far: udp, icmp, ipv6, host (other host ports), other."""
        return nft.counters(self.table)

    def teardown(self) -> None:
        """Stop the gateway and resolver, emit final drop counters, remove netns/veth/table."""
        with self._lock:
            if self._done:
                return
            self._done = True
        counts = self.counters()
        if counts:
            self._emit("net.dropped", counts,
                       severity="warning" if any(counts.values()) else "info")
        self.gateway.close()
        self.resolver.close()
        cleanup(self.resources)


def _require(mode: str = "allowlist", euid: int | None = None) -> None:
    if (os.geteuid() if euid is None else euid) != 0:
        raise SetupError(
            f"network mode {mode} needs root (CAP_NET_ADMIN for netns, veth, nftables): "
            'run the supervisor as root, or use [network] mode = "none"'
        )
    nft.nft_binary()
    _netns.ip_binary()


def setup(session_id: str, section: NetworkSection, emit: Emit) -> NetworkHandle:
    """Build the session's allowlist or guarded egress, or raise SetupError with nothing
    left over."""
    if section.mode not in MODES:
        raise SetupError(f"network setup called for mode {section.mode!r}; only "
                         f"{' and '.join(MODES)} need it")
    _require(section.mode)
    upstream = section.upstream_dns or host_upstream()
    if section.dns and not upstream:
        raise SetupError("no upstream DNS: set [network] upstream_dns or fix /etc/resolv.conf")
    key = _netns.session_key(session_id)
    try:
        policy = Policy(section.allow, section.deny, section.protocols,
                        host_networks=_netns.host_networks(), pool=section.address_pool,
                        mode=section.mode)
    except ValueError as e:
        raise SetupError(f"[network] in the profile: {e}") from e
    ns = _netns.create(key, section.address_pool)
    table = nft.table_name(key)
    resolver = Resolver(policy, emit, upstream=upstream, address=ns.host_ip, dns=section.dns)
    gateway = Gateway(policy, resolver, emit, address=ns.host_ip)
    handle = NetworkHandle(ns, table, gateway, resolver, emit)
    try:
        resolver.start()
        gateway.start()
        nft.apply(nft.ruleset(nft.RulesetSpec(
            table=table, host_if=ns.host_if, host_ip=ns.host_ip, gateway_port=gateway.port,
            dns_udp_port=resolver.udp_port, dns_tcp_port=resolver.tcp_port,
        )))
    except BaseException as e:
        gateway.close()
        resolver.close()
        cleanup(handle.resources)
        if isinstance(e, SandboxError):
            raise
        if isinstance(e, Exception):
            raise SetupError(f"network setup failed (nothing left behind): {e}") from e
        raise
    return handle


def resources_for(session_id: str) -> dict[str, Any]:
    """The names a session's network would use: enough for `cleanup` without a record."""
    key = _netns.session_key(session_id)
    ns_name, host_if = _netns.names(key)
    return {"key": key, "netns": ns_name, "host_if": host_if, "table": nft.table_name(key)}


def cleanup(resources: dict[str, Any]) -> None:
    """Remove what `resources` names (table, netns, veth); missing pieces are fine."""
    derived = {}
    if resources.get("key"):
        derived = resources_for(str(resources["key"]))
    res = {**derived, **resources}
    errors = []
    if res.get("table"):
        try:
            nft.delete(str(res["table"]))
        except SandboxError as e:
            errors.append(str(e))
    if res.get("netns") or res.get("host_if"):
        try:
            _netns.remove(str(res.get("netns", "")), str(res.get("host_if", "")))
        except SandboxError as e:
            errors.append(str(e))
    if errors:
        raise SetupError("; ".join(errors))


def leftovers() -> list[str]:
    """Our netns, host veths and nft tables on this host: 'netns:N', 'link:N', 'nft:N'.

    The session key is the name minus its prefix (and the veth's trailing 'h'); gc compares
    keys with live sessions and passes `resources_for(key)` to `cleanup`.
    """
    return [*_netns.existing(), *(f"nft:{t}" for t in nft.tables())]
