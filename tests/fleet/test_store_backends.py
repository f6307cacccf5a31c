"""The store interface, run against both backends: SQLite (the embedded default) and a
real PostgreSQL server started by the suite. Same rows, same chain, same `verify`.

Tampering is done the way an attacker with database access would: plain SQL on the
database itself (sqlite3 / psycopg), never through the store.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sandbox import Store
from sandbox.record import SCHEMA_VERSION, StoreBackend, StoreUnavailable
from sandbox.record.pg import PgStore
from sandbox.record.rows import CommandRow, ControlRow, EventRow, SessionRow

Raw = Callable[[str, tuple[Any, ...]], None]


def _raw_sql(where: str) -> Raw:
    """Run one statement on the database directly (`?` placeholders)."""
    def run(sql: str, args: tuple[Any, ...] = ()) -> None:
        if where.startswith("postgresql://"):
            with psycopg.connect(where, autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s").encode(), args)
        else:
            db = sqlite3.connect(where, isolation_level=None)
            try:
                db.execute(sql, args)
            finally:
                db.close()
    return run


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, test_dir: Path) -> str:
    if request.param == "sqlite":
        return str(test_dir / "store.db")
    return str(request.getfixturevalue("store_url"))


@pytest.fixture
def st(where: str) -> Iterator[Store]:
    store = Store(where)
    try:
        yield store
    finally:
        store.close()


def _session(st: Store, sid: str, host: str = "h") -> None:
    st.create_session(sid, profile="default", kind="api", workdir="/w", argv=["a", "b"],
                      owner_pid=1, owner_start="0", host=host, user="u")


def _writer(where: str, sid: str, n: int, host: str) -> None:
    os.environ["SANDBOX_HOST_ID"] = host
    st = Store(where)
    for i in range(n):
        st.add_command(sid, text=f"c{i}", output="o", exit_code=0, started=time.time(),
                       duration=0.0)
        st.add_event(sid, "test.event", {"i": i})
    st.close()


def test_the_backend_is_chosen_by_the_location(where: str, st: Store) -> None:
    assert isinstance(st, Store) and isinstance(st, StoreBackend)
    assert isinstance(st, PgStore) == where.startswith("postgresql://")
    assert "pw-" not in st.key  # the key names the database, never its password


def test_rows_are_typed_and_read_like_dicts(st: Store) -> None:
    _session(st, "a1")
    c = st.add_command("a1", text="echo hi", output=b"hi\n\x00\xff", exit_code=0,
                       started=1.5, duration=0.25)
    e = st.add_event("a1", "net.attempt", {"verdict": "deny", "host": "x"},
                     severity="warning", action="flag", rule="net.x")
    s = st.get_session("a1")
    assert isinstance(c, CommandRow) and isinstance(e, EventRow) and isinstance(s, SessionRow)
    assert (c.seq, e.seq) == (1, 2) and c["seq"] == 1 and e.get("rule") == "net.x"
    assert c.output_raw == b"hi\n\x00\xff" and c.host == st.host
    assert e.detail == {"verdict": "deny", "host": "x"} and e["detail"]["verdict"] == "deny"
    assert s.argv == ["a", "b"] and s.resources == {} and s.state == "starting"
    assert s.n_commands == 1 and s.n_events == 1 and s.n_denied == 1 and s.n_alerts == 1
    assert s.max_severity == "warning" and s["last_seq"] == 2
    assert {**s}["id"] == "a1" and "detail_json" not in e and "detail" in e
    [c2] = st.commands("a1")
    [e2] = st.events("a1")
    assert c2 == c and e2 == e  # what was returned is what is stored
    with pytest.raises(TypeError):
        c["seq"] = 5  # type: ignore[index]
    assert [k for k, _ in st.chain_rows("a1")] == ["command", "event"]


def test_append_verify_and_seal(st: Store) -> None:
    _session(st, "b1")
    for i in range(4):
        st.add_command("b1", text=f"c{i}", output=str(i), exit_code=i % 2, started=1.0,
                       duration=0.1)
        st.add_event("b1", "e", {"i": i})
    ok, msg = st.verify("b1")
    assert ok and "8 rows" in msg and "not sealed yet" in msg, msg
    assert st.finish_session("b1", "exited", "closed", 0)
    assert not st.finish_session("b1", "killed", "late")  # final is final
    st.add_event("b1", "session.end", {"state": "exited"})
    ok, msg = st.verify("b1")
    assert ok and "sealed at seq=9" in msg, msg
    st.update_session("b1", state="running")  # a racing start cannot reopen it
    assert st.get_session("b1").state == "exited" and st.verify("b1")[0]


def test_tampering_is_detected(where: str, st: Store) -> None:
    raw = _raw_sql(where)
    _session(st, "c1")
    for i in range(5):
        st.add_command("c1", text=f"c{i}", output=str(i), exit_code=0, started=1.0,
                       duration=0.1)
        st.add_event("c1", "e", {"i": i})
    assert st.verify("c1")[0]
    raw("UPDATE commands SET output='tampered' WHERE session_id='c1' AND seq=3", ())
    ok, msg = st.verify("c1")
    assert not ok and "seq=3" in msg and "edited" in msg, msg
    raw("UPDATE commands SET output='1' WHERE session_id='c1' AND seq=3", ())
    assert st.verify("c1")[0]
    # The host a row came from is chained too.
    raw("UPDATE events SET host='elsewhere' WHERE session_id='c1' AND seq=2", ())
    ok, msg = st.verify("c1")
    assert not ok and "seq=2" in msg, msg
    raw("UPDATE events SET host=? WHERE session_id='c1' AND seq=2", (st.host,))
    assert st.verify("c1")[0]
    raw("UPDATE sessions SET n_commands=2 WHERE id='c1'", ())
    ok, msg = st.verify("c1")
    assert not ok and "n_commands" in msg and "edited" in msg, msg
    raw("UPDATE sessions SET n_commands=5 WHERE id='c1'", ())
    raw("DELETE FROM events WHERE session_id='c1' AND seq=10", ())
    ok, msg = st.verify("c1")
    assert not ok and "seq=10 missing" in msg, msg
    raw("DELETE FROM events WHERE session_id='c1' AND seq=4", ())
    ok, msg = st.verify("c1")
    assert not ok and "seq=5" in msg, msg


def test_editing_a_sealed_session_row_fails_verify(where: str, st: Store) -> None:
    _session(st, "d1")
    st.add_command("d1", text="x", output="", exit_code=0, started=1.0, duration=0.0)
    st.finish_session("d1", "exited", "closed", 0)
    st.add_event("d1", "session.end", {"state": "exited"})
    assert st.verify("d1")[0]
    _raw_sql(where)("UPDATE sessions SET exit_code=3 WHERE id='d1'", ())
    ok, msg = st.verify("d1")
    assert not ok and "exit_code" in msg and "edited" in msg, msg


def test_counters_and_prefixes(st: Store) -> None:
    _session(st, "abc123")
    _session(st, "abd456")
    st.add_event("abc123", "net.attempt", {"verdict": "deny"}, severity="warning")
    st.add_event("abc123", "guard.verdict", {}, severity="alert", action="kill",
                 rule="mining.x")
    st.add_event("abc123", "later", {}, severity="info")
    row = st.get_session("abc1")
    assert row.id == "abc123" and row.n_denied == 1 and row.n_alerts == 1
    assert row.max_severity == "alert"  # a later info does not lower it
    from sandbox.errors import NotFound

    with pytest.raises(NotFound, match="ambiguous"):
        st.get_session("ab")
    with pytest.raises(NotFound):
        st.get_session("ffff")
    assert [s.id for s in st.list_sessions()] == ["abd456", "abc123"]
    assert st.count_events("abc123", "net.attempt") == 1
    assert [e.kind for e in st.events(alerts_only=True)] == ["guard.verdict"]
    assert [e.kind for e in st.events("abc123", limit=1, newest=True)] == ["later"]
    assert [e.kind for e in st.events(kinds=("later",))] == ["later"]


def test_kill_controls(st: Store) -> None:
    _session(st, "k1")
    _session(st, "k2")
    cid = st.request_kill("k1", "operator (pid 1)")
    assert cid > 0
    assert st.pending_kills(["k1", "k2"]) == [("k1", "operator (pid 1)")]
    assert st.pending_kills([]) == []
    [ctl] = st.pending_controls("k1")
    assert isinstance(ctl, ControlRow) and ctl.action == "kill" and ctl.host == st.host
    st.mark_controls_handled("k1")
    assert st.pending_kills(["k1"]) == [] and st.pending_controls("k1") == []


def test_migrations_are_versioned_and_logged(where: str, st: Store) -> None:
    version = st._query("SELECT value FROM meta WHERE key='schema_version'")[0]["value"]
    assert version == str(SCHEMA_VERSION)
    log = st._query("SELECT version, description FROM schema_migrations")
    assert [r["version"] for r in log] == [SCHEMA_VERSION]
    again = Store(where)  # reopening migrates nothing twice
    assert len(again._query("SELECT * FROM schema_migrations")) == 1
    again.close()


def test_many_processes_on_many_hosts_write_without_loss(where: str, st: Store) -> None:
    for i in range(3):
        _session(st, f"s{i}")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(where, f"s{i % 3}", 60, f"host-{i % 2}"))
             for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    for i in range(3):
        commands = st.commands(f"s{i}")
        assert len(commands) == 2 * 60
        assert {c.host for c in commands} == {"host-0", "host-1"}
        seqs = sorted([c.seq for c in commands] + [e.seq for e in st.events(f"s{i}")])
        assert seqs == list(range(1, 241))
        ok, msg = st.verify(f"s{i}")
        assert ok, msg
        assert st.get_session(f"s{i}").n_events == 120


def test_a_schema_2_sqlite_store_gains_hosts_and_old_rows_still_verify(
        test_dir: Path) -> None:
    """The versioned migration on a store written before `host` existed."""
    from sandbox.record import chain

    path = test_dir / "v2.db"
    st = Store(path)
    _session(st, "old1")
    st.close()
    db = sqlite3.connect(path, isolation_level=None)
    # Turn it back into schema 2: no host columns, no migration log.
    for table in ("commands", "events", "controls"):
        db.execute(f"ALTER TABLE {table} DROP COLUMN host")
    db.execute("DROP TABLE schema_migrations")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    row = {"session_id": "old1", "seq": 1, "ts": 1.0, "kind": "e", "severity": "info",
           "action": "record", "rule": None, "detail": "{}"}
    row["prev_hash"], row["hash"] = chain.GENESIS, chain.link(chain.GENESIS, "event", row)
    db.execute("INSERT INTO events(session_id, seq, ts, kind, severity, action, rule, "
               "detail, prev_hash, hash) VALUES(:session_id, :seq, :ts, :kind, :severity, "
               ":action, :rule, :detail, :prev_hash, :hash)", row)
    db.execute("UPDATE sessions SET last_seq=1, head_hash=?, n_events=1 WHERE id='old1'",
               (row["hash"],))
    db.close()
    st = Store(path)
    assert [r["version"] for r in st._query("SELECT version FROM schema_migrations")] == [3, 4]
    [old] = st.events("old1")
    assert old.host is None
    new = st.add_event("old1", "e2", {})
    assert new.host == st.host
    ok, msg = st.verify("old1")
    assert ok, msg


def test_an_unreachable_server_says_so_without_the_password(store_url: str) -> None:
    from sandbox.record.pgserver import free_port

    url = f"postgresql://someone:hunter2-secret@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreUnavailable) as err:
        Store(url)
    assert "hunter2" not in str(err.value) and "someone:***@127.0.0.1" in str(err.value)
    bad = store_url.replace(store_url.split(":")[2].split("@")[0], "wrong-password")
    with pytest.raises(StoreUnavailable) as err:
        Store(bad)
    assert "wrong-password" not in str(err.value) and "authentication" in str(err.value)


def test_sandbox_store_env_picks_the_backend(store_url: str, monkeypatch: pytest.MonkeyPatch,
                                            test_dir: Path) -> None:
    monkeypatch.setenv("SANDBOX_STORE", store_url)
    st = Store()
    assert isinstance(st, PgStore) and st.path.parent == Path(os.environ["SANDBOX_STATE_DIR"])
    st.close()
    assert not isinstance(Store(":memory:"), PgStore)  # an explicit location wins
    monkeypatch.setenv("SANDBOX_STORE", str(test_dir / "chosen.db"))
    st2 = Store()
    assert not isinstance(st2, PgStore) and st2.path == test_dir / "chosen.db"
