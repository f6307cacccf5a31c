"""The write path of a session's record: one chained row per command or event.

Each append is one write transaction that holds the session row (the chain's head), so
appends to one session are serialized across every process and host, while the row's
counters, the seal of a finished session and the new head are written with the row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..errors import NotFound
from ..textsafe import NUL_PICTURE, raw_bytes, storable
from . import chain
from .db import Db, Plumbing
from .rows import CommandRow, EventRow, RowKind
from .schema import ACTIONS, FINAL_STATES, RECORD_VERSION, SEALED_FIELDS, SEVERITIES, is_alert


def output_bytes_of(command: Mapping[str, Any]) -> bytes:
    """A recorded command's exact output bytes (`output_raw` when set, else the text)."""
    raw = command.get("output_raw")
    if raw is not None:
        return bytes(raw)
    return str(command.get("output") or "").encode("utf-8")


def _output_columns(output: str | bytes) -> tuple[str, bytes | None, int]:
    """(text for the `output` column, exact bytes when the text is not them, byte count)."""
    raw = output if isinstance(output, bytes) else raw_bytes(output)
    try:
        text = raw.decode("utf-8")
        exact = "\x00" not in text
    except UnicodeDecodeError:
        text, exact = raw.decode("utf-8", errors="replace"), False
    if not exact:
        text = text.replace("\x00", NUL_PICTURE)
    return text, (None if exact else raw), len(raw)


def _dump(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, default=str)


class Appends(Plumbing):
    """Recording commands and events (the hash chain's links)."""

    def _append(
        self, kind: RowKind, session_id: str, row: dict[str, Any],
        detail: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Append one chained row; returns it and the event detail as recorded.

        The session row is the chain's head: it is read and written in one transaction
        that holds it (SQLite: the database write lock; PostgreSQL: SELECT ... FOR
        UPDATE), so appends to one session are serialized across every process."""
        with self._tx(session_id) as db:
            return self._append_in(db, kind, session_id, row, detail)

    def _append_in(
        self, db: Db, kind: RowKind, session_id: str, row: dict[str, Any],
        detail: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`_append`'s row, in the transaction `db` holds (several rows: one write)."""
        detail = detail or {}
        head = db.one("SELECT * FROM sessions WHERE id=?" + self._for_update,
                      (session_id,))
        if head is None:
            raise NotFound(f"no such session {session_id!r}")
        if kind == "event" and row["kind"] == "session.start":
            # Marks a record that must end in a seal (older records have none).
            detail = {**detail, "record_version": RECORD_VERSION}
            row["detail"] = _dump(detail)
        elif (kind == "event" and row["kind"] == "session.end"
              and head["state"] in FINAL_STATES):
            # The seal: the row's summary as it ends, chained (see `verify`).
            detail = {**detail, "seal": {f: head[f] for f in SEALED_FIELDS}}
            row["detail"] = _dump(detail)
        row["session_id"] = session_id
        row["seq"] = head["last_seq"] + 1
        row["prev_hash"] = head["head_hash"]
        row["host"] = self.host
        row["hash"] = chain.link(head["head_hash"], kind, row)
        row["id"] = db.insert("commands" if kind == "command" else "events", row)
        # A recorded command is no longer running: clear it in the same write.
        counters = ("n_commands=n_commands+1, current_command=NULL" if kind == "command"
                    else "n_events=n_events+1")
        extra: tuple[Any, ...] = ()
        if kind == "event":
            if is_alert(row["action"], row["severity"]):
                counters += ", n_alerts=n_alerts+1"
            if detail.get("verdict") == "deny":
                counters += ", n_denied=n_denied+1"
            # The worst severity so far (computed here: the row is held). A value that
            # is no severity at all (an edited row) is kept, for verify to name.
            worst = head["max_severity"]
            if (worst in SEVERITIES
                    and SEVERITIES.index(row["severity"]) > SEVERITIES.index(worst)):
                counters += ", max_severity=?"
                extra = (row["severity"],)
        db.run(
            f"UPDATE sessions SET last_seq=?, head_hash=?, updated={self._now_sql}, "
            f"{counters} WHERE id=?",
            (row["seq"], row["hash"], *self._now(), *extra, session_id),
        )
        return row, detail

    def add_command(
        self,
        session_id: str,
        *,
        text: str,
        output: str | bytes,
        exit_code: int | None,
        started: float,
        duration: float,
        timed_out: bool = False,
        truncated: bool = False,
        output_bytes: int | None = None,
        source: str = "api",
    ) -> CommandRow:
        """Record one command. `output` is best given as the bytes the command wrote:
        text that is not valid UTF-8 or holds NUL keeps its exact bytes in `output_raw`
        (the `output` column then shows U+FFFD and `␀`, so SQL tools never cut it)."""
        row = _command_row(text, output, exit_code, started, duration, timed_out, truncated,
                           output_bytes, source)
        return CommandRow.from_db(self._append("command", session_id, row)[0])

    def add_command_and_event(
        self, session_id: str, command: dict[str, Any], kind: str, detail: dict[str, Any],
    ) -> tuple[CommandRow, EventRow]:
        """A command (`add_command`'s keywords) and then an info event about it, chained
        in one write: an exec's command row and its `exec.result` (one transaction, not
        two, per exec)."""
        row = _command_row(**command)
        event = _event_row(kind, detail, "info", "record", None, None)
        with self._tx(session_id) as db:
            crow, _ = self._append_in(db, "command", session_id, row)
            erow, recorded = self._append_in(db, "event", session_id, event, detail)
        return CommandRow.from_db(crow), replace(EventRow.from_db(erow), detail=recorded)

    def add_event(
        self,
        session_id: str,
        kind: str,
        detail: dict[str, Any] | None = None,
        *,
        severity: str = "info",
        action: str = "record",
        rule: str | None = None,
        ts: float | None = None,
    ) -> EventRow:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        detail = detail or {}
        row = _event_row(kind, detail, severity, action, rule, ts)
        out, recorded = self._append("event", session_id, row, detail)
        return replace(EventRow.from_db(out), detail=recorded)


def _command_row(text: str, output: str | bytes, exit_code: int | None, started: float,
                 duration: float, timed_out: bool = False, truncated: bool = False,
                 output_bytes: int | None = None, source: str = "api") -> dict[str, Any]:
    text_out, raw, n = _output_columns(output)
    return {
        "text": storable(text), "output": text_out, "exit_code": exit_code,
        "started": started, "duration": duration, "timed_out": int(timed_out),
        "truncated": int(truncated), "output_bytes": n if output_bytes is None
        else output_bytes, "source": source, "output_raw": raw,
    }


def _event_row(kind: str, detail: dict[str, Any], severity: str, action: str,
               rule: str | None, ts: float | None) -> dict[str, Any]:
    return {
        "ts": time.time() if ts is None else ts, "kind": storable(kind),
        "severity": severity, "action": action,
        "rule": None if rule is None else storable(rule), "detail": _dump(detail),
    }
