"""Sandboxes on a Ray cluster: `pool` (SandboxPool: placement, warm targets, node loss),
`agent` (HostAgent, the node side), `handle` (RaySandbox, the driver side), `cluster`
(Ray itself, bundles, placement), `loss` (a lost node's sessions).

    from sandbox.ray import SandboxPool
"""

from __future__ import annotations

from .agent import HostAgent
from .handle import RaySandbox
from .loss import NodeLoss
from .pool import SandboxPool

__all__ = ["HostAgent", "NodeLoss", "RaySandbox", "SandboxPool"]
