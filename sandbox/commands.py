"""One command in a session's recorded shell (`Session.run`), from the guard's look at
its text to its result: the shell runs it, the record gets its exact bytes, what the
shell reported of tampering becomes alerts, and the limits and the exec monitor have
their say before the result is handed back. The session decides what an ended shell
means for itself (see `Session._run`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .parts import PartSession
from .result import CommandResult
from .shell import Shell

if TYPE_CHECKING:
    from .hooks import Hooks
    from .shell.collect import RawResult


class CommandSession(PartSession, Protocol):
    """What a command uses of its session (a `Session` is one): what its parts see, and
    its state, its hooks whole, and the limits' look at a finished command."""

    @property
    def state(self) -> str: ...

    @property
    def hooks(self) -> Hooks: ...

    def limits_finished(self, command: str, exit_code: int | None, output: str,
                        truncated: bool, output_bytes: int) -> None: ...


def run(session: CommandSession, shell: Shell, command: str, timeout: float,
        box: list[dict[str, Any]]) -> tuple[CommandResult, RawResult | None]:
    """The command's result, and the shell's raw one (None: the guard blocked it)."""
    blocked = session.hooks.check_command(command)
    if blocked is not None:
        return blocked, None
    session.store.update_session(session.id, current_command=command[:500])
    raw = shell.run(command, timeout)
    if raw.background_bytes:
        # Background jobs wrote between commands: kept, attributed to this command.
        session.emit("shell.background_output", {
            "output": raw.background.decode("utf-8", errors="replace"),
            "bytes": raw.background_bytes,
            "truncated": raw.background_bytes > len(raw.background),
            "before_command": command[:200]})
    output = raw.output.decode("utf-8", errors="replace")
    row = session.store.add_command(  # the exact bytes: binary output is kept losslessly
        session.id, text=command, output=raw.output, exit_code=raw.exit_code,
        started=raw.started,
        duration=raw.duration, timed_out=raw.timed_out, truncated=raw.truncated,
        output_bytes=raw.output_bytes, source="api",
    )
    _tamper(session, command, raw, row["seq"])
    session.limits_finished(command, raw.exit_code, output, raw.truncated, raw.output_bytes)
    procs = session.hooks.procs
    if procs is not None:  # L6: this command's exec verdicts belong to its result
        procs.settle()
    alerts = session.hooks.close_alerts(box)
    return CommandResult(
        exit_code=raw.exit_code, output=output, duration=raw.duration,
        timed_out=raw.timed_out, truncated=raw.truncated, alerts=alerts,
        command=command, seq=row["seq"],
    ), raw


def _tamper(session: CommandSession, command: str, raw: RawResult, seq: int) -> None:
    """What the shell saw of tampering with its record: alerts (a critical flag for the
    recorder's own hooks)."""
    for marker in raw.forged:
        session.hooks.tamper("shell.marker_forged", {
            "marker": marker.decode(errors="replace"), "command": command[:500]})
    for kind, detail in raw.tamper:
        detail = {**detail, "command": command[:500], "seq": seq}
        if kind == "shell.recorder_hooks":
            session.emit(kind, detail, severity="critical", action="flag",
                         rule="tamper.recorder_hooks")
        else:
            session.hooks.tamper(kind, detail)
    if raw.shell_exited and session.state == "running" and not raw.timed_out \
            and raw.exit_code is None and not Shell.is_exit_command(command):
        # The shell ended without an end marker on a command that is not `exit`.
        session.hooks.tamper("shell.marker_missing", {"command": command[:500]})
