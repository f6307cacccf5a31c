"""Real sessions recorded into a real PostgreSQL server: the CLI reads them (`--store`),
two "hosts" (SANDBOX_HOST_ID) share one store, a kill crosses hosts, the credentials
never reach a jail, and a lost connection kills the session and is recorded locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sandbox import Sandbox, SessionClosed, SetupError, Store, gc, paths
from sandbox.errors import NotFound
from sandbox.jail import profile
from sandbox.record import StoreUnavailable
from sandbox.record.pg import PgStore
from sandbox.record.pgserver import PgServer
from tests.helpers import gone, make_workspace, sandbox_cli, wait_for


def _cli(url: str, *args: str, host: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"SANDBOX_HOST_ID": host} if host else None
    return sandbox_cli("--store", url, *args, env=env, timeout=120)


def test_sessions_are_recorded_in_postgres_and_the_cli_reads_them(
        workspace: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_STORE", store_url)
    with Sandbox(workdir=workspace) as box:
        box.run("echo one")
        r = box.exec(["sh", "-c", "printf two; exit 3"])
        assert r.returncode == 3 and r.stdout == "two"
    st = Store()
    assert isinstance(st, PgStore)
    s = st.get_session(box.id)
    assert s.state == "exited" and s.host == paths.host_id() and s.n_commands >= 2
    assert [c.text for c in st.commands(box.id)][:1] == ["echo one"]
    assert {e.host for e in st.events(box.id)} == {paths.host_id()}
    ok, msg = st.verify(box.id)
    assert ok and "sealed" in msg, msg
    with pytest.raises(NotFound):  # nothing went into the local SQLite store
        Store(paths.db_path()).get_session(box.id)

    monkeypatch.delenv("SANDBOX_STORE")  # from here on only --store names it
    v = _cli(store_url, "verify", box.id[:6])
    assert v.returncode == 0 and "sealed" in v.stdout, v.stdout + v.stderr
    ls = _cli(store_url, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    assert [row["id"] for row in json.loads(ls.stdout)] == [box.id]
    show = _cli(store_url, "show", box.id, "--output")
    assert show.returncode == 0 and "echo one" in show.stdout and "two" in show.stdout
    local = sandbox_cli("ls", "--json")  # the default store is still the local file
    assert local.returncode == 0 and box.id not in local.stdout

    run = _cli(store_url, "run", "-q", "-w", str(workspace), "--", "sh", "-c", "echo hi; exit 4")
    assert run.returncode == 4 and run.stdout == "hi\n", run.stderr
    ids = [row["id"] for row in json.loads(_cli(store_url, "ls", "--json").stdout)]
    assert len(ids) == 2 and ids[1] == box.id
    assert _cli(store_url, "verify", ids[0]).returncode == 0

    # Tampering in the database is caught through the CLI, as with SQLite.
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("UPDATE commands SET output='edited' WHERE session_id=%s AND seq=("
                     "SELECT min(seq) FROM commands WHERE session_id=%s)", (box.id, box.id))
    v = _cli(store_url, "verify", box.id)
    assert v.returncode == 1 and "edited" in v.stdout, v.stdout


def test_two_hosts_write_into_one_store(store_url: str, test_dir: Path) -> None:
    """Two "hosts" (SANDBOX_HOST_ID) run real sessions at once into one database; every
    row says where it came from, and each chain verifies."""
    procs = []
    for host in ("host-a", "host-b"):
        ws = make_workspace(test_dir / host)
        env = {**os.environ, "SANDBOX_HOST_ID": host, "SANDBOX_STORE": store_url}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sandbox", "run", "-q", "-w", str(ws), "--", "sh", "-c",
             "for i in 1 2 3; do echo $i; done"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out == "1\n2\n3\n", err
    st = Store(store_url)
    sessions = st.list_sessions()
    assert sorted(s.host for s in sessions) == ["host-a", "host-b"]
    for s in sessions:
        rows = [r for _k, r in st.chain_rows(s.id)]
        assert rows and {r.host for r in rows} == {s.host}
        ok, msg = st.verify(s.id)
        assert ok and "sealed" in msg, msg


def test_gc_on_one_host_leaves_another_hosts_sessions_alone(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session whose owner pid is not alive *here* is still alive on its own host: in
    a shared store, only the owning host reaps it."""
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-a")
    a = Store(store_url)
    a.create_session("aaaa000001", profile="default", kind="api", workdir="/w", argv=[],
                     owner_pid=1, owner_start="no such start", host="host-a", user="u")
    a.update_session("aaaa000001", state="running")
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-b")
    assert gc.collect(Store(store_url)) == []
    assert a.get_session("aaaa000001").state == "running"
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-a")
    assert gc.collect(Store(store_url)) == ["aaaa000001"]
    assert a.get_session("aaaa000001").state == "failed"


