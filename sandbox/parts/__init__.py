"""Optional parts of a session (limits, process monitor, network, GPU, guard).

Each part is a small class with the same hook methods as `Part`; `Hooks` calls them in
order at fixed points of the session's lifecycle. A part that cannot be set up as the
profile asks raises SetupError from `before_jail`, and the session does not start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..jail import JailSpec
    from ..result import CommandResult
    from ..session import Session


class Part:
    """A no-op part; subclasses override what they need."""

    name = "part"

    def __init__(self, session: Session) -> None:
        self.session = session

    def before_jail(self, spec: JailSpec) -> JailSpec:
        return spec

    def preexec(self) -> Callable[[], None] | None:
        return None

    def jail_started(self, jail_pid: int) -> None:
        pass

    def check_command(self, text: str) -> CommandResult | None:
        return None

    def on_event(self, row: dict[str, Any]) -> None:
        pass

    def teardown(self) -> None:
        pass
