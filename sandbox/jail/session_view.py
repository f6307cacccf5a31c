"""What the jail's runtime code (the in-jail exec helper) asks of a running session, as
a protocol below the session: the session imports the jail, never the other way round.
`parts.PartSession` extends it; a `Session` is one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..events import Emit
    from .firejail import JailSpec
    from .launch import Launch


class JailHooks(Protocol):
    """What it asks of the session's hooks (`Hooks` is one)."""

    @property
    def procs(self) -> Any: ...  # the exec monitor part: told of a join (`joining`)

    def tamper(self, kind: str, detail: dict[str, Any]) -> None: ...


class JailSession(Protocol):
    """The session as the jail's code sees it: its id, workspace, jail spec,
    environment, child-side launch steps, hooks and events."""

    @property
    def id(self) -> str: ...

    @property
    def workdir(self) -> Path: ...

    @property
    def hooks(self) -> JailHooks: ...

    @property
    def emit(self) -> Emit: ...  # records an event of this session

    def spec(self) -> JailSpec: ...

    def env(self) -> dict[str, str]: ...

    def launcher(self, ctty_fd: int | None = None) -> Launch: ...

    def join_flag(self) -> str: ...  # `--join=PID` of the live jail; SessionClosed if gone
