"""The node side of `sandbox.ray`: one `HostAgent` actor per Ray node owns that node's
sandboxes and runs every call a `RaySandbox` forwards to it.

What the driver hands an agent is its environment: the driver's `SANDBOX_*` settings
(where the one store is), never `SANDBOX_HOST_ID` (each host has its own), and at most a
template the agent turns into its own host id.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..doors.execute import ExecTimeout
from ..doors.options import SandboxSpec
from ..doors.pool import WarmPool
from ..errors import SessionClosed
from ..jail.profile import Profile
from ..result import CommandResult, ExecResult
from .cluster import ray_module

# Passed to every agent: where the one store is. Never SANDBOX_HOST_ID (each host's own).
ENV_PREFIX = "SANDBOX_"
ENV_NOT_PASSED = frozenset({"SANDBOX_HOST_ID"})
# `SandboxPool(host_id="{hostname}-{node}")`: the agent makes its own SANDBOX_HOST_ID.
HOST_ID_TEMPLATE = "SANDBOX_RAY_HOST_ID"

# What `HostAgent.call` runs by name: the file operations and the read-only checks.
FORWARDED = frozenset({"read_file", "write_file", "upload", "download", "export_tar",
                       "import_tar", "is_alive", "head_hash"})


def store_env() -> dict[str, str]:
    """The driver's `SANDBOX_*` settings the agents need to write to the same store."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(ENV_PREFIX) and k not in ENV_NOT_PASSED}


class HostAgent:
    """One per node: owns that node's sandboxes (started and closed here, as root, by this
    process's supervisor) and runs every call a `RaySandbox` forwards. Async Ray actor."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.node_id = ray_module().get_runtime_context().get_node_id()
        template = os.environ.pop(HOST_ID_TEMPLATE, "")
        if template:  # several nodes on one machine (a demo, a test): a host id each
            os.environ["SANDBOX_HOST_ID"] = template.format(
                hostname=os.uname().nodename, node=self.node_id[:8])
        self.pool = WarmPool()
        self.boxes: dict[str, Any] = {}  # id -> AsyncSandbox

    async def info(self) -> dict[str, Any]:
        from ..record import Store

        return {"node_id": self.node_id, "pid": os.getpid(), "uid": os.geteuid(),
                "host": os.uname().nodename, "store": Store().key,
                "sandboxes": sorted(self.boxes), "pool": self.pool.stats()}

    async def start(self, profile: Profile | str, spec: SandboxSpec) -> dict[str, Any]:
        """Start a sandbox on this node; its id, workspace and owner."""
        sb = await self.pool.acquire(profile, **spec)
        self.boxes[sb.id] = sb
        return {"id": sb.id, "workdir": sb.workdir, "node_id": self.node_id,
                "pid": os.getpid(), "profile": sb.profile.name}

    def _box(self, sid: str) -> Any:
        sb = self.boxes.get(sid)
        if sb is None:
            raise SessionClosed(f"sandbox {sid} is not live on node {self.node_id}")
        return sb

    async def exec(self, sid: str, cmd: list[str] | str, kw: dict[str, Any]
                   ) -> tuple[str, str, ExecResult]:
        # ExecTimeout carries its partial result; sent as a value (it does not unpickle).
        try:
            return "ok", "", await self._box(sid).exec(cmd, **kw)
        except ExecTimeout as e:
            return "timeout", str(e), e.result

    async def run(self, sid: str, command: str, timeout: float | None, check: bool
                  ) -> CommandResult:
        return await self._box(sid).run(command, timeout, check=check)  # type: ignore[no-any-return]

    async def call(self, sid: str, method: str, args: tuple[Any, ...], kw: dict[str, Any]
                   ) -> Any:
        """The file operations and is_alive, by name."""
        if method not in FORWARDED:
            raise ValueError(f"not forwarded: {method}")
        result = getattr(self._box(sid), method)(*args, **kw)
        return await result if asyncio.iscoroutine(result) else result

    async def kill(self, sid: str, reason: str) -> None:
        sb = self.boxes.pop(sid, None)
        if sb is not None:
            await sb.kill(reason)
            await self.pool.release(sb)

    async def close(self, sid: str) -> None:
        sb = self.boxes.pop(sid, None)
        if sb is not None:
            await self.pool.release(sb)

    async def shutdown(self) -> None:
        """Close every sandbox of this node (the driver then ends the actor)."""
        self.boxes.clear()
        await self.pool.close()


_AGENT: Any = None


def agent_class() -> Any:
    """`HostAgent` as a Ray actor class (made once per process)."""
    global _AGENT
    if _AGENT is None:
        _AGENT = ray_module().remote(HostAgent)
    return _AGENT
