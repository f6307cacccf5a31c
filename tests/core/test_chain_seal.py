"""L1: the session row is covered by the chain, a finished session ends in a seal that
`verify` requires, and verify's messages say what happened.

Real sessions (jailed, through the API and the CLI), then the edits the red team made
with plain sqlite3: each one must make `sandbox verify` fail, with a sentence that makes
sense.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sandbox import Sandbox, Store
from sandbox.record.schema import SEALED_FIELDS
from tests.helpers import sandbox_cli


def _finished_session(workspace: Path) -> str:
    with Sandbox(workdir=workspace) as box:
        box.run("echo one")
        box.run("cat /nonexistent")
    return box.id


def _raw(store: Store) -> sqlite3.Connection:
    db = sqlite3.connect(store.path, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


def test_a_finished_session_is_sealed(workspace: Path) -> None:
    sid = _finished_session(workspace)
    ok, msg = Store().verify(sid)
    assert ok and "sealed at seq=" in msg, msg
    end = [e for e in Store().events(sid) if e["kind"] == "session.end"]
    assert len(end) == 1
    seal = end[0]["detail"]["seal"]
    row = _raw(Store()).execute("SELECT * FROM sessions WHERE id=?", (sid,)).fetchone()
    assert {f: row[f] for f in SEALED_FIELDS} == seal
    assert seal["state"] == "exited" and seal["workdir"] == str(workspace)
    v = sandbox_cli("verify", sid)
    assert v.returncode == 0 and "sealed" in v.stdout, v.stdout


@pytest.mark.parametrize(("column", "value"), [
    ("exit_code", 0), ("reason", "closed normally, nothing to see"), ("state", "failed"),
    ("n_alerts", 0), ("n_alerts", 3), ("max_severity", "critical"), ("agent_uid", 0),
    ("workdir", "/elsewhere"), ("profile", "strict"), ("n_commands", 1), ("n_denied", 2),
    ("ended", 1.0), ("argv", '["innocent"]'),
])
def test_editing_the_session_row_fails_verify(workspace: Path, column: str,
                                              value: object) -> None:
    sid = _finished_session(workspace)
    db = _raw(Store())
    before = db.execute(f"SELECT {column} FROM sessions WHERE id=?", (sid,)).fetchone()[0]
    if before == value:
        value = "x"
    db.execute(f"UPDATE sessions SET {column}=? WHERE id=?", (value, sid))
    ok, msg = Store().verify(sid)
    assert not ok and column in msg and "edited" in msg, msg
    v = sandbox_cli("verify", sid)
    assert v.returncode == 1 and column in v.stdout
    db.execute(f"UPDATE sessions SET {column}=? WHERE id=?", (before, sid))
    assert Store().verify(sid)[0]


def test_deleting_the_sealed_end_and_rewriting_the_head_fails(workspace: Path) -> None:
    """The red team's edit: drop the final session.end, set last_seq/head_hash to the row
    before it. The chain itself is intact, but a finished session must end in a seal."""
    sid = _finished_session(workspace)
    db = _raw(Store())
    end = db.execute("SELECT seq, prev_hash FROM events WHERE session_id=? AND "
                     "kind='session.end'", (sid,)).fetchone()
    last = db.execute("SELECT last_seq FROM sessions WHERE id=?", (sid,)).fetchone()[0]
    # Drop everything from the end on (teardown events may follow it).
    n_events = db.execute("SELECT count(*) FROM events WHERE session_id=? AND seq>=?",
                          (sid, end["seq"])).fetchone()[0]
    db.execute("DELETE FROM events WHERE session_id=? AND seq>=?", (sid, end["seq"]))
    db.execute("DELETE FROM commands WHERE session_id=? AND seq>=?", (sid, end["seq"]))
    db.execute("UPDATE sessions SET last_seq=?, head_hash=?, n_events=n_events-? WHERE id=?",
               (end["seq"] - 1, end["prev_hash"], n_events, sid))
    assert last >= end["seq"]
    ok, msg = Store().verify(sid)
    assert not ok and "no sealed session.end" in msg and "exited" in msg, msg
    v = sandbox_cli("verify", sid)
    assert v.returncode == 1 and "no sealed session.end" in v.stdout


def test_verify_messages_make_sense(workspace: Path) -> None:
    sid = _finished_session(workspace)
    db = _raw(Store())
    last, head = db.execute("SELECT last_seq, head_hash FROM sessions WHERE id=?",
                            (sid,)).fetchone()
    # Same row count, another head: no "seq=11..10" nonsense.
    db.execute("UPDATE sessions SET head_hash=? WHERE id=?", ("f" * 64, sid))
    ok, msg = Store().verify(sid)
    assert not ok and f"..{last}" not in msg and "is not the session's recorded head" in msg, msg
    db.execute("UPDATE sessions SET head_hash=? WHERE id=?", (head, sid))
    # A recorded row that is gone from the end: named, as a single row.
    db.execute("UPDATE sessions SET last_seq=? WHERE id=?", (last + 1, sid))
    ok, msg = Store().verify(sid)
    assert not ok and f"row seq={last + 1} missing" in msg, msg
    db.execute("UPDATE sessions SET last_seq=? WHERE id=?", (last + 3, sid))
    ok, msg = Store().verify(sid)
    assert not ok and f"rows seq={last + 1}..{last + 3} missing" in msg, msg
    db.execute("UPDATE sessions SET last_seq=? WHERE id=?", (last - 1, sid))
    ok, msg = Store().verify(sid)
    assert not ok and f"holds {last} rows" in msg, msg


def test_a_killed_run_is_sealed_and_a_late_state_change_cannot_reopen_it(
        workspace: Path) -> None:
    r = sandbox_cli("run", "-q", "--timeout", "0.5", "-w", str(workspace), "--", "sleep", "30")
    assert r.returncode == 124
    sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
    ok, msg = Store().verify(sid)
    assert ok and "sealed" in msg, msg
    st = Store()
    state = st.get_session(sid)["state"]
    st.update_session(sid, state="running")  # what a racing start would write
    assert st.get_session(sid)["state"] == state and st.verify(sid)[0]


def test_a_live_session_verifies_and_says_it_is_not_sealed(workspace: Path) -> None:
    with Sandbox(workdir=workspace) as box:
        box.run("true")
        ok, msg = Store().verify(box.id)
        assert ok and "not sealed yet" in msg, msg


V1_SCHEMA_COMMANDS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version', '1');
CREATE TABLE commands (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, seq INTEGER NOT NULL,
    text TEXT NOT NULL, output TEXT NOT NULL, exit_code INTEGER, started REAL NOT NULL,
    duration REAL NOT NULL, timed_out INTEGER NOT NULL, truncated INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL, source TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL);
"""


