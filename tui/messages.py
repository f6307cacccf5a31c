"""Messages the TUI's workers post back to the UI thread: small dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from .poller import FleetSnapshot, SessionDelta


@dataclass
class FleetPolled(Message):
    """One poll of every session and the alert feed (a full snapshot, so bursts merge)."""

    snapshot: FleetSnapshot
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        # Each snapshot is complete: a newer one makes any queued older one useless.
        return isinstance(message, FleetPolled)


@dataclass
class SessionPolled(Message):
    """New rows of one session since the last poll (a delta: never merged or dropped)."""

    delta: SessionDelta


@dataclass
class KillsDone(Message):
    """Kill requests finished: session id -> final state ('pending' or an error text)."""

    results: dict[str, str]


@dataclass
class ExportDone(Message):
    """An export finished (path) or failed (error)."""

    session_id: str
    path: str | None
    error: str | None = None
