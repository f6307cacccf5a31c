"""One process started by the supervisor, driven from an asyncio loop without threads.

`asyncio.create_subprocess_exec` on Python 3.11 watches each child with a thread of its
own (ThreadedChildWatcher); hundreds of sandboxes with several execs each would be
hundreds of threads. Here the exit is a `pidfd` and the pipes are non-blocking fds, all
three registered with the loop's selector: one loop thread drives every exec.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Callable

from .monitor.proctree import descendants

Sink = Callable[[bytes], None]
CHUNK = 1 << 16
PIPE_BIG = 1 << 20  # stdin's pipe for a large input (pipe-max-size's default)


class AsyncChild:
    """A `Popen` whose stdout/stderr go to `sinks` (b"" once at EOF) and whose stdin is
    fed from `write`; `wait()` is the exit status as `waitpid` says it."""

    def __init__(self, proc: subprocess.Popen[bytes], on_out: Sink, on_err: Sink,
                 pidfd: int | None = None) -> None:
        """`pidfd`: the process's, when the caller holds one that cannot be mistaken
        (ours to close); else one is opened by pid (our child: it cannot be reaped yet)."""
        self.proc = proc
        self.pid = proc.pid
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        self._eof = [self._loop.create_future(), self._loop.create_future()]
        self._pidfd = os.pidfd_open(proc.pid) if pidfd is None else pidfd
        self._loop.add_reader(self._pidfd, self._on_exit)
        # What is queued for stdin: views of the caller's bytes, not a copy (5 MB copied
        # into a fresh buffer was ~1 ms of page faults and memcpy a write_file).
        self._pending: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._grown = False
        self._stdin_close = False
        self._drained: asyncio.Future[None] | None = None
        assert proc.stdout is not None and proc.stderr is not None
        for i, (stream, sink) in enumerate(((proc.stdout, on_out), (proc.stderr, on_err))):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_read, fd, sink, self._eof[i])
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)

    # -- output -----------------------------------------------------------------------

    def _on_read(self, fd: int, sink: Sink, eof: asyncio.Future[None]) -> None:
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(fd)
            if not eof.done():
                eof.set_result(None)
        sink(chunk)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        if not self._exited.done():
            self._exited.set_result(None)

    # -- input ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue `data` for the child's stdin (dropped if it closed its end)."""
        stdin = self.proc.stdin
        if stdin is None or stdin.closed or self._stdin_close:
            return
        if not data:
            return
        first = not self._pending
        self._pending.append(memoryview(data if isinstance(data, bytes) else bytes(data)))
        self._queued += len(data)
        if self._queued > PIPE_BIG and not self._grown:
            # Tens of MiB in 64 KiB pipe refills were ~80 wakeups a 5 MB write.
            self._grown = True
            with contextlib.suppress(OSError):
                fcntl.fcntl(stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BIG)
        if first:
            self._loop.add_writer(stdin.fileno(), self._on_write)

    def close_stdin(self) -> None:
        """Close stdin once everything queued has been written."""
        self._stdin_close = True
        if not self._pending:
            self._close_stdin_now()

    async def drain(self) -> None:
        """Until what `write` queued is in the pipe (or the child closed its end)."""
        if self._pending:
            self._drained = self._drained or self._loop.create_future()
            await self._drained

    def _on_write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        head = self._pending[0]
        try:
            n = os.write(stdin.fileno(), head[:PIPE_BIG])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the program does not read it all
            self._pending.clear()
            self._queued = n = 0
        if self._pending:
            self._queued -= n
            if n == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[n:]
        if not self._pending:
            self._loop.remove_writer(stdin.fileno())
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            self._drained = None
            if self._stdin_close:
                self._close_stdin_now()

    def _close_stdin_now(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                self._loop.remove_writer(stdin.fileno())
                stdin.close()

    # -- end --------------------------------------------------------------------------

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call `fn` after `delay` seconds unless the child has exited by then."""
        def check() -> None:
            if not self._exited.done() and self.proc.poll() is None:
                fn()
        self._loop.call_soon_threadsafe(self._loop.call_later, delay, check)

    async def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative for a signal); TimeoutError after `timeout`."""
        await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        return self.proc.wait()

    async def streams_closed(self, timeout: float) -> None:
        """Until both pipes reach EOF: a background job may hold them past the exit."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._eof), timeout)

    def close(self) -> None:
        """Unregister everything from the loop and close the fds (idempotent)."""
        self._pending.clear()
        self._queued = 0
        self._close_stdin_now()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError, ValueError):
                    self._loop.remove_reader(stream.fileno())
                    stream.close()
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        for fut in (self._exited, *self._eof):
            if not fut.done():
                fut.cancel()


def session_members(sid: int) -> list[int]:
    """Host pids whose session is `sid` (the join process leads one: `Launch` calls
    setsid), detached background jobs included, which re-parent to the jail's init."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            out.append(int(entry.name))
    return out


def kill_tree(pid: int, *, root: bool = False) -> None:
    """Everything the join process `pid` started, wherever it re-parented (bounded);
    `pid` itself only when `root`. The join process is left to reap its child and exit
    with its status: killed first, it would orphan the child to a reaper outside the jail
    and the jail would show a zombie until that reaper gets round to it."""
    for _ in range(5):
        pids = set(session_members(pid))
        pids |= set(descendants(pid))
        if not root:
            pids.discard(pid)
        if not pids:
            return
        # Stop them all, then kill: nothing in the tree runs between the two, so no
        # parent sees a child die first (a shell would print "Killed" into the partial
        # output; a loop would start the next child, one more round of this).
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, sig)


async def end(child: AsyncChild, grace: float = 2.0) -> int:
    """Kill what `child` runs and collect its status; the join process itself is only
    killed if it does not exit within `grace` of its tree."""
    kill_tree(child.pid)
    try:
        return await child.wait(grace)
    except TimeoutError:
        kill_tree(child.pid, root=True)
        return await child.wait()
