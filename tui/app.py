"""The operator TUI: `SandboxApp` and `run()` (what `sandbox tui` calls).

Screens: MainScreen (sessions + alert feed) -> SessionScreen (one session), plus modals
for kill confirmation, export and full command output, and `?` for help. Polling,
kills and exports run in thread workers and post messages back (see messages.py).
This module imports the screens; they reach the app only through `host.ScreenHost`,
which `SandboxApp` satisfies, so no screen imports this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from sandbox.record import Store
from sandbox.textsafe import visible

from . import fmt
from .actions import export_session, kill_many
from .confirm import ConfirmModal
from .export_modal import ExportModal
from .help_screen import HelpScreen
from .main_screen import MainScreen
from .messages import ExportDone, KillsDone
from .output_modal import OutputModal
from .session_screen import SessionScreen


class SandboxApp(App[int]):
    """Live sessions, alerts and a kill switch over one event store."""

    TITLE = "sandbox"
    CSS_PATH = ["app.tcss", "session.tcss", "modals.tcss"]
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        store: Store | None = None,
        poll_interval: float = 0.25,
        *,
        clock: Callable[[], float] = time.time,
        export_dir: Path | str | None = None,
    ) -> None:
        super().__init__()
        self.store = store if store is not None else Store()
        self.poll_interval = poll_interval
        self.clock = clock
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self._wakes: set[threading.Event] = set()
        self._wakes_lock = threading.Lock()
        self.last_kill_results: dict[str, str] = {}

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    # -- pollers ------------------------------------------------------------------------

    def register_wake(self, event: threading.Event) -> None:
        with self._wakes_lock:
            self._wakes.add(event)

    def unregister_wake(self, event: threading.Event) -> None:
        with self._wakes_lock:
            self._wakes.discard(event)

    def wake_pollers(self) -> None:
        """Poll now instead of at the next tick (after a kill, say)."""
        with self._wakes_lock:
            for event in self._wakes:
                event.set()

    # -- navigation ---------------------------------------------------------------------

    def open_session(self, session_id: str, tab: str = "commands") -> None:
        self.push_screen(SessionScreen(session_id, tab=tab))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(help_sections()))

    # -- kill ---------------------------------------------------------------------------

    def confirm_kill(self, session: dict[str, Any]) -> None:
        """Ask, then kill one session (the same path as `sandbox kill ID`)."""
        sid = session["id"]
        if not fmt.is_live(session):
            self.notify(f"Session {sid} is already {session['state']}", severity="warning")
            return
        body = visible(f"profile {session.get('profile')} · "
                       f"{session.get('n_commands', 0)} commands"
                       f" · now: {session.get('current_command') or '-'}")

        def done(ok: bool | None) -> None:
            if ok:
                self.kill([sid])

        self.push_screen(ConfirmModal(f"Kill session {sid} and all its processes?", body),
                         done)

    def confirm_kill_all(self, live: list[dict[str, Any]]) -> None:
        """Ask, naming how many, then kill every live session."""
        if not live:
            self.notify("No live sessions", severity="warning")
            return
        ids = [s["id"] for s in live]
        n = len(ids)
        shown = " ".join(ids[:8]) + (f" … and {n - 8} more" if n > 8 else "")

        def done(ok: bool | None) -> None:
            if ok:
                self.kill(ids)

        self.push_screen(ConfirmModal(
            f"Kill all {n} live session{'s' if n != 1 else ''}?", shown,
            confirm_label=f"Kill {n}"), done)

    @work(thread=True, group="kill")
    def kill(self, session_ids: list[str]) -> None:
        results = kill_many(self.store, session_ids)
        self.wake_pollers()
        self.post_message(KillsDone(results))

    def on_kills_done(self, message: KillsDone) -> None:
        self.last_kill_results = dict(message.results)
        for sid, state in message.results.items():
            bad = state != "killed"
            self.notify(f"{sid}: {state}", title="Kill", severity="error" if bad else "information")

    # -- export -------------------------------------------------------------------------

    def choose_export(self, session_id: str) -> None:
        def done(fmt_name: str | None) -> None:
            if fmt_name:
                self.export(session_id, fmt_name)

        self.push_screen(ExportModal(session_id), done)

    @work(thread=True, group="export")
    def export(self, session_id: str, fmt_name: str) -> None:
        try:
            path = export_session(self.store, session_id, fmt_name, self.export_dir or Path.cwd())
        except Exception as e:
            self.post_message(ExportDone(session_id, None, str(e)))
        else:
            self.post_message(ExportDone(session_id, str(path)))

    def on_export_done(self, message: ExportDone) -> None:
        if message.error:
            self.notify(f"Export of {message.session_id} failed: {message.error}",
                        severity="error")
        else:
            self.notify(f"Exported {message.session_id} to {message.path}", title="Export")


def help_sections() -> list[tuple[str, Iterable[BindingType]]]:
    """Every key of every screen, from the screens' own bindings (so none is forgotten)."""
    return [
        ("Everywhere", SandboxApp.BINDINGS),
        ("Sessions (main screen)", [*MainScreen.BINDINGS, *MainScreen.HELP_EXTRA]),
        ("Session screen", [*SessionScreen.BINDINGS, *SessionScreen.HELP_EXTRA]),
        ("Command output", OutputModal.BINDINGS),
        ("Kill confirmation", [*ConfirmModal.BINDINGS, ("enter", "", "Press the focused button")]),
        ("Export", ExportModal.BINDINGS),
        ("Help", HelpScreen.BINDINGS),
    ]


def run() -> int:
    """Run the TUI on the default store (SANDBOX_STATE_DIR); the exit status."""
    result = SandboxApp().run()
    return int(result or 0)
