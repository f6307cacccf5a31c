"""`spawn`: a process started in the jail and streamed while it runs (`AsyncSandbox.spawn`,
and `Sandbox.spawn` over it): its stdin written as it goes, its stdout and stderr iterated,
its result recorded like an exec's when it ends, whether or not anyone waits for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Unpack

from ..child import kill_tree
from ..result import ExecResult
from ..shell import Capture
from .exec_options import ExecOptions
from .execute import PIPE_GRACE_S, Exec, end_child, kill_child, prepare, recorder, start_child

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("sandbox")


class Stream:
    """One output stream of a spawned process: `async for chunk in stream`, or
    `await stream.read()` for everything until EOF. Chunks are bytes."""

    def __init__(self, cap: Capture) -> None:
        self._cap = cap
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._eof = False

    def feed(self, data: bytes) -> None:
        if data:
            self._cap.add(data)
        self._queue.put_nowait(data)  # b"" marks EOF

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        while not self._eof:
            chunk = await self._queue.get()
            if not chunk:
                self._eof = True
                return
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])


class Process:
    """A process spawned in the sandbox (`AsyncSandbox.spawn`): write to its stdin,
    iterate its stdout/stderr, `wait()` for its ExecResult (recorded like an exec)."""

    def __init__(self, ex: Exec) -> None:
        self._ex = ex
        self.stdout = Stream(ex.out)
        self.stderr = Stream(ex.err)

    async def _start(self) -> Process:
        ex = self._ex
        self._child = await start_child(ex, self.stdout.feed, self.stderr.feed)
        self.pid = self._child.pid
        self._timed_out = False
        if ex.preamble or ex.data:
            self._child.write(ex.preamble + ex.data)
        # Recorded when it ends whether or not anyone waits for it (a spawn dropped by
        # its caller is still a command the agent ran), and reaped.
        self._done = asyncio.ensure_future(self._run())
        self._done.add_done_callback(_log_failure)
        return self

    async def write(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._ex.data += raw
        self._child.write(raw)
        await self._child.drain()

    def close_stdin(self) -> None:
        self._child.close_stdin()

    @property
    def returncode(self) -> int | None:
        if self._done.done() and not self._done.cancelled() and not self._done.exception():
            return self._done.result().returncode
        return None

    def kill(self) -> None:
        """Kill the process and everything it started. Its join process is left a moment
        to reap it (no zombie in the jail), then killed with whatever it started since
        (a kill right after spawn can land before the program exists)."""
        kill_child(self._child)
        self._child.later(1.0, lambda: kill_tree(self.pid, root=True))

    async def wait(self, timeout: float | None = None) -> ExecResult:
        """Until it exits (killing the tree after `timeout`, then ExecTimeout); the
        result holds the output the streams were not read for, head and tail kept."""
        if timeout is not None and not self._done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
            except TimeoutError:
                self._timed_out = True
                kill_child(self._child)
                self._child.later(2.0, lambda: kill_tree(self.pid, root=True))
        return self._ex.check(await asyncio.shield(self._done))

    async def _run(self) -> ExecResult:
        """Until it exits (the spawn's own timeout kills the tree), then its record."""
        try:
            status = await self._child.wait(self._ex.timeout)
        except TimeoutError:
            self._timed_out = True
            status = await end_child(self._child)
        await self._child.streams_closed(PIPE_GRACE_S)
        self._child.close()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(recorder(), self._ex.finish, status, self._timed_out)


def _log_failure(task: asyncio.Future[ExecResult]) -> None:
    """A spawn nobody waits for must not fail unseen (nor as asyncio's "never
    retrieved" noise): its record failed, so say so."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("sandbox: a spawned process could not be recorded: %s", task.exception())


async def spawn_async(session: Session, cmd: list[str] | str,
                      **options: Unpack[ExecOptions]) -> Process:
    """Start `cmd` in the jail and hand back its streaming handle."""
    ex = prepare(session, cmd, **options)
    if isinstance(ex, ExecResult):
        raise PermissionError(f"spawn {cmd!r}: blocked by the guard: {ex.stderr.strip()}")
    return await Process(ex)._start()
