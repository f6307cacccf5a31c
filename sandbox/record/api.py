"""The event store's interface: what every backend offers (SQLite, PostgreSQL).

The record's lowest layer: it imports nothing of the backends, so every part of the
record (and `control`) can name these types without an import circle.

`Store(...)` picks the backend: a `postgresql://` URL (given, or in `SANDBOX_STORE`) opens
`record.pg.PgStore`; anything else is the SQLite file it names (default: the state dir's
`sandbox.db`). Both are `Store`s (PgStore subclasses it), so `isinstance(x, Store)` and
`store: Store` annotations hold for either; `StoreBackend` is the same surface as a
Protocol, for code that wants to accept any implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreError
from .rows import (
    Action,
    ChainRow,
    CommandRow,
    ControlRow,
    EventCursor,
    EventRow,
    FinalState,
    SessionRow,
    Severity,
)

PG_SCHEMES = ("postgresql", "postgres")


class StoreUnavailable(StoreError):
    """The store cannot be reached (a lost database connection). The session whose
    record could not be written is killed (fail closed); see `PgStore`."""


def is_pg_url(value: object) -> bool:
    return isinstance(value, str) and value.split("://", 1)[0].lower() in PG_SCHEMES \
        and "://" in value


def redact_url(url: str) -> str:
    """A database URL without its password (what may be shown, logged or keyed on)."""
    parts = urlsplit(url)
    if parts.password is None:
        netloc = parts.netloc
    else:
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}"
    query = "&".join(p for p in parts.query.split("&")
                     if p and not p.lower().startswith(("password=", "passfile=")))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class ControlListener(Protocol):
    """A channel that hears kill requests as they are made (PostgreSQL LISTEN)."""

    def wait(self, timeout: float) -> list[str]:
        """Session ids whose kill was requested since the last call; [] on timeout."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class StoreBackend(Protocol):
    """The event store's public methods, typed. Rows are `record.rows` dataclasses."""

    path: Path  # the local SQLite file (PostgreSQL: the local fallback record)
    host: str  # written into every row this object appends

    @property
    def key(self) -> str:
        """Names the database without secrets (one kill watcher per key)."""
        ...

    def reopen(self) -> StoreBackend:
        """A new connection to the same store (for another thread's long-lived use)."""
        ...

    def close(self) -> None: ...

    def elsewhere(self, session: Mapping[str, Any]) -> bool:
        """The session is owned by another host (a shared store): not ours to reap."""
        ...

    def create_session(
        self, session_id: str, *, profile: str, kind: str, workdir: str, argv: list[str],
        owner_pid: int, owner_start: str, host: str, user: str,
    ) -> None: ...

    def update_session(self, session_id: str, **values: Any) -> None: ...

    def finish_session(self, session_id: str, state: FinalState, reason: str | None = None,
                       exit_code: int | None = None) -> bool: ...

    def get_session(self, session_id: str) -> SessionRow: ...

    def list_sessions(self, *, live_only: bool = False, limit: int = 200,
                      since_updated: float = 0.0, host: str | None = None
                      ) -> list[SessionRow]: ...

    def known_hosts(self) -> list[str]: ...

    def add_command(
        self, session_id: str, *, text: str, output: str | bytes, exit_code: int | None,
        started: float, duration: float, timed_out: bool = False, truncated: bool = False,
        output_bytes: int | None = None, source: str = "api",
    ) -> CommandRow: ...

    def add_command_and_event(
        self, session_id: str, command: dict[str, Any], kind: str, detail: dict[str, Any],
    ) -> tuple[CommandRow, EventRow]: ...

    def add_event(
        self, session_id: str, kind: str, detail: dict[str, Any] | None = None, *,
        severity: Severity = "info", action: Action = "record", rule: str | None = None,
        ts: float | None = None,
    ) -> EventRow: ...

    def commands(self, session_id: str, since_seq: int = 0) -> list[CommandRow]: ...

    def events(
        self, session_id: str | None = None, since_id: int = 0, *, alerts_only: bool = False,
        limit: int = 10_000, kinds: tuple[str, ...] = (), newest: bool = False,
    ) -> list[EventRow]: ...

    def events_after(
        self, cursor: EventCursor | None = None, *, session_id: str | None = None,
        alerts_only: bool = False, limit: int = 10_000, newest: bool = False,
    ) -> tuple[list[EventRow], EventCursor]:
        """Events in commit order from `cursor` (tailing readers: `logs -f`, the TUI)."""
        ...

    def count_events(self, session_id: str, kind: str) -> int: ...

    def chain_rows(self, session_id: str) -> list[ChainRow]: ...

    def verify(self, session_id: str) -> tuple[bool, str]: ...

    def request_kill(self, session_id: str, requested_by: str) -> int: ...

    def pending_controls(self, session_id: str) -> list[ControlRow]: ...

    def pending_kills(self, session_ids: list[str]) -> list[tuple[str, str]]: ...

    def mark_controls_handled(self, session_id: str) -> None: ...

    # -- across hosts: control, heartbeats, lost connections --------------------------

    shared: bool  # several hosts write this store (PostgreSQL)

    def listener(self) -> ControlListener | None:
        """A channel that hears kill requests as they are made; None: poll instead."""
        ...

    def ended_among(self, session_ids: list[str]) -> dict[str, str]: ...

    def heartbeat(self, pid: int, owner_start: str, *, beat: float, sessions: int
                  ) -> None: ...

    def host_status(self) -> list[dict[str, Any]]: ...

    def prune_heartbeats(self, older_than: float) -> int: ...

    def replay_lost(self) -> list[str]:
        """Write sessions killed by a lost connection (recorded locally) back in."""
        ...

    def on_lost(self, session_id: str, handler: Callable[[str], None] | None) -> None:
        """Have `handler(reason)` called (on its own thread) when a write of this
        session's record fails because the store is unreachable; None forgets it."""
        ...
