"""What a command returns to the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CommandResult:
    """The result of `Sandbox.run`.

    `output` is stdout and stderr interleaved as the terminal saw them, decoded as UTF-8
    (undecodable bytes replaced). `exit_code` is None when the command did not finish
    (timed out and the shell had to be killed, or the session ended under it).
    """

    exit_code: int | None
    output: str
    duration: float
    timed_out: bool = False
    truncated: bool = False
    blocked: bool = False
    alerts: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""
    seq: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.blocked


@dataclass(frozen=True)
class ExecResult:
    """What one exec did. `stdout`/`stderr` are UTF-8 (invalid bytes replaced); the
    exact bytes are in `stdout_bytes`/`stderr_bytes`."""

    returncode: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    duration: float
    timed_out: bool = False
    truncated: bool = False
    blocked: bool = False
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")
