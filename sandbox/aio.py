"""`AsyncSandbox`: the Python door for asyncio frameworks (inspect-ai, Agents SDK, RL).

    async with AsyncSandbox(profile="default", network="none") as sb:
        r = await sb.exec(["python", "-c", "print(1)"])
        await sb.write_file("a.txt", "hi")

The same surface as `Sandbox`, natively async: execs and files are driven from the
caller's loop with no thread per call (pidfd + non-blocking pipes); only start, close,
kill and the persistent shell's `run` (pexpect) go to the loop's executor.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import execute, files
from .execute import MAX_OUTPUT, Process
from .options import Network, Registry, alive, new_session
from .profile import Profile
from .result import CommandResult, ExecResult
from .store import Store

_live = Registry()
# Start, close and kill block for ~0.1 s each (fork, cgroup, firejail); their own threads,
# so a burst of starts never queues behind (or ahead of) the caller's executor work.
LIFECYCLE = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-lifecycle")
# `run` (pexpect's persistent bash) holds a thread for the command's whole duration: a
# pool wide enough that hundreds of sandboxes each running one never queue (threads are
# made on demand).
RUNS = ThreadPoolExecutor(max_workers=512, thread_name_prefix="sandbox-run")


class AsyncSandbox:
    """A jailed, recorded sandbox for asyncio code. `network`: "none", "guarded", a
    list of allowed `host:port` patterns, or a [network] table; `gpu`: a count or a
    [gpu] table; `limits`: a [limits] table (all checked like a profile file)."""

    def __init__(
        self,
        profile: Profile | str = "default",
        workdir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        *,
        network: Network = None,
        gpu: int | dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        store: Store | None = None,
        gpu_backend: Any = None,
    ) -> None:
        self._session = new_session(profile, workdir, env, store, gpu_backend,
                                    network=network, gpu=gpu, limits=limits)

    @classmethod
    def lookup(cls, sandbox_id: str) -> AsyncSandbox:
        """The live handle with this id in this process; NotFound otherwise."""
        return _live.get(sandbox_id)  # type: ignore[no-any-return]

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def state(self) -> str:
        return self._session.state

    @property
    def profile(self) -> Profile:
        return self._session.profile

    @property
    def workdir(self) -> str:
        """The workspace's path (the same inside the jail and on the host)."""
        return str(self._session.workdir)

    def is_alive(self) -> bool:
        return alive(self._session)

    async def start(self) -> AsyncSandbox:
        await asyncio.get_running_loop().run_in_executor(LIFECYCLE, self._session.start)
        _live.add(self.id, self)
        return self

    async def close(self) -> None:
        """End the sandbox (idempotent); its whole process tree dies."""
        await asyncio.get_running_loop().run_in_executor(LIFECYCLE, self._session.close)

    async def kill(self, reason: str = "killed by API") -> None:
        await asyncio.get_running_loop().run_in_executor(
            LIFECYCLE, self._session.kill, reason)

    async def run(self, command: str, timeout: float | None = None, *, check: bool = False
                  ) -> CommandResult:
        """The persistent bash (`cd` and variables persist), as `Sandbox.run`."""
        return await asyncio.get_running_loop().run_in_executor(
            RUNS, lambda: self._session.run(command, timeout, check=check))

    async def exec(
        self,
        cmd: list[str] | str,
        *,
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
        user: str | None = None,
    ) -> ExecResult:
        """A fresh process in the live jail: see `Sandbox.exec`."""
        return await execute.exec_async(
            self._session, cmd, input=input, cwd=cwd, env=env, timeout=timeout,
            max_output=max_output, user=user)

    async def spawn(
        self,
        cmd: list[str] | str,
        *,
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
        user: str | None = None,
    ) -> Process:
        """Start a process and stream it: `await p.write(b"..")`, `p.close_stdin()`,
        `async for chunk in p.stdout`, `await p.wait()` (its recorded ExecResult),
        `p.kill()`."""
        return execute.spawn_async(
            self._session, cmd, input=input, cwd=cwd, env=env, timeout=timeout,
            max_output=max_output, user=user)

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

    def head_hash(self) -> str:
        return self._session.head_hash()

    async def __aenter__(self) -> AsyncSandbox:
        return await self.start() if self._session.state == "new" else self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
