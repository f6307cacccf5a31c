"""The driver side of one sandbox in `sandbox.ray`: `RaySandbox`, the `AsyncSandbox`
surface with every call forwarded to the `HostAgent` of the sandbox's node.

The handle does not know the pool's class: it asks its owner (an `Owner`, which
`SandboxPool` is) to re-read node liveness when the agent vanishes, and to forget it when
it ends, so the arrows run pool -> handle only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..doors.execute import ExecTimeout
from ..errors import SessionClosed
from ..result import CommandResult, ExecResult
from .cluster import pgs, ray_module

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup


class Owner(Protocol):
    """What a `RaySandbox` needs of the pool that placed it."""

    async def _check_nodes(self) -> None:
        """Read node liveness now (a vanished agent may be a dead node)."""

    def _forget(self, sb: RaySandbox) -> None:
        """Drop an ended sandbox from the live set and free its slot."""


class RaySandbox:
    """A sandbox on some node of the cluster: the `AsyncSandbox` surface (exec, files, run,
    kill, close), each call forwarded to the node's agent. Host paths (`upload`,
    `download`) are paths on the sandbox's node; `export_tar`/`import_tar` carry bytes."""

    def __init__(self, pool: Owner, agent: Any, node_id: str, info: dict[str, Any],
                 pg: PlacementGroup, resources: dict[str, float]) -> None:
        self._pool = pool
        self._agent = agent
        self._pg: PlacementGroup | None = pg
        self.id: str = info["id"]
        self.node_id = node_id
        self.workdir: str = info["workdir"]
        self.owner_pid: int = info["pid"]
        self.profile_name: str = info["profile"]
        self.resources = resources
        self.state = "running"
        self.reason: str | None = None

    def __repr__(self) -> str:
        return f"RaySandbox({self.id} on {self.node_id[:12]}, {self.state})"

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the agent's `method` for this sandbox, errors as the sandbox raises them."""
        if self.state != "running":
            raise SessionClosed(f"sandbox {self.id} is {self.state}: {self.reason or ''}")
        rx = ray_module().exceptions
        try:
            return await getattr(self._agent, method).remote(self.id, *args)
        except rx.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (rx.RayActorError, rx.ActorUnavailableError) as e:
            await self._pool._check_nodes()
            raise SessionClosed(f"sandbox {self.id} on node {self.node_id} is gone: "
                                f"{self.reason or e}") from None

    async def exec(self, cmd: list[str] | str, **kw: Any) -> ExecResult:
        """As `AsyncSandbox.exec` (input, cwd, env, timeout, max_output, user)."""
        kind, msg, result = await self._call("exec", cmd, kw)
        if kind == "timeout":
            raise ExecTimeout(msg, result)
        return result  # type: ignore[no-any-return]

    async def run(self, command: str, timeout: float | None = None, *, check: bool = False
                  ) -> CommandResult:
        return await self._call("run", command, timeout, check)  # type: ignore[no-any-return]

    async def read_file(self, path: str, text: bool = True, **kw: Any) -> str | bytes:
        return await self._fwd("read_file", path, text, **kw)  # type: ignore[no-any-return]

    async def write_file(self, path: str, data: str | bytes) -> None:
        await self._fwd("write_file", path, data)

    async def upload(self, host_path: str | os.PathLike[str], path: str) -> None:
        await self._fwd("upload", os.fspath(host_path), path)

    async def download(self, path: str, host_path: str | os.PathLike[str]) -> None:
        await self._fwd("download", path, os.fspath(host_path))

    async def export_tar(self, path: str = ".") -> bytes:
        return await self._fwd("export_tar", path)  # type: ignore[no-any-return]

    async def import_tar(self, data: bytes, path: str = ".") -> None:
        await self._fwd("import_tar", data, path)

    async def is_alive(self) -> bool:
        if self.state != "running":
            return False
        try:
            return bool(await self._fwd("is_alive"))
        except SessionClosed:
            return False

    async def _fwd(self, method: str, *args: Any, **kw: Any) -> Any:
        return await self._call("call", method, args, kw)

    async def kill(self, reason: str = "killed by API") -> None:
        """End it now (recorded as killed with `reason`) and free its slot."""
        await self._end(lambda: self._agent.kill.remote(self.id, reason), "killed", reason)

    async def close(self) -> None:
        """End it (idempotent) and free its slot."""
        await self._end(lambda: self._agent.close.remote(self.id), "exited", "closed")

    async def _end(self, call: Callable[[], Any], state: str, reason: str) -> None:
        if self.state == "running":
            self.state, self.reason = state, reason
            rx = ray_module().exceptions
            with contextlib.suppress(rx.RayActorError, rx.ActorUnavailableError):
                await call()
        self._pool._forget(self)

    def _free_slot(self) -> None:
        if self._pg is not None:
            pg, self._pg = self._pg, None
            with contextlib.suppress(Exception):
                pgs().remove_placement_group(pg)

    async def __aenter__(self) -> RaySandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
