"""The PTY processes of one OpenAI Agents session (`openai_session`): long-running
`exec_command` processes in the jail that `write_stdin` polls, with the SDK's own
bookkeeping (process ids, pruning, output collection) as `UnixLocalSandboxSession` does it.

`tty=true` runs the command under util-linux `script`, which allocates a terminal inside
the jail from its private devpts: the line discipline is genuine (Ctrl-C is SIGINT to the
foreground job, echo, isatty).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from agents.sandbox.session.pty_output import collect_pty_output
from agents.sandbox.session.pty_types import (
    PTY_PROCESSES_MAX,
    PTY_PROCESSES_WARNING,
    PtyExecUpdate,
    allocate_pty_process_id,
    process_id_to_prune_from_meta,
)

from ..doors.execute import ExecTimeout
from ..doors.spawn import Process

logger = logging.getLogger("sandbox.adapters.openai_agents")

_TERMINATE_GRACE_S = 5.0
# A terminal needs a size for full-screen programs; `script` gives its pty none.
_TTY_ROWS, _TTY_COLS = 24, 80


def tty_argv(argv: list[str]) -> list[str]:
    """`argv` on a terminal of its own (`script`). The guard unwraps `script -c` like
    `sh -c`: a blocked command comes back from spawn as PermissionError."""
    inner = f"stty rows {_TTY_ROWS} cols {_TTY_COLS} 2>/dev/null; exec {shlex.join(argv)}"
    return ["script", "-qfec", inner, "/dev/null"]


@dataclass
class PtyEntry:
    process: Process
    tty: bool
    last_used: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    output_chunks: deque[bytes] = field(default_factory=deque)
    output_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    output_notify: asyncio.Event = field(default_factory=asyncio.Event)
    output_closed: asyncio.Event = field(default_factory=asyncio.Event)
    pump_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    wait_task: asyncio.Task[None] | None = None


def watch(process: Process, tty: bool) -> PtyEntry:
    """An entry whose output and exit are collected from now on (without a terminal,
    stdin is closed, as UnixLocal's pipes)."""
    if not tty:
        process.close_stdin()
    entry = PtyEntry(process=process, tty=tty)
    entry.pump_tasks = [asyncio.create_task(_pump(entry, process.stdout)),
                        asyncio.create_task(_pump(entry, process.stderr))]
    entry.wait_task = asyncio.create_task(_watch_exit(entry))
    return entry


# The SDK's lookup (`BaseSandboxSession._resolve_pty_session_entry`): its own error.
Resolve = Callable[..., PtyEntry]


class PtyTable:
    """One session's live PTY processes by process id."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._processes: dict[int, PtyEntry] = {}
        self._reserved: set[int] = set()

    async def add(self, entry: PtyEntry) -> int:
        """Its process id; past the SDK's limit the least useful entry is terminated."""
        async with self._lock:
            process_id = allocate_pty_process_id(self._reserved)
            self._reserved.add(process_id)
            pruned = self._prune_if_needed()
            self._processes[process_id] = entry
            count = len(self._processes)
        if pruned is not None:
            await terminate(pruned)
        if count >= PTY_PROCESSES_WARNING:
            logger.warning("PTY process count reached warning threshold: %s active", count)
        return process_id

    async def get(self, session_id: int, resolve: Resolve) -> PtyEntry:
        async with self._lock:
            return resolve(pty_processes=self._processes, session_id=session_id)

    async def update(self, process_id: int, entry: PtyEntry, yield_time_ms: int,
                     max_output_tokens: int | None, *, touch: bool = False
                     ) -> PtyExecUpdate:
        """The output so far (waiting up to `yield_time_ms`); an exited process is
        removed and its id no longer live. `touch`: it was used now (pruning spares
        recently used ones)."""
        output, tokens, closed = await collect_pty_output(
            output_chunks=entry.output_chunks, output_lock=entry.output_lock,
            output_notify=entry.output_notify, is_done=entry.output_closed.is_set,
            yield_time_ms=yield_time_ms, max_output_tokens=max_output_tokens)
        if touch:
            entry.last_used = time.monotonic()
        exit_code = entry.exit_code if closed else None
        live_id: int | None = process_id
        if exit_code is not None:
            async with self._lock:
                removed = self._processes.pop(process_id, None)
                self._reserved.discard(process_id)
            if removed is not None:
                await terminate(removed)
            live_id = None
        return PtyExecUpdate(process_id=live_id, output=output, exit_code=exit_code,
                             original_token_count=tokens)

    async def terminate_all(self) -> None:
        async with self._lock:
            entries = list(self._processes.values())
            self._processes.clear()
            self._reserved.clear()
        for entry in entries:
            await terminate(entry)

    def _prune_if_needed(self) -> PtyEntry | None:
        if len(self._processes) < PTY_PROCESSES_MAX:
            return None
        meta = [(pid, e.last_used, e.output_closed.is_set())
                for pid, e in self._processes.items()]
        process_id = process_id_to_prune_from_meta(meta)
        if process_id is None:
            return None
        self._reserved.discard(process_id)
        return self._processes.pop(process_id, None)


async def _pump(entry: PtyEntry, stream: Any) -> None:
    async for chunk in stream:
        async with entry.output_lock:
            entry.output_chunks.append(chunk)
        entry.output_notify.set()


async def _watch_exit(entry: PtyEntry) -> None:
    try:
        result = await entry.process.wait()
        entry.exit_code = result.returncode
    except ExecTimeout as e:
        entry.exit_code = e.result.returncode
    except PermissionError:
        entry.exit_code = 126
    except Exception:
        logger.exception("PTY process wait failed")
        entry.exit_code = -1
    finally:
        if entry.pump_tasks:
            await asyncio.gather(*entry.pump_tasks, return_exceptions=True)
        if entry.exit_code is None:
            entry.exit_code = -1
        entry.output_closed.set()
        entry.output_notify.set()


async def terminate(entry: PtyEntry) -> None:
    """Kill the process tree and let its wait record the exec (bounded)."""
    if not entry.output_closed.is_set():
        with suppress(ProcessLookupError, OSError):
            entry.process.kill()
    if entry.wait_task is not None:
        with suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(entry.wait_task), _TERMINATE_GRACE_S)
    for task in entry.pump_tasks:
        task.cancel()
    entry.output_closed.set()
    entry.output_notify.set()

