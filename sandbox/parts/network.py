"""Egress: `none` needs nothing here (firejail --net=none); `allowlist` builds a netns."""

from __future__ import annotations

from ..jail import JailSpec
from . import Part


class NetworkPart(Part):
    name = "network"

    def before_jail(self, spec: JailSpec) -> JailSpec:
        if self.session.profile.network.mode == "none":
            return spec
        from ..errors import SetupError

        raise SetupError("allowlist networking is not available in this build; use mode none")
