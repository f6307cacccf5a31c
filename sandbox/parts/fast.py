"""Fast exec as a part: the session's exec helper (`sandbox.jail.fastexec`), started with the
jail when the profile's `[exec] fast` asks for it and stopped with it.

`execute` asks this part for a process (`child`); None means the joined path. Where fast
exec cannot work at all (a kernel without pidfd exit info, an image on a host that cannot
build the compiled helper) that is recorded once as info, and every exec joins. In an
image the compiled helper is bound in read-only (it is static) and run by the join.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from ..jail import fastexec
from . import Part

if TYPE_CHECKING:
    from ..child import Sink


class FastExecPart(Part):
    name = "fast"
    helper: fastexec.Helper | None = None

    def jail_ready(self) -> None:
        session = self.session
        if not session.profile.exec.fast or session.kind != "api":
            return
        why = fastexec.unsupported()
        at = session.image.exec_helper if session.image is not None else ""
        if why is None and session.image is not None and not at:
            why = ("a sandbox in an image needs the compiled exec helper: "
                   + fastexec.build.binary()[1])
        if why is None:
            try:
                self.helper = fastexec.Helper(session, binary_at=at)
            except (OSError, subprocess.SubprocessError) as e:
                why = f"the helper could not start: {e}"
        if why is not None:
            session.emit("exec.fast_off", {"reason": why, "alert": None})

    async def child(self, ex: fastexec.ExecRequest, on_out: Sink, on_err: Sink
                    ) -> fastexec.FastChild | None:
        """`ex` started through the helper, or None for the joined path."""
        if self.helper is None:
            return None
        proc = await self.helper.launch(ex)
        return fastexec.FastChild(proc, on_out, on_err) if proc is not None else None

    def teardown(self) -> None:
        helper, self.helper = self.helper, None
        if helper is not None:  # its join ends with the jail
            helper.stop()
