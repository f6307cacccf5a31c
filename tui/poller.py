"""Store readers for the TUI's poll workers: blocking, thread-side, no Textual here.

Counters come from the sessions table (one cheap query however many events there are);
events are read incrementally by id with a limit, so a burst of thousands of events costs
a bounded amount of work per poll and never a scan of the whole history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sandbox.record import EventCursor, Store, is_alert

# Rows read per query and queries per poll: a burst is drained over a few polls at most.
BATCH = 2_000
MAX_BATCHES = 10


@dataclass(frozen=True)
class FleetSnapshot:
    """Every recent session (newest first) and the newest alerts across all of them."""

    sessions: tuple[dict[str, Any], ...]
    alerts: tuple[dict[str, Any], ...]  # newest first
    alerts_seen: int  # alerts read since the TUI started (the feed keeps only the newest)


class FleetPoller:
    """Reads the sessions table and the alert feed; keeps the newest `alert_limit` alerts."""

    def __init__(self, store: Store, *, session_limit: int = 500, alert_limit: int = 200) -> None:
        self.store = store
        self.session_limit = session_limit
        self._alerts: deque[dict[str, Any]] = deque(maxlen=alert_limit)
        # A commit-order cursor: in a fleet's store an alert committed late (a lower id
        # than alerts already read) is still read, once.
        self._cursor: EventCursor | None = None
        self._seen = 0

    def poll(self) -> FleetSnapshot:
        if self._cursor is None:
            # First poll: start from the newest alerts, not from the beginning of history.
            rows, self._cursor = self.store.events_after(
                None, alerts_only=True, limit=self._alerts.maxlen or 200, newest=True)
            self._seen += len(rows)
            self._alerts.extend(rows)
        for _ in range(MAX_BATCHES):
            rows, self._cursor = self.store.events_after(self._cursor, alerts_only=True,
                                                         limit=BATCH)
            self._seen += len(rows)
            self._alerts.extend(rows)
            if len(rows) < BATCH:
                break
        sessions = self.store.list_sessions(limit=self.session_limit)
        return FleetSnapshot(tuple(sessions), tuple(reversed(self._alerts)), self._seen)


@dataclass
class SessionDelta:
    """What changed in one session since the last poll: its row, new commands, new events."""

    session: dict[str, Any]
    commands: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def event_group(event: dict[str, Any]) -> str | None:
    """Which session-screen tab an event belongs to (alerts win over their kind)."""
    if is_alert(event["action"], event["severity"]):
        return "alerts"
    kind: str = event["kind"]
    if kind.startswith(("net.", "dns.")):
        return "network"
    if kind == "proc.exec":
        return "processes"
    if kind.startswith(("resource.", "gpu.")):
        return "resources"
    return None


class SessionPoller:
    """Tails one session: its row every poll, commands and events since the last poll."""

    def __init__(self, store: Store, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._since_seq = 0
        self._cursor: EventCursor | None = None

    def poll(self) -> SessionDelta:
        session = self.store.get_session(self.session_id)
        commands = self.store.commands(self.session_id, since_seq=self._since_seq)
        if commands:
            self._since_seq = commands[-1]["seq"]
        events: list[dict[str, Any]] = []
        for _ in range(MAX_BATCHES):
            rows, self._cursor = self.store.events_after(
                self._cursor or EventCursor(), session_id=self.session_id, limit=BATCH)
            events.extend(rows)
            if len(rows) < BATCH:
                break
        return SessionDelta(session, commands, events)
