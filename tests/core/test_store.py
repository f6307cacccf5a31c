"""The event store: WAL, many writers in many processes, hash chain, verify."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from sandbox import Store


def _writer(path: str, sid: str, n: int) -> None:
    st = Store(path)
    for i in range(n):
        st.add_command(sid, text=f"c{i}", output="o", exit_code=0, started=time.time(),
                       duration=0.0)
        st.add_event(sid, "test.event", {"i": i})


def _session(st: Store, sid: str) -> None:
    st.create_session(sid, profile="default", kind="api", workdir="/w", argv=[], owner_pid=1,
                      owner_start="0", host="h", user="u")


def test_many_processes_write_without_loss(test_dir: Path) -> None:
    path = str(test_dir / "s.db")
    st = Store(path)
    assert st._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for i in range(4):
        _session(st, f"s{i}")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, f"s{i % 4}", 150)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    total = sum(len(st.commands(f"s{i}")) for i in range(4))
    assert total == 6 * 150
    for i in range(4):
        ok, msg = st.verify(f"s{i}")
        assert ok, msg


def test_verify_detects_edit_delete_reorder(test_dir: Path) -> None:
    path = test_dir / "v.db"
    st = Store(path)
    _session(st, "a")
    for i in range(5):
        st.add_command("a", text=f"c{i}", output=str(i), exit_code=0, started=1.0, duration=0.1)
        st.add_event("a", "e", {"i": i})
    assert st.verify("a")[0]
    raw = sqlite3.connect(path)
    raw.execute("UPDATE commands SET output='tampered' WHERE seq=3")
    raw.commit()
    ok, msg = st.verify("a")
    assert not ok and "seq=3" in msg and "edited" in msg
    raw.execute("UPDATE commands SET output='1' WHERE seq=3")
    raw.commit()
    assert st.verify("a")[0]
    raw.execute("DELETE FROM events WHERE seq=4")
    raw.commit()
    ok, msg = st.verify("a")
    assert not ok and "seq=5" in msg
    st2 = Store(test_dir / "w.db")
    _session(st2, "b")
    for i in range(3):
        st2.add_command("b", text=f"c{i}", output="", exit_code=0, started=1.0, duration=0.1)
    raw2 = sqlite3.connect(test_dir / "w.db")
    raw2.execute("UPDATE commands SET seq=99 WHERE seq=1")
    raw2.execute("UPDATE commands SET seq=1 WHERE seq=2")
    raw2.execute("UPDATE commands SET seq=2 WHERE seq=99")
    raw2.commit()
    assert not st2.verify("b")[0]


def test_deleting_the_last_row_is_detected(test_dir: Path) -> None:
    st = Store(test_dir / "x.db")
    _session(st, "c")
    for i in range(3):
        st.add_event("c", "e", {"i": i})
    raw = sqlite3.connect(test_dir / "x.db")
    raw.execute("DELETE FROM events WHERE seq=3")
    raw.commit()
    assert not st.verify("c")[0]


def test_counters_for_the_tui(test_dir: Path) -> None:
    st = Store(test_dir / "y.db")
    _session(st, "d")
    st.add_event("d", "net.attempt", {"verdict": "deny"}, severity="warning")
    st.add_event("d", "guard.verdict", {}, severity="alert", action="kill", rule="mining.x")
    row = st.get_session("d")
    assert row["n_denied"] == 1 and row["n_alerts"] == 1 and row["max_severity"] == "alert"


def test_head_hash_is_shipped_off_box(test_dir: Path) -> None:
    """recording.head_hash_file gets one line per finished session with its head hash."""
    from sandbox import Sandbox
    from tests.helpers import make_workspace

    heads = test_dir / "heads.log"
    prof = test_dir / "p.toml"
    prof.write_text(f'extends = "default"\n[recording]\nhead_hash_file = "{heads}"\n')
    with Sandbox(profile=str(prof), workdir=make_workspace(test_dir / "w")) as box:
        box.run("echo x")
    line = heads.read_text().split()
    assert line[1] == box.id and line[3] == box.head_hash()
    assert Store().verify(box.id)[0]


def test_in_memory_store_for_users_tests() -> None:
    """`Store(":memory:")` is the shipped test double: same interface, nothing on disk."""
    st = Store(":memory:")
    _session(st, "m")
    st.add_command("m", text="true", output="", exit_code=0, started=1.0, duration=0.0)
    assert st.verify("m")[0] and st.get_session("m")["n_commands"] == 1


def test_open_store_hands_the_backend_the_url_it_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """`open_store()` with no URL opens what `SANDBOX_STORE` names, and gives the backend
    that URL: the choice it made, not the None it was called with."""
    import sandbox.record as record

    opened: list[object] = []

    class Backend:
        def __init__(self, url: object) -> None:
            opened.append(url)

    url = "postgresql://agent@db.invalid:5432/sandbox"
    monkeypatch.setenv("SANDBOX_STORE", url)
    monkeypatch.setattr(record, "PgStore", Backend)
    record.open_store()
    assert opened == [url]


def test_processes_opening_a_new_store_at_once_all_get_it(test_dir: Path) -> None:
    """A fleet's agents start together and open one new SQLite file: the switch to WAL
    (and WAL recovery) answer "database is locked" without the busy handler's wait, so
    some opens failed (3 of 80 here before the retry)."""
    import subprocess
    import sys

    failed: list[str] = []
    for trial in range(10):
        db = test_dir / f"race-{trial}" / "sandbox.db"
        go = time.time() + 1.0  # every process spins until then, then opens
        code = (f"import time\nfrom sandbox import Store\nwhile time.time() < {go}: pass\n"
                f"Store({str(db)!r}).close()\n")
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
                 for _ in range(8)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            if p.returncode:
                failed.append(err.decode(errors="replace")[-300:])
    assert not failed, failed
