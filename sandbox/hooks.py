"""Where the optional parts plug into a session: guard, network, cgroups, monitors.

`Session` calls these at fixed points of its lifecycle; each part stays in its own
module and the session module stays small. Every method is cheap when the part is off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .store import is_alert

if TYPE_CHECKING:
    from .jail import JailSpec
    from .result import CommandResult
    from .session import Session


class Hooks:
    """The session's extension points."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    def before_jail(self, spec: JailSpec) -> JailSpec:
        """Set up host resources the jail needs (netns, cgroup, GPU grant)."""
        return spec

    def preexec(self) -> Callable[[], None] | None:
        """Runs in the jail's child process before exec (e.g. join the cgroup)."""
        return None

    def jail_started(self, jail_pid: int) -> None:
        """The jail process exists: start watching its process tree."""

    def teardown(self) -> None:
        """Remove host resources (idempotent)."""

    def session_ended(self) -> None:
        """After the final row is written."""

    # -- evidence -----------------------------------------------------------------------

    def check_command(self, text: str) -> CommandResult | None:
        """Guard rules on the command text; a CommandResult when the command is blocked."""
        return None

    def tamper(self, kind: str, detail: dict[str, Any]) -> None:
        self.session.emit(kind, detail, severity="alert", action="flag", rule=f"tamper.{kind}")

    def on_event(self, row: dict[str, Any]) -> None:
        if is_alert(row["action"], row["severity"]):
            with self._lock:
                self._alerts.append(
                    {k: row.get(k) for k in ("kind", "rule", "action", "severity", "detail")}
                )

    def drain_alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._alerts = self._alerts, []
        return out
