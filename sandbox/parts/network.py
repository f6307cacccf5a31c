"""Egress: `none` needs nothing here (firejail --net=none); `allowlist` and `guarded`
build a netns.

Allowlist mode: a network namespace with a veth to the host, nftables redirecting every
TCP connection to the transparent gateway and DNS to the allowlisting resolver, both
running in this (the owner's) process, outside the jail. The jail is started inside the
namespace (`launch.Launch` enters it in the child, as `ip netns exec` would), so
firejail is never asked for `--netns`. Any failure is a SetupError and the session does
not start (fail closed).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..jail.firejail import JailSpec
from . import Part


class NetworkPart(Part):
    name = "network"
    handle: Any = None

    def before_jail(self, spec: JailSpec) -> JailSpec:
        section = self.session.profile.network
        if section.mode == "none":
            return spec
        from .. import network

        self.handle = network.setup(self.session.id, section, self.session.emit)
        # Recorded before the jail exists: a crash from here on leaves gc the names.
        self.session.add_resource("network", self.handle.resources)
        self.session.emit("net.setup", {
            "mode": section.mode, "netns": self.handle.netns,
            "sandbox_ip": self.handle.sandbox_ip,
            "resolver": self.handle.host_ip, "allow": section.allow, "deny": section.deny})
        return replace(spec, netns=self.handle.netns)

    def teardown(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            handle.teardown()
