"""What crosses processes and hosts: kill requests (`controls`: made by any process,
acted on by the session's owner) and heartbeats (`hosts`: one row per supervisor process,
so a fleet can tell a lost host from a quiet one).
"""

from __future__ import annotations

import time
from typing import Any

from .db import Plumbing
from .rows import ControlRow


class Controls(Plumbing):
    """The `controls` and `hosts` tables."""

    def request_kill(self, session_id: str, requested_by: str) -> int:
        with self._tx() as db:
            return db.insert("controls", {
                "session_id": session_id, "ts": time.time(), "action": "kill",
                "requested_by": requested_by, "host": self.host})

    def pending_controls(self, session_id: str) -> list[ControlRow]:
        return [ControlRow.from_db(r) for r in self._query(
            "SELECT * FROM controls WHERE session_id=? AND handled IS NULL ORDER BY id",
            (session_id,),
        )]

    def pending_kills(self, session_ids: list[str]) -> list[tuple[str, str]]:
        """(session id, requested_by) of unhandled kill requests among `session_ids`."""
        if not session_ids:
            return []
        marks = ",".join("?" * len(session_ids))
        rows = self._query(
            f"SELECT session_id, requested_by FROM controls WHERE handled IS NULL "
            f"AND action='kill' AND session_id IN ({marks}) ORDER BY id",
            tuple(session_ids),
        )
        return [(r["session_id"], r["requested_by"]) for r in rows]

    def mark_controls_handled(self, session_id: str) -> None:
        with self._tx(session_id) as db:
            db.run(
                "UPDATE controls SET handled=? WHERE session_id=? AND handled IS NULL",
                (time.time(), session_id),
            )

    def heartbeat(self, pid: int, owner_start: str, *, beat: float, sessions: int) -> None:
        """This supervisor process is alive, with `sessions` live sessions, and beats every
        `beat` seconds (one row per process in `hosts`)."""
        with self._tx() as db:
            now = self._clock(db)
            db.run("INSERT INTO hosts(host, pid, owner_start, started, last_seen, beat, sessions)"
                   " VALUES(?,?,?,?,?,?,?) ON CONFLICT(host, pid, owner_start) DO UPDATE SET"
                   " last_seen=excluded.last_seen, beat=excluded.beat,"
                   " sessions=excluded.sessions",
                   (self.host, pid, owner_start, now, now, beat, sessions))

    def host_status(self) -> list[dict[str, Any]]:
        """Per host that ever beat: its newest heartbeat, how long ago (store clock), its
        longest beat interval, how many processes, and its live sessions now."""
        with self._snapshot() as db:
            now = self._clock(db)
            beats = db.all("SELECT host, max(last_seen) AS last_seen, max(beat) AS beat, "
                           "count(*) AS processes FROM hosts GROUP BY host")
            live = {r["host"]: int(r["n"]) for r in db.all(
                "SELECT host, count(*) AS n FROM sessions WHERE state IN "
                "('starting','running') GROUP BY host")}
        return [{"host": b["host"], "last_seen": float(b["last_seen"]),
                 "age": now - float(b["last_seen"]), "beat": float(b["beat"]),
                 "processes": int(b["processes"]), "live": live.get(b["host"], 0)}
                for b in sorted(beats, key=lambda b: str(b["host"]))]

    def prune_heartbeats(self, older_than: float) -> int:
        """Forget heartbeat rows of processes silent for `older_than` seconds whose host
        has no live session left (a lost host's rows stay until its sessions are ended)."""
        with self._tx() as db:
            cutoff = self._clock(db) - older_than
            return db.run(
                "DELETE FROM hosts WHERE last_seen < ? AND host NOT IN (SELECT host FROM "
                "sessions WHERE state IN ('starting','running'))", (cutoff,))
