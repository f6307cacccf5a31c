"""The main screen: the sessions table, the filter line and the alert feed."""

from __future__ import annotations

import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Label
from textual.worker import get_current_worker

from . import fmt
from .alert_feed import AlertFeed
from .host import HostedScreen
from .messages import FleetPolled
from .poller import FleetPoller, FleetSnapshot
from .sessions_table import SessionsTable


class MainScreen(HostedScreen):
    """Every live and recent session, what each runs now, and alerts as they happen."""

    BINDINGS = [
        Binding("k", "kill", "Kill"),
        Binding("K", "kill_all", "Kill all live"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("e", "export", "Export"),
        Binding("a", "focus_alerts", "Focus the alert feed", show=False),
        Binding("s", "focus_sessions", "Focus the sessions table", show=False),
    ]
    HELP_EXTRA = [
        ("enter", "", "Open the selected session (in the alert feed: the alert's session)"),
        ("tab", "", "Move between the sessions table, the alert feed and the filter"),
        ("up / down", "", "Move the selection"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = FleetSnapshot((), (), 0)
        self.query_text = ""
        self.wake = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header(icon="■")
        yield Input(placeholder="filter: id, profile, state, host (state:running, host:NAME, "
                    "live, ended)", id="filter")
        yield Label("Sessions", classes="section", id="sessions-label")
        yield SessionsTable(id="sessions")
        yield Label("Alerts, all sessions, newest first", classes="section", id="alerts-label")
        yield AlertFeed(id="alerts")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "loading…"
        self.query_one(SessionsTable).focus()
        self.host.register_wake(self.wake)
        self.poll_fleet()

    def on_unmount(self) -> None:
        self.host.unregister_wake(self.wake)
        self.wake.set()

    # -- polling ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="fleet-poll")
    def poll_fleet(self) -> None:
        """Poll the store forever (until cancelled); one merged snapshot per poll."""
        worker = get_current_worker()
        poller = FleetPoller(self.host.store)
        while not worker.is_cancelled:
            try:
                self.post_message(FleetPolled(poller.poll()))
            except Exception as e:  # a busy or broken store must not end the polling
                self.post_message(FleetPolled(self.snapshot, error=str(e)))
            self.wake.wait(self.host.poll_interval)
            self.wake.clear()

    def on_fleet_polled(self, message: FleetPolled) -> None:
        self.snapshot = message.snapshot
        self.refresh_view()
        live = sum(1 for s in self.snapshot.sessions if fmt.is_live(s))
        alerts = sum(s.get("n_alerts") or 0 for s in self.snapshot.sessions)
        sub = f"{live} live · {len(self.snapshot.sessions)} sessions · {alerts} alerts"
        hosts = {s.get("host") for s in self.snapshot.sessions}
        if len(hosts) > 1:  # a fleet's store
            sub += f" · {len(hosts)} hosts"
        if self.query_text:
            sub += f" · filter: {self.query_text}"
        if message.error:
            sub += f" · store error: {message.error}"
        self.sub_title = sub

    def refresh_view(self) -> None:
        now = self.host.clock()
        self.query_one(SessionsTable).show(self.snapshot.sessions, now, self.query_text)
        self.query_one(AlertFeed).show(self.snapshot.alerts, now)

    # -- selection ----------------------------------------------------------------------

    def selected_session(self) -> dict[str, Any] | None:
        """The session under the cursor of the focused table (the feed: the alert's)."""
        feed = self.query_one(AlertFeed)
        if feed.has_focus:
            alert = feed.selected
            if alert is None:
                return None
            return self.query_one(SessionsTable).sessions.get(alert["session_id"]) or {
                "id": alert["session_id"], "state": "?"}
        table = self.query_one(SessionsTable)
        sid = table.selected_id
        return table.sessions.get(sid) if sid else None

    @on(DataTable.RowSelected, "#sessions")
    def open_session(self, event: DataTable.RowSelected) -> None:
        sid = self.query_one(SessionsTable).selected_id
        if sid:
            self.host.open_session(sid)

    @on(DataTable.RowSelected, "#alerts")
    def open_alert(self, event: DataTable.RowSelected) -> None:
        alert = self.query_one(AlertFeed).selected
        if alert:
            self.host.open_session(alert["session_id"], tab="alerts")

    # -- actions ------------------------------------------------------------------------

    def action_kill(self) -> None:
        session = self.selected_session()
        if session is None:
            self.notify("No session selected", severity="warning")
            return
        self.host.confirm_kill(session)

    def action_kill_all(self) -> None:
        live = [s for s in self.snapshot.sessions if fmt.is_live(s)]
        self.host.confirm_kill_all(live)

    def action_export(self) -> None:
        session = self.selected_session()
        if session is None:
            self.notify("No session selected", severity="warning")
            return
        self.host.choose_export(session["id"])

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.query_one(SessionsTable).focus()

    def action_focus_alerts(self) -> None:
        self.query_one(AlertFeed).focus()

    def action_focus_sessions(self) -> None:
        self.query_one(SessionsTable).focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip()
        self.refresh_view()

    @on(Input.Submitted, "#filter")
    def filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("shown")
        self.query_one(SessionsTable).focus()