def test_a_schema_1_store_is_migrated_and_its_sessions_still_verify(test_dir: Path) -> None:
    """A store written before sealing: the migration adds `output_raw`; an old finished
    session (no record_version, no seal) still verifies, and says its row is unchecked."""
    from sandbox.record import chain

    path = test_dir / "old.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA_COMMANDS)
    db.close()
    st = Store(path)
    cols = {r[1] for r in st._db.execute("PRAGMA table_info(commands)")}
    assert "output_raw" in cols
    from sandbox.record import SCHEMA_VERSION

    assert st._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] \
        == str(SCHEMA_VERSION)  # 3 since `host` on every row
    st.create_session("abc123", profile="default", kind="api", workdir="/w", argv=[],
                      owner_pid=1, owner_start="0", host="h", user="u")
    # Old rows, written the way schema 1 did (no record_version, an unsealed end).
    raw = sqlite3.connect(path, isolation_level=None)
    prev = chain.GENESIS
    for seq, (kind, detail) in enumerate([("session.start", {"profile": "default"}),
                                          ("session.end", {"state": "exited"})], 1):
        row = {"session_id": "abc123", "seq": seq, "ts": 1.0, "kind": kind,
               "severity": "info", "action": "record", "rule": None,
               "detail": json.dumps(detail, sort_keys=True)}
        row["prev_hash"], row["hash"] = prev, chain.link(prev, "event", row)
        raw.execute("INSERT INTO events(session_id, seq, ts, kind, severity, action, rule, "
                    "detail, prev_hash, hash) VALUES(?,?,?,?,?,?,?,?,?,?)",
                    tuple(row[k] for k in ("session_id", "seq", "ts", "kind", "severity",
                                           "action", "rule", "detail", "prev_hash", "hash")))
        prev = row["hash"]
    raw.execute("UPDATE sessions SET state='exited', last_seq=2, head_hash=?, n_events=2 "
                "WHERE id='abc123'", (prev,))
    ok, msg = Store(path).verify("abc123")
    assert ok and "before sealed ends" in msg, msg
