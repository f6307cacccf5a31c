"""Where the optional parts plug into a session: guard, network, cgroups, monitors.

`Session` calls these at fixed points of its lifecycle; each part stays in its own module
under `sandbox/parts/` and the session module stays small. Parts run in a fixed order:
limits first (the cgroup must exist before anything joins it), then the process
monitor, network, GPU, disk, the exec helper, and the guard last (it sees what the
others produce). A neighbour is reached by what it is (`hooks.procs`, `hooks.limits`),
never by a name.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .record import is_alert

if TYPE_CHECKING:
    from .jail.firejail import JailSpec
    from .parts import Part, PartSession
    from .parts.disk import DiskPart
    from .parts.fast import FastExecPart
    from .parts.guard import GuardPart
    from .parts.limits import LimitsPart
    from .parts.procs import ProcsPart
    from .result import CommandResult


log = logging.getLogger("sandbox")


class Hooks:
    """The session's extension points, fanned out to its parts."""

    def __init__(self, session: PartSession) -> None:
        self.session = session
        self._alerts: list[dict[str, Any]] = []  # seen while no result was open
        self._open: list[list[dict[str, Any]]] = []  # the open results' alert lists
        self._lock = threading.Lock()
        self._local = threading.local()  # `own_alerts`: this thread's verdicts' result
        self.parts: list[Part] = []
        # The parts a neighbour may ask for, by what they are (None until `load`, or when
        # a session runs without one): typed, so a call to a part is checked, not a
        # string lookup and a `type: ignore`.
        self.limits: LimitsPart | None = None
        self.procs: ProcsPart | None = None
        self.disk: DiskPart | None = None
        self.fast: FastExecPart | None = None
        self.guard: GuardPart | None = None

    def load(self) -> None:
        from .parts.disk import DiskPart
        from .parts.fast import FastExecPart
        from .parts.gpu import GpuPart
        from .parts.guard import GuardPart
        from .parts.limits import LimitsPart
        from .parts.network import NetworkPart
        from .parts.procs import ProcsPart

        s = self.session
        self.limits, self.procs, self.disk = LimitsPart(s), ProcsPart(s), DiskPart(s)
        self.fast, self.guard = FastExecPart(s), GuardPart(s)
        self.parts = [self.limits, self.procs, NetworkPart(s), GpuPart(s), self.disk,
                      self.fast, self.guard]

    # -- lifecycle ----------------------------------------------------------------------

    def before_jail(self, spec: JailSpec) -> JailSpec:
        """Set up host resources the jail needs (cgroup, netns, GPU grant)."""
        self.load()
        for part in self.parts:
            spec = part.before_jail(spec)
        return spec

    def cgroup_files(self) -> list[bytes]:
        """What the jail's child writes "0" to before it execs: the session's cgroup."""
        return [f for p in self.parts for f in p.cgroup_files()]

    def jail_started(self, jail_pid: int) -> None:
        for part in self.parts:
            part.jail_started(jail_pid)

    def jail_ready(self) -> None:
        for part in self.parts:
            part.jail_ready()

    def teardown(self) -> None:
        """Remove host resources, in reverse order (idempotent)."""
        for part in reversed(self.parts):
            try:
                part.teardown()
            except Exception as e:  # keep going: one stuck part must not block the rest
                log.warning("sandbox: session %s: %s teardown failed: %s",
                            self.session.id, part.name, e)

    # -- evidence -----------------------------------------------------------------------

    def check_command(self, text: str) -> CommandResult | None:
        """Guard rules on the command text; a CommandResult when the command is blocked."""
        for part in self.parts:
            blocked = part.check_command(text)
            if blocked is not None:
                return blocked
        return None

    def tamper(self, kind: str, detail: dict[str, Any]) -> None:
        # The rule is the tamper pack's (`tamper.marker_forged`); the guard judges the
        # event too, so a profile can make it kill (strict does).
        self.session.emit(kind, detail, severity="alert", action="flag",
                          rule=f"tamper.{kind.removeprefix('shell.')}")

    def on_event(self, row: dict[str, Any]) -> None:
        if is_alert(row["action"], row["severity"]):
            alert = {k: row.get(k) for k in ("kind", "rule", "action", "severity", "detail")}
            own = getattr(self._local, "box", None)
            with self._lock:
                for box in [own] if own is not None else self._open or [self._alerts]:
                    box.append(alert)
        for part in self.parts:
            part.on_event(row)

    # Which result an alert belongs to. Commands and execs run at once in one sandbox,
    # and an alert does not always say which one caused it (a connection, a cgroup
    # event), so an alert goes to every result open when it arrived, or, with none
    # open, to the next one opened: never lost, never taken by a neighbour that
    # happened to finish first (it was one shared list, drained by whoever finished).

    def open_alerts(self) -> list[dict[str, Any]]:
        """Open a result's alert list (give it back with `close_alerts`)."""
        with self._lock:
            box, self._alerts = self._alerts, []
            self._open.append(box)
        return box

    @contextlib.contextmanager
    def own_alerts(self) -> Iterator[list[dict[str, Any]]]:
        """Alerts raised on this thread meanwhile go to this list only: a command the
        guard blocks has its verdicts on its own result, not on its neighbours'."""
        box: list[dict[str, Any]] = []
        self._local.box = box
        try:
            yield box
        finally:
            self._local.box = None

    def close_alerts(self, box: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Close a result's alert list: what arrived while it was open (and before)."""
        with self._lock:
            if any(b is box for b in self._open):
                self._open = [b for b in self._open if b is not box]
            return list(box)
