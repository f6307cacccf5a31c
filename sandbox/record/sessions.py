"""A session's row: created, updated as it runs, finished once, found by id or prefix.

The row is the session's summary and its chain's head (`last_seq`, `head_hash`: written
by `appends`); the counters the TUI reads cheaply live here too. A final state is final:
nothing here reopens a finished row.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..errors import NotFound
from ..textsafe import storable, visible
from .db import Plumbing
from .rows import SessionRow
from .schema import FINAL_STATES, SESSION_UPDATABLE

MAX_ID_LEN = 64
_ID_CHARS = re.compile(r"[A-Za-z0-9_.-]+")  # what an exact id may hold (ours are hex)
_HEX = re.compile(r"[0-9a-f]+")  # what a prefix may hold: ids are token_hex


def check_session_id(session_id: str) -> None:
    """Refuse, in one line, what cannot be a session id (empty, huge, odd characters)."""
    if not session_id:
        raise NotFound("no session id given: pass an id, or a unique prefix of one, "
                       "from `sandbox ls`")
    if len(session_id) > MAX_ID_LEN or not _ID_CHARS.fullmatch(session_id):
        shown = visible(session_id[:24]) + (f"… ({len(session_id)} characters)"
                                             if len(session_id) > 24 else "")
        raise NotFound(f"no such session {shown!r}: a session id is up to {MAX_ID_LEN} hex "
                       "digits, like 3f2a9c01b4; see `sandbox ls`")


class Sessions(Plumbing):
    """The `sessions` table's reads and writes."""

    def create_session(
        self,
        session_id: str,
        *,
        profile: str,
        kind: str,
        workdir: str,
        argv: list[str],
        owner_pid: int,
        owner_start: str,
        host: str,
        user: str,
    ) -> None:
        now = time.time()
        with self._tx(session_id) as db:
            db.run(
                "INSERT INTO sessions(id, profile, kind, state, created, owner_pid, owner_start,"
                ' host, "user", workdir, argv, updated) VALUES(?,?,?,?,?,?,?,?,?,?,?,'
                f'{self._now_sql})',
                (session_id, profile, kind, "starting", now, owner_pid, owner_start, host, user,
                 workdir, json.dumps(argv), *self._now()),
            )

    def update_session(self, session_id: str, **values: Any) -> None:
        bad = set(values) - SESSION_UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        if "resources" in values and not isinstance(values["resources"], str):
            values["resources"] = json.dumps(values["resources"])
        # Any str is storable: a non-UTF-8 argv arrives with lone surrogates.
        values = {k: storable(v) if isinstance(v, str) else v for k, v in values.items()}
        # A final state is final: a late "running" (a kill that won the race with the
        # start) must not reopen the row that the sealed session.end describes.
        cols = ", ".join(
            "state=CASE WHEN state IN ('exited','killed','failed') THEN state ELSE ? END"
            if k == "state" else f"{k}=?" for k in values)
        with self._tx(session_id) as db:
            db.run(
                f"UPDATE sessions SET {cols}, updated={self._now_sql} WHERE id=?",
                (*values.values(), *self._now(), session_id),
            )

    def finish_session(
        self, session_id: str, state: str, reason: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        """Move a live session to a final state; False when it was already final."""
        assert state in FINAL_STATES
        reason = None if reason is None else storable(reason)
        now = time.time()
        with self._tx(session_id) as db:
            n = db.run(
                "UPDATE sessions SET state=?, reason=?, exit_code=?, ended=?, "
                f"updated={self._now_sql}, current_command=NULL WHERE id=? AND state IN "
                "('starting','running')",
                (state, reason, exit_code, now, *self._now(), session_id),
            )
            return n == 1

    def get_session(self, session_id: str) -> SessionRow:
        """The session with this id, or the only one it is a prefix of (hex only)."""
        check_session_id(session_id)
        rows = self._query("SELECT * FROM sessions WHERE id=?", (session_id,))
        if not rows and _HEX.fullmatch(session_id):
            # substr, not LIKE: a prefix is compared as text, no wildcard in it counts.
            rows = self._query(
                "SELECT * FROM sessions WHERE substr(id, 1, ?)=? ORDER BY created DESC LIMIT 2",
                (len(session_id), session_id),
            )
            if len(rows) > 1:
                raise NotFound(f"ambiguous session id {session_id!r}: more than one session "
                               "starts with it; give more of the id (see `sandbox ls`)")
        if not rows:
            raise NotFound(f"no such session {session_id!r}; see `sandbox ls`")
        return SessionRow.from_db(rows[0])

    def list_sessions(
        self, *, live_only: bool = False, limit: int = 200, since_updated: float = 0.0,
        host: str | None = None,
    ) -> list[SessionRow]:
        """Newest first; `host`: only the sessions that host owns."""
        where, args = ["updated >= ?"], [since_updated]
        if live_only:
            where.append("state IN ('starting','running')")
        if host is not None:
            where.append("host = ?")
            args.append(host)  # type: ignore[arg-type]
        sql = (
            f"SELECT * FROM sessions WHERE {' AND '.join(where)} "
            "ORDER BY created DESC LIMIT ?"
        )
        return [SessionRow.from_db(r) for r in self._query(sql, (*args, limit))]

    def known_hosts(self) -> list[str]:
        """The hosts that beat in this store or own one of its newest 1,000 sessions
        (sorted; bounded work however long the history)."""
        rows = self._query("SELECT DISTINCT host FROM hosts UNION SELECT DISTINCT host FROM "
                           "(SELECT host FROM sessions ORDER BY created DESC LIMIT 1000) r")
        return sorted(str(r["host"]) for r in rows)

    def ended_among(self, session_ids: list[str]) -> dict[str, str]:
        """{id: reason} of those sessions whose row is final (ended by someone else when
        their owner still holds them: another host marked them lost, say)."""
        if not session_ids:
            return {}
        marks = ",".join("?" * len(session_ids))
        rows = self._query(f"SELECT id, state, reason FROM sessions WHERE id IN ({marks}) "
                           "AND state IN ('exited','killed','failed')", tuple(session_ids))
        return {r["id"]: f"{r['state']}: {r['reason'] or ''}".strip() for r in rows}
