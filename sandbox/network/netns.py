"""Per-session network namespace and veth pair, named from the session id.

    host:   sbx<key>h   <pool /30>.1   (the gateway and resolver listen here)
    netns:  sbx-<key>   eth0 <pool /30>.2, default route via .1, lo up
            /etc/netns/sbx-<key>/resolv.conf -> nameserver .1 (`ip netns exec` mounts it)

Creation is two `ip -batch` calls (host side, namespace side) under a lock so that two
sessions starting at once cannot pick the same /30. Removal works from the recorded names
alone, ignores what is already gone, and so also cleans up after a crashed owner.
IPv6 address generation is off on both ends: the sandbox has no IPv6 at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..errors import DependencyMissing, SetupError
from ..jail import launch

NETNS_PREFIX = "sbx-"
LINK_PREFIX = "sbx"
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
LOCK_FILE = Path("/run/sandbox-network.lock")


def session_key(session_id: str) -> str:
    """The id part of every name: [a-z0-9], at most 10 chars (veth names are <= 15)."""
    key = re.sub(r"[^a-z0-9]", "", session_id.lower())[:10]
    if not key:
        raise SetupError(f"session id {session_id!r} has no usable characters for a netns name")
    return key


@dataclass(frozen=True)
class Netns:
    """One session's namespace, veth names and /30."""

    key: str
    netns: str
    host_if: str
    host_ip: str
    sandbox_ip: str
    subnet: str

    @property
    def etc_dir(self) -> Path:
        return ETC_NETNS / self.netns


def names(key: str) -> tuple[str, str]:
    """(netns name, host veth name) for a session key."""
    return f"{NETNS_PREFIX}{key}", f"{LINK_PREFIX}{key}h"


def ip_binary() -> str:
    """`ip` from the trusted system PATH (root runs it: never the caller's PATH)."""
    try:
        return launch.tool("ip")
    except DependencyMissing as e:
        raise DependencyMissing(f"{e} (or use network mode none)") from None


def _ip(args: list[str], batch: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ip_binary(), *args, "-batch", "-"], input=batch, capture_output=True, text=True,
        timeout=10, check=False, env=launch.supervisor_env(),
    )


def host_networks() -> list[str]:
    """Every address of this host and its connected subnets, as CIDRs (for built-in denies)."""
    nets: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addr = a.address.split("%")[0]
            nets.append(addr)
            if a.netmask:
                with contextlib.suppress(ValueError):
                    nets.append(str(ipaddress.ip_network(f"{addr}/{a.netmask}", strict=False)))
    return nets


def _pick_subnet(key: str, pool: str) -> ipaddress.IPv4Network:
    net = ipaddress.ip_network(pool, strict=False)
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 30:
        raise SetupError(f"network address_pool {pool!r} must be an IPv4 network of /30 or larger")
    used = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET:
                ip = ipaddress.ip_address(a.address)
                if ip in net:
                    used.add(int(ip) & ~3)
    count = net.num_addresses // 4
    start = zlib.crc32(key.encode()) % count  # spread sessions; scan on from there
    for i in range(count):
        base = int(net.network_address) + 4 * ((start + i) % count)
        if base not in used:
            return ipaddress.IPv4Network((base, 30))
    raise SetupError(f"network address_pool {pool} is full: run `sandbox gc` or widen the pool")


@contextlib.contextmanager
def _pool_lock() -> Iterator[None]:
    with open(LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def create(key: str, pool: str) -> Netns:
    """Make the namespace, veth, addresses, route and resolv.conf; undo all on failure."""
    netns, host_if = names(key)
    if (NETNS_DIR / netns).exists() or Path("/sys/class/net", host_if).exists():
        raise SetupError(f"{netns} or {host_if} already exists: run `sandbox gc` and retry")
    with _pool_lock():
        subnet = _pick_subnet(key, pool)
        host_ip, sandbox_ip = str(subnet[1]), str(subnet[2])
        made = Netns(key, netns, host_if, host_ip, sandbox_ip, str(subnet))
        host = "\n".join([
            f"netns add {netns}",
            f"link add {host_if} type veth peer name eth0 netns {netns}",
            f"link set {host_if} addrgenmode none",
            f"addr add {host_ip}/30 dev {host_if}",
            f"link set {host_if} up",
        ])
        r = _ip([], host + "\n")
        if r.returncode != 0:
            remove(netns, host_if)
            raise SetupError(f"cannot create netns/veth {netns}: {r.stderr.strip()}")
    inner = "\n".join([
        "link set lo up",
        "link set eth0 addrgenmode none",
        f"addr add {sandbox_ip}/30 dev eth0",
        "link set eth0 up",
        f"route add default via {host_ip} dev eth0",
    ])
    r = _ip(["-n", netns], inner + "\n")
    if r.returncode != 0:
        remove(netns, host_if)
        raise SetupError(f"cannot configure netns {netns}: {r.stderr.strip()}")
    try:
        made.etc_dir.mkdir(parents=True, exist_ok=True)
        (made.etc_dir / "resolv.conf").write_text(
            f"# sandbox session resolver (allowlist mode)\nnameserver {host_ip}\n"
            "options timeout:2 attempts:2\n"
        )
    except OSError as e:
        remove(netns, host_if)
        raise SetupError(f"cannot write {made.etc_dir}/resolv.conf: {e}") from e
    return made


def remove(netns: str, host_if: str) -> None:
    """Delete namespace, veth and /etc/netns entry; whatever is already gone is skipped."""
    cmds = []
    if netns and (NETNS_DIR / netns).exists():
        cmds.append(f"netns del {netns}")
    if host_if and Path("/sys/class/net", host_if).exists():
        cmds.append(f"link del {host_if}")
    if cmds:
        # -force: keep going past "does not exist" (deleting the netns takes the veth too).
        _ip(["-force"], "\n".join(cmds) + "\n")
    if netns:
        shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)
    left = [p for n, p in ((netns, NETNS_DIR / netns), (host_if, Path("/sys/class/net", host_if)))
            if n and p.exists()]
    if left:
        raise SetupError(f"could not remove {', '.join(map(str, left))}; retry `sandbox gc`")


def existing() -> list[str]:
    """Our namespaces and host veths that exist now, as 'netns:NAME' / 'link:NAME'."""
    found: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        found += [f"netns:{n}" for n in sorted(os.listdir(NETNS_DIR)) if n.startswith(NETNS_PREFIX)]
    with contextlib.suppress(FileNotFoundError):
        found += [
            f"link:{n}" for n in sorted(os.listdir("/sys/class/net"))
            if re.fullmatch(rf"{LINK_PREFIX}[a-z0-9]{{1,10}}h", n)
        ]
    return found
