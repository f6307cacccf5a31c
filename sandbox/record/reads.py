"""Reading a record back: commands, events, and the tailing reader's cursor.

`events_after` is how a tailing reader (`logs -f`, the TUI) never misses a row: see its
docstring for why `events(since_id=...)` is not enough on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from .db import Plumbing
from .rows import CommandRow, EventCursor, EventRow


class Reads(Plumbing):
    """The `commands` and `events` tables, read."""

    def commands(self, session_id: str, since_seq: int = 0) -> list[CommandRow]:
        return [CommandRow.from_db(r) for r in self._query(
            "SELECT * FROM commands WHERE session_id=? AND seq>? ORDER BY seq",
            (session_id, since_seq),
        )]

    def events(
        self, session_id: str | None = None, since_id: int = 0, *, alerts_only: bool = False,
        limit: int = 10_000, kinds: tuple[str, ...] = (), newest: bool = False,
    ) -> list[EventRow]:
        """Events after `since_id`, oldest first; `newest=True` takes the last `limit`."""
        where, args = ["id>?"], [since_id]
        if session_id is not None:
            where.append("session_id=?")
            args.append(session_id)  # type: ignore[arg-type]
        if alerts_only:
            where.append("(action != 'record' OR severity IN ('alert','critical'))")
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)  # type: ignore[arg-type]
        order = "DESC" if newest else "ASC"
        rows = self._query(
            f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?",
            (*args, limit),
        )
        if newest:
            rows.reverse()
        return [EventRow.from_db(r) for r in rows]

    def events_after(
        self, cursor: EventCursor | None = None, *, session_id: str | None = None,
        alerts_only: bool = False, limit: int = 10_000, newest: bool = False,
    ) -> tuple[list[EventRow], EventCursor]:
        """Events a tailing reader has not had yet, and where it is now: pass the cursor
        back next time. Unlike `events(since_id=...)`, no row is missed when a writer
        that took a lower id commits after a higher one (PostgreSQL assigns ids at
        insert, not at commit): rows of transactions that were still running at the last
        read are read again and the new ones returned ("late" rows come first).
        `newest` (first read only): start from the newest `limit` rows, not history."""
        where, args = ["1=1"], []
        if session_id is not None:
            where.append("session_id=?")
            args.append(session_id)
        if alerts_only:
            where.append("(action != 'record' OR severity IN ('alert','critical'))")
        cond = " AND ".join(where)
        since = cursor.id if cursor is not None else 0
        late: list[dict[str, Any]] = []
        with self._snapshot() as db:
            xmin = self._watermark(db)  # first: the snapshot every query below shares
            if cursor is None and newest:
                rows = db.all(f"SELECT * FROM events WHERE {cond} ORDER BY id DESC LIMIT ?",
                              (*args, limit))
                rows.reverse()
            else:
                rows = db.all(f"SELECT * FROM events WHERE {cond} AND id > ? ORDER BY id "
                              "LIMIT ?", (*args, since, limit))
            top = max(since, rows[-1]["id"] if rows else 0)
            seen: frozenset[int] = frozenset()
            if xmin is not None:
                low = cursor.xmin if cursor is not None and cursor.xmin is not None else xmin
                recent = db.all(f"SELECT * FROM events WHERE {cond} AND tx >= ? AND id <= ? "
                                "ORDER BY id LIMIT 100000", (*args, low, top))
                if cursor is not None and cursor.xmin is not None:
                    late = [r for r in recent
                            if r["id"] <= since and r["id"] not in cursor.seen]
                seen = frozenset(int(r["id"]) for r in recent if int(r["tx"]) >= xmin)
        out = [EventRow.from_db(r) for r in (*late, *rows)]
        return out, EventCursor(top, xmin, seen)

    def count_events(self, session_id: str, kind: str) -> int:
        rows = self._query("SELECT count(*) AS n FROM events WHERE session_id=? AND kind=?",
                           (session_id, kind))
        return int(rows[0]["n"])
