"""`AsyncSandbox`: the Python door for asyncio frameworks (inspect-ai, Agents SDK, RL).

    async with AsyncSandbox(profile="default", network="none") as sb:
        r = await sb.exec(["python", "-c", "print(1)"])
        await sb.write_file("a.txt", "hi")

The same surface as `Sandbox`, natively async: execs and files are driven from the
caller's loop with no thread per call (pidfd + non-blocking pipes); only start, close,
kill and the persistent shell's `run` (pexpect) go to threads of their own.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Unpack, overload

from .. import supervisor
from ..result import CommandResult, ExecResult
from . import execute, files, spawn
from .exec_options import ExecOptions
from .execute import MAX_OUTPUT
from .options import Handle
from .spawn import Process


def _lifecycle() -> ThreadPoolExecutor:
    """Start, close and kill block for ~0.1 s each (fork, cgroup, firejail): threads of
    their own, so a burst of starts never queues behind (or ahead of) the caller's
    executor work."""
    return supervisor.current().executor("lifecycle", 4)


def _runs() -> ThreadPoolExecutor:
    """`run` (pexpect's persistent bash) holds a thread for the command's whole
    duration: a pool wide enough that hundreds of sandboxes each running one never queue
    (threads are made on demand)."""
    return supervisor.current().executor("run", 512)


class AsyncSandbox(Handle):
    """A jailed, recorded sandbox for asyncio code: the same surface as `Sandbox`, with
    its constructor's settings (see `Handle`)."""

    async def start(self) -> AsyncSandbox:
        await asyncio.get_running_loop().run_in_executor(_lifecycle(), self._session.start)
        self._started()
        return self

    async def close(self) -> None:
        """End the sandbox (idempotent); its whole process tree dies."""
        await asyncio.get_running_loop().run_in_executor(_lifecycle(), self._session.close)

    async def kill(self, reason: str = "killed by API") -> None:
        await asyncio.get_running_loop().run_in_executor(
            _lifecycle(), self._session.kill, reason)

    async def run(self, command: str, timeout: float | None = None, *, check: bool = False
                  ) -> CommandResult:
        """The persistent bash (`cd` and variables persist), as `Sandbox.run`."""
        return await asyncio.get_running_loop().run_in_executor(
            _runs(), lambda: self._session.run(command, timeout, check=check))

    async def exec(self, cmd: list[str] | str, /, **options: Unpack[ExecOptions]
                   ) -> ExecResult:
        """A fresh process in the live jail: see `Sandbox.exec` (options: `ExecOptions`)."""
        return await execute.exec_async(self._session, cmd, **options)

    async def spawn(self, cmd: list[str] | str, /, **options: Unpack[ExecOptions]
                    ) -> Process:
        """Start a process and stream it: `await p.write(b"..")`, `p.close_stdin()`,
        `async for chunk in p.stdout`, `await p.wait()` (its recorded ExecResult),
        `p.kill()`. Options: as `exec`."""
        return await spawn.spawn_async(self._session, cmd, **options)

    @overload
    async def read_file(self, path: str, text: Literal[True] = ..., *,
                        max_bytes: int = ...) -> str: ...
    @overload
    async def read_file(self, path: str, text: Literal[False], *,
                        max_bytes: int = ...) -> bytes: ...
    async def read_file(self, path: str, text: bool = True, *,
                        max_bytes: int = MAX_OUTPUT) -> str | bytes:
        """See `Sandbox.read_file`."""
        data = await files.read_file(self._session, path, max_bytes=max_bytes)
        return data.decode("utf-8", errors="replace") if text else data

    async def write_file(self, path: str, data: str | bytes) -> None:
        await files.write_file(self._session, path, data)

    async def upload(self, host_path: str | os.PathLike[str], path: str) -> None:
        """Copy a host file or directory into the sandbox (owned by the agent user)."""
        await files.upload(self._session, host_path, path)

    async def download(self, path: str, host_path: str | os.PathLike[str]) -> None:
        """Copy a sandbox file or directory out to the host (plain files only)."""
        await files.download(self._session, path, host_path)

    async def export_tar(self, path: str = ".") -> bytes:
        """A directory of the sandbox (default: the workspace) as a tar stream."""
        return await files.export_tar(self._session, path)

    async def import_tar(self, data: bytes, path: str = ".") -> None:
        """Unpack a tar stream into the sandbox (default: the workspace)."""
        await files.import_tar(self._session, data, path)

    async def __aenter__(self) -> AsyncSandbox:
        return await self.start() if self._session.state == "new" else self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