def test_a_kill_from_another_host_reaches_the_owner(
        workspace: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_STORE", store_url)
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-a")
    box = Sandbox(workdir=workspace)
    box.start()
    try:
        jail = box._session.jail_pid if hasattr(box, "_session") else None
        t0 = time.monotonic()
        k = _cli(store_url, "kill", box.id, host="host-b")
        took = time.monotonic() - t0
        assert k.returncode == 0 and k.stdout.split() == [box.id, "killed"], k.stdout + k.stderr
        assert not box.is_alive() and took < 30
        s = Store().get_session(box.id)
        assert s.state == "killed" and "killed by" in (s.reason or "")
        [ctl] = Store()._query("SELECT host FROM controls WHERE session_id=?", (box.id,))
        assert ctl["host"] == "host-b"  # who asked, recorded
        if jail:
            assert gone(jail)
        assert Store().verify(box.id)[0]
    finally:
        box.close()


def test_the_store_credentials_never_reach_the_jail(
        workspace: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, pg: PgServer) -> None:
    """Even with a profile that asks for them, the URL and its password stay out of the
    jail: not in its environment, any process's environ or argv it can see, or a file it
    can read. The scan itself is shown to work (a marker file is found)."""
    password = pg.password
    monkeypatch.setenv("SANDBOX_STORE", store_url)
    monkeypatch.setenv("PGPASSWORD", password)
    prof = profile.override(profile.load("default"), {"env": {"passthrough": [
        "TERM", "SANDBOX_STORE", "PGPASSWORD", "SANDBOX_DB"]}})
    (workspace / "marker.txt").write_text("visible-marker-7f3a\n")
    with Sandbox(profile=prof, workdir=workspace) as box:
        env = box.exec(["env"]).stdout
        assert "SANDBOX_SESSION=" in env  # the command ran
        assert password not in env and "postgresql://" not in env and "PGPASSWORD" not in env
        # Every process the jail can see, read from a script file (the guard rightly
        # blocks `cat /proc/*/environ` typed as a command).
        (workspace / "procs.py").write_text(
            "import glob\n"
            "for p in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):\n"
            "    try:\n"
            "        print(open(p, 'rb').read().replace(b'\\0', b'\\n').decode('utf-8', 'replace'))\n"
            "    except OSError:\n"
            "        pass\n")
        procs = box.exec(["python3", "procs.py"])
        assert "SANDBOX_SESSION=" in procs.stdout, procs  # environ is readable
        assert password not in procs.stdout and "postgresql://" not in procs.stdout
        scan = box.exec(
            "timeout 120 grep -rIlsF -e visible-marker-7f3a -e " + password + " /etc /var /run "
            "/srv /home /root /tmp /opt /mnt /media " + str(workspace) + " 2>/dev/null; echo scanned",
            timeout=150)
        found = scan.stdout.split()
        assert found[-1] == "scanned"
        assert set(found[:-1]) == {str(workspace / "marker.txt")}, found
        fds = box.exec("ls -l /proc/$$/fd /proc/self/fd").stdout
        assert "socket:" not in fds  # no inherited connection to the database
    # A caller's own env that holds the password is refused, never passed in.
    with pytest.raises(SetupError, match="password"):
        Sandbox(workdir=workspace, env={"DSN": f"x{password}y"}).start()


def test_a_lost_connection_kills_the_session_and_is_recorded_locally(
        test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away under two live sessions: the one that writes gets
    StoreUnavailable and is killed at once; the idle one is killed by its watcher (its
    kill switch is gone). Both are recorded, killed, with the reason, in the local
    SQLite store, with the seq and head PostgreSQL had acknowledged. Back up, the
    database still verifies up to there, and new sessions work."""
    from sandbox import control

    server = PgServer()
    boxes: list[Sandbox] = []
    try:
        server.start()
        url = server.createdb("lost")
        monkeypatch.setenv("SANDBOX_STORE", url)
        for name in ("busy", "idle"):
            box = Sandbox(workdir=make_workspace(test_dir / name))
            box.start()
            boxes.append(box)
            box.run("echo before")
        busy, idle = boxes
        before = {b.id: Store().get_session(b.id).last_seq for b in boxes}
        jails = [b._session.jail_pid for b in boxes if hasattr(b, "_session")]
        t0 = time.monotonic()
        server.stop()
        # The command's record cannot be written: StoreUnavailable; or a background
        # write of the session (its resource sampler) failed first and it is already
        # killed: SessionClosed. Either way nothing runs unrecorded.
        with pytest.raises((StoreUnavailable, SessionClosed)) as err:
            busy.run("echo after")
        assert server.password not in str(err.value)
        assert wait_for(lambda: not busy.is_alive(), 10)
        assert wait_for(lambda: not idle.is_alive(), control.LOST_GRACE_S + 10)
        assert time.monotonic() - t0 < control.LOST_GRACE_S + 10
        for pid in jails:
            assert wait_for(lambda pid=pid: gone(pid), 10)
        local = Store(paths.db_path())
        said: dict[str, dict[str, Any]] = {}
        for b in boxes:
            s = local.get_session(b.id)
            assert s.state == "killed" and "lost the event store" in (s.reason or "")
            assert s.workdir == str(b.workdir)
            lost = [e for e in local.events(b.id) if e.kind == "store.lost"]
            assert len(lost) == 1 and lost[0].severity == "critical"
            # a background write (a resource sample) may land after `before` was read
            assert lost[0].detail["acknowledged_seq"] >= before[b.id]
            said[b.id] = lost[0].detail
            assert local.verify(b.id)[0]
        assert server.password.encode() not in paths.db_path().read_bytes()
        with pytest.raises(SessionClosed, match=r"killed"):
            busy.run("echo never")

        server.restart()
        st = Store()
        for b in boxes:  # what PostgreSQL acknowledged is intact, and the local record
            s = st.get_session(b.id)  # named it exactly
            assert s.last_seq == said[b.id]["acknowledged_seq"]
            assert s.head_hash == said[b.id]["acknowledged_head"]
            assert st.verify(b.id)[0]
        with Sandbox(workdir=make_workspace(test_dir / "after")) as again:
            assert again.run("echo back").output.strip() == "back"
        assert st.verify(again.id)[0]
    finally:
        for b in boxes:
            b.close()
        server.remove()
