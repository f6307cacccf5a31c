"""Checking a session's record: the hash chain (`chain.verify_rows`), that it ends at the
recorded head, that the row's counters match the rows, and that a finished session's row
matches the seal its final `session.end` carries. What `sandbox verify` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import NotFound
from ..textsafe import visible
from . import chain
from .rows import ChainRow, CommandRow, EventRow
from .schema import FINAL_STATES, SEALED_FIELDS, SEVERITIES, is_alert
from .sessions import Sessions


class Verify(Sessions):
    """A session's chain, read in order, and checked (`get_session`: ids by prefix)."""

    def chain_rows(self, session_id: str) -> list[ChainRow]:
        """A session's commands and events in chain order (typed rows)."""
        out: list[ChainRow] = []
        for kind, r in _chain_dicts(self._query, session_id):
            out.append(("command", CommandRow.from_db(r)) if kind == "command"
                       else ("event", EventRow.from_db(r)))
        return out

    def verify(self, session_id: str) -> tuple[bool, str]:
        """Check a session's record: the hash chain, that it ends at the recorded head,
        that the row's counters match the rows, and (for a finished session) that the
        row's summary matches the seal its final `session.end` carries."""
        sid = self.get_session(session_id)["id"]
        with self._snapshot() as db:  # one read transaction: the row and its chain
            session = db.one("SELECT * FROM sessions WHERE id=?", (sid,))
            rows = _chain_dicts(db.all, sid)
        if session is None:
            raise NotFound(f"no such session {sid!r}; see `sandbox ls`")
        ok, message, head = chain.verify_rows(rows)
        if not ok:
            return False, message
        problem = _check_head(session, rows, head) or _check_counters(session, rows)
        if problem:
            return False, problem
        return _check_seal(session, rows, message)


def _chain_dicts(query: Callable[[str, Sequence[Any]], list[dict[str, Any]]],
                 session_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A session's rows as stored (event detail as its JSON text), in chain order."""
    rows: list[tuple[str, dict[str, Any]]] = [
        ("command", r) for r in query(
            "SELECT * FROM commands WHERE session_id=? ORDER BY seq", (session_id,))]
    rows += [("event", r) for r in query(
        "SELECT * FROM events WHERE session_id=? ORDER BY seq", (session_id,))]
    rows.sort(key=lambda kr: (kr[1]["seq"], kr[1]["id"]))
    return rows


def _check_head(session: dict[str, Any], rows: list[tuple[str, dict[str, Any]]],
                head: str) -> str | None:
    n, last, recorded = len(rows), session["last_seq"], session["head_hash"]
    if n < last:
        missing = f"row seq={last}" if n + 1 == last else f"rows seq={n + 1}..{last}"
        return (f"{missing} missing: the chain ends after {n} rows at {head}, but the "
                f"session recorded {last} rows ending at {recorded}")
    if n > last:
        return (f"the chain holds {n} rows but the session row records last_seq={last}: "
                "the session row was edited")
    if head != recorded:
        return (f"the chain's head {head} is not the session's recorded head {recorded}: "
                "the rows or the session row were rewritten")
    return None


def _check_counters(session: dict[str, Any],
                    rows: list[tuple[str, dict[str, Any]]]) -> str | None:
    events = [r for k, r in rows if k == "event"]
    details = [_loads(e["detail"]) for e in events]
    worst = max((SEVERITIES.index(e["severity"]) for e in events
                 if e["severity"] in SEVERITIES), default=0)
    want = {
        "n_commands": len(rows) - len(events),
        "n_events": len(events),
        "n_alerts": sum(1 for e in events if is_alert(e["action"], e["severity"])),
        "n_denied": sum(1 for d in details if d.get("verdict") == "deny"),
        "max_severity": SEVERITIES[worst],
    }
    for key, value in want.items():
        if session[key] != value:
            return (f"the session row says {key}={visible(session[key])!r}, but its chain "
                    f"holds {value!r}: the session row was edited")
    return None


def _check_seal(session: dict[str, Any], rows: list[tuple[str, dict[str, Any]]],
                message: str) -> tuple[bool, str]:
    start = next((_loads(r["detail"]) for k, r in rows
                  if k == "event" and r["kind"] == "session.start"), {})
    seal_row, seal = None, None
    for k, r in rows:
        if k == "event" and r["kind"] == "session.end":
            d = _loads(r["detail"])
            if isinstance(d.get("seal"), dict):
                seal_row, seal = r, d["seal"]
    if seal is None or seal_row is None:
        if session["state"] not in FINAL_STATES:
            return True, f"{message} (live: the end is not sealed yet)"
        if not start.get("record_version") and rows:
            return True, f"{message} (recorded before sealed ends: the session row is unchecked)"
        return False, (f"the session is {session['state']} but its chain has no sealed "
                       "session.end: the end was deleted, or the record is incomplete")
    for field in SEALED_FIELDS:
        if session.get(field) != seal.get(field):
            return False, (
                f"the session row's {field} is {visible(session.get(field))!r}, but the sealed "
                f"session.end (seq={seal_row['seq']}) says {visible(seal.get(field))!r}: "
                "the session row was edited")
    return True, f"{message}, sealed at seq={seal_row['seq']}"


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
