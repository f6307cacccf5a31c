"""Fast exec as a part: the session's exec helper (`sandbox.jail.fastexec`), started with the
jail when the profile's `[exec] fast` asks for it and stopped with it.

`execute` asks this part for a process (`child`); None means the joined path. Where fast
exec cannot work at all (a kernel without pidfd exit info, an image on a host that cannot
build the compiled helper) that is recorded once as info, and every exec joins. In an
image the compiled helper is bound in read-only (it is static) and run by the join.
"""

from __future__ import annotations

import asyncio
import pwd
import subprocess
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from .. import supervisor
from ..errors import SessionClosed
from ..jail import fastexec
from . import Part

if TYPE_CHECKING:
    from ..child import Sink


WAIT_S = 1.0  # the longest an exec waits for a helper still starting, then it joins


class FastExecPart(Part):
    name = "fast"
    _starting: Future[fastexec.Helper | None] | None = None

    def jail_ready(self) -> None:
        session = self.session
        if not session.profile.exec.fast or session.kind != "api":
            return
        why = fastexec.unsupported()
        at = session.image.exec_helper if session.image is not None else ""
        if why is None and session.image is not None and not at:
            why = ("a sandbox in an image needs the compiled exec helper: "
                   + fastexec.build.binary()[1])
        if why is not None:
            session.emit("exec.fast_off", {"reason": why, "alert": None})
            return
        # Off the start path: its join waits for the kernel (the cgroup attach) as long
        # as the shell's did, ~20 ms; execs before its hello join, as they would anyway.
        self._starting = supervisor.current().executor("exec helpers", 4).submit(
            self._start, at)

    def _start(self, at: str) -> fastexec.Helper | None:
        session = self.session
        agent = session.spec().agent
        try:
            shell = (session.image.shell if session.image is not None
                     else pwd.getpwuid(agent.uid).pw_shell if agent is not None else "/bin/sh")
            return fastexec.Helper(session, binary_at=at, shell=shell)
        except (OSError, KeyError, subprocess.SubprocessError, SessionClosed) as e:
            self.session.emit("exec.fast_off", {"reason": f"the helper could not start: {e}",
                                                "alert": None})
            return None

    @property
    def helper(self) -> fastexec.Helper | None:
        """The session's helper (waits for its start; tests and the bench ask)."""
        return self._starting.result() if self._starting is not None else None

    async def child(self, ex: fastexec.ExecRequest, on_out: Sink, on_err: Sink
                    ) -> fastexec.FastChild | None:
        """`ex` started through the helper, or None for the joined path."""
        starting = self._starting
        if starting is None:
            return None
        helper = await self._ready(starting)
        if helper is None:
            return None
        proc = await helper.launch(ex)
        return fastexec.FastChild(proc, on_out, on_err) if proc is not None else None

    @staticmethod
    async def _ready(starting: Future[fastexec.Helper | None]) -> fastexec.Helper | None:
        """The helper, once it said hello. An exec right after the start waits for it (up
        to WAIT_S) rather than join: a join costs as much as the rest of its start."""
        deadline = time.monotonic() + WAIT_S
        while not starting.done():
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.002)
        helper = starting.result()
        while helper is not None and helper.state == "starting" and not helper.ready():
            if time.monotonic() > deadline:
                return helper  # `launch` counts this exec as joined
            await asyncio.sleep(0.002)
        return helper

    def teardown(self) -> None:
        starting, self._starting = self._starting, None
        helper = starting.result() if starting is not None else None
        if helper is not None:  # its join ends with the jail
            helper.stop()
