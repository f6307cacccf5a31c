"""The Python API for agent frameworks.

    with Sandbox(profile="default", workdir=path) as sb:
        r = sb.run("pytest -q", timeout=600)
        r.exit_code, r.output, r.duration, r.timed_out, r.alerts

Many sandboxes may live in one process; `run` (the persistent bash) takes one command
at a time and is safe to share between threads (commands queue on a lock); `exec`, files
and `spawn` run concurrently, driven from one shared loop thread (see `loop`).
For asyncio code, `AsyncSandbox` has the same surface.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

from ..result import CommandResult, ExecResult
from . import execute, files, loop
from .exec_options import ExecOptions
from .execute import MAX_OUTPUT
from .options import Handle
from .spawn import Process, Stream, spawn_async

if TYPE_CHECKING:
    from .aio import AsyncSandbox


class Sandbox(Handle):
    """A jailed, recorded shell. Start with `with` or `.start()`; end with `.close()`.
    Settings: see `Handle`."""

    @property
    def aio(self) -> AsyncSandbox:
        """The same live sandbox with the async surface, for the async paths of a
        framework that holds a `Sandbox`: it starts and closes nothing of its own."""
        from .aio import AsyncSandbox

        return AsyncSandbox.over(self._session)

    def start(self) -> Sandbox:
        self._session.start()
        self._started()
        return self

    def run(self, command: str, timeout: float | None = None, *, check: bool = False
            ) -> CommandResult:
        """Run `command` in the sandbox's bash (state such as `cd` and variables persist).

        Never raises for a non-zero exit or a timeout unless `check=True`; raises
        SessionClosed when the session has ended (killed, exited).
        """
        return self._session.run(command, timeout, check=check)

    def exec(self, cmd: list[str] | str, /, **options: Unpack[ExecOptions]) -> ExecResult:
        """Run a fresh process in the live jail: argv (or a `sh -c` string), stdout and
        stderr apart, the exit status as the supervisor saw it (128+N for signal N; 127
        for a missing program). Options (`input`, `cwd`, `env`, `timeout`,
        `max_output`, `user`): see `ExecOptions`. Raises `ExecTimeout` (a
        `TimeoutError`) with the partial output when `timeout` passes; the whole process
        tree is killed first. A non-executable target raises PermissionError."""
        return execute.exec_sync(self._session, cmd, **options)

    def spawn(self, cmd: list[str] | str, /, **options: Unpack[ExecOptions]) -> SyncProcess:
        """Start a process and stream it: `p.write(b"..")`, `p.close_stdin()`,
        `for chunk in p.stdout`, `p.wait()` (its recorded ExecResult), `p.kill()`.
        Options: as `exec`."""
        async def start() -> Process:
            return await spawn_async(self._session, cmd, **options)

        return SyncProcess(loop.call(start()))

    @overload
    def read_file(self, path: str, text: Literal[True] = ..., *, max_bytes: int = ...
                  ) -> str: ...
    @overload
    def read_file(self, path: str, text: Literal[False], *, max_bytes: int = ...
                  ) -> bytes: ...
    def read_file(self, path: str, text: bool = True, *, max_bytes: int = MAX_OUTPUT
                  ) -> str | bytes:
        """A file as the agent sees it (hidden paths stay hidden). Raises
        FileNotFoundError, PermissionError, IsADirectoryError naming the path, and
        `files.OutputLimitExceeded` (an OSError) past `max_bytes`."""
        data = loop.call(files.read_file(self._session, path, max_bytes=max_bytes))
        return data.decode("utf-8", errors="replace") if text else data

    def write_file(self, path: str, data: str | bytes) -> None:
        """Create or replace a file as the agent user (parents created, bytes exact)."""
        files.write_file_sync(self._session, path, data)

    def upload(self, host_path: str | os.PathLike[str], path: str) -> None:
        """Copy a host file or directory into the sandbox (owned by the agent user)."""
        loop.call(files.upload(self._session, host_path, path))

    def download(self, path: str, host_path: str | os.PathLike[str]) -> None:
        """Copy a sandbox file or directory out to the host (plain files only: links,
        devices and names outside the tree are refused)."""
        loop.call(files.download(self._session, path, host_path))

    def export_tar(self, path: str = ".") -> bytes:
        """A directory of the sandbox (default: the workspace) as a tar stream."""
        return loop.call(files.export_tar(self._session, path))

    def import_tar(self, data: bytes, path: str = ".") -> None:
        """Unpack a tar stream into the sandbox (default: the workspace)."""
        loop.call(files.import_tar(self._session, data, path))

    def kill(self, reason: str = "killed by API") -> None:
        self._session.kill(reason)

    def close(self) -> None:
        self._session.close()

    def report(self) -> dict[str, Any]:
        """The per-episode verdict (see `sandbox export --format report`)."""
        from ..record.export import report

        return report(self._session.store, self.id)

    def __enter__(self) -> Sandbox:
        return self.start() if self._session.state == "new" else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncProcess:
    """`Sandbox.spawn`'s handle: the async `Process` driven from the shared loop."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc
        self.pid = proc.pid

    def write(self, data: str | bytes) -> None:
        loop.call(self._proc.write(data))

    def close_stdin(self) -> None:
        loop.loop().call_soon_threadsafe(self._proc.close_stdin)

    @property
    def stdout(self) -> Iterator[bytes]:
        return self._iterate(self._proc.stdout)

    @property
    def stderr(self) -> Iterator[bytes]:
        return self._iterate(self._proc.stderr)

    @staticmethod
    def _iterate(stream: Stream) -> Iterator[bytes]:
        it = stream.__aiter__()

        async def step() -> bytes | None:
            try:
                return await it.__anext__()
            except StopAsyncIteration:
                return None

        while (chunk := loop.call(step())) is not None:
            yield chunk

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def kill(self) -> None:
        self._proc.kill()

    def wait(self, timeout: float | None = None) -> ExecResult:
        return loop.call(self._proc.wait(timeout))
