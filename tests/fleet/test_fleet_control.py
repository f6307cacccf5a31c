"""Control across hosts, and the operator's view of a fleet, on a real PostgreSQL store.

Each "host" is a separate supervisor process (`python -c CHILD`) with its own
SANDBOX_HOST_ID holding real sandboxes; the test process is yet another host. A kill
crosses hosts through LISTEN/NOTIFY (shown: the owner's fallback poll is set to 30 s,
so only the notification can deliver it within the bound) and through polling when
NOTIFY is off; `kill --all --host` kills one host's sessions only; a SIGKILLed host is
marked lost after its heartbeat timeout while a live host is left alone, and the lost
host's next gc removes what its sessions left; the CLI and the TUI show every host.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from sandbox import Store, gc
from sandbox.paths import acting_as_host
from sandbox.record.pg import PgStore
from sandbox.record.pg_pool import Pool
from tests.helpers import make_workspace, sandbox_cli, wait_for

# One supervisor process: starts N sandboxes (each with a small process tree), prints
# their ids and jail pids as JSON, then holds them until its stdin is closed.
CHILD = r"""
import json, os, sys
from sandbox import Sandbox, control
if os.environ.get("TEST_CLOCK_AHEAD_S"):  # this "host"'s clock runs ahead of the others'
    import time
    _real = time.time
    time.time = lambda: _real() + float(os.environ["TEST_CLOCK_AHEAD_S"])
if os.environ.get("TEST_FALLBACK_POLL_S"):
    control.FALLBACK_POLL_S = float(os.environ["TEST_FALLBACK_POLL_S"])
boxes = []
try:
    for ws in sys.argv[1:]:
        b = Sandbox(workdir=ws)
        b.start()
        boxes.append(b)
        b.run("sleep 1000 & sleep 1000 & true")
    print(json.dumps([{"id": b.id, "jail": b._session.jail_pid} for b in boxes]), flush=True)
    sys.stdin.read()
finally:
    for b in boxes:
        b.close()
"""


class Host:
    """A supervisor process on "host" `name`, holding `n` live sessions."""

    def __init__(self, name: str, url: str, root: Path, n: int, **env: str) -> None:
        self.name = name
        wss = [str(make_workspace(root / f"{name}-{i}")) for i in range(n)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *wss], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SANDBOX_HOST_ID": name, "SANDBOX_STORE": url, **env})
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"host {name} did not start its sessions: {err[-2000:]}")
        self.sessions: list[dict[str, Any]] = json.loads(line)
        self.ids = [s["id"] for s in self.sessions]

    def pids(self, i: int = 0) -> list[int]:
        """Every process of session i (its jail and what runs in it)."""
        pid = self.sessions[i]["jail"]
        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def gone(pids: list[int]) -> bool:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
    return True


@pytest.fixture
def fleet(store_url: str, test_dir: Path) -> Iterator[Callable[..., Host]]:
    """Start hosts; at the end every host process is stopped and each host's gc removes
    what its sessions left (a host the test SIGKILLed included)."""
    started: list[Host] = []

    def start(name: str, n: int = 1, **env: str) -> Host:
        h = Host(name, store_url, test_dir, n, **env)
        started.append(h)
        return h

    try:
        yield start
    finally:
        for h in started:
            h.stop()
        for name in {h.name for h in started}:
            with acting_as_host(name):
                gc.collect(Store(store_url))


def _cli(url: str, *args: str, host: str = "host-c") -> subprocess.CompletedProcess[str]:
    return sandbox_cli("--store", url, *args, env={"SANDBOX_HOST_ID": host}, timeout=120)


def _listening(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query = "
                           "'LISTEN sandbox_kill' AND datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def _kill_from_here(url: str, sid: str) -> None:
    with acting_as_host("host-b"):
        Store(url).request_kill(sid, "test on host-b")


def test_a_kill_crosses_hosts_through_notify(store_url: str, fleet: Callable[..., Host]
                                            ) -> None:
    """The owner's fallback poll is 30 s: only the notification can end the session
    within the bound. Every process of the session is gone, the row says who asked."""
    a = fleet("host-a", TEST_FALLBACK_POLL_S="30")
    assert wait_for(lambda: _listening(store_url) == 1, 10), "host-a never LISTENed"
    time.sleep(0.3)  # past the watcher's first (immediate) poll
    pids = a.pids()
    assert pids
    t0 = time.monotonic()
    _kill_from_here(store_url, a.ids[0])
    assert wait_for(lambda: gone(pids), 10, step=0.005)
    took = time.monotonic() - t0
    assert took < 5, took  # a poll would take 30 s
    st = Store(store_url)
    assert wait_for(lambda: st.get_session(a.ids[0]).state == "killed", 10)
    s = st.get_session(a.ids[0])
    assert s.host == "host-a" and "killed by test on host-b" in (s.reason or "")
    # The row turns final just before its sealed session.end is appended.
    assert wait_for(lambda: st.verify(s.id)[0], 10), st.verify(s.id)


def test_a_kill_crosses_hosts_by_polling_when_notify_is_off(
        store_url: str, fleet: Callable[..., Host]) -> None:
    a = fleet("host-a", SANDBOX_STORE_NOTIFY="0")
    time.sleep(0.5)
    assert _listening(store_url) == 0  # no LISTEN channel: the poll alone
    pids = a.pids()
    k = _cli(store_url, "kill", a.ids[0], host="host-b")
    assert k.returncode == 0 and k.stdout.split() == [a.ids[0], "killed"], k.stdout + k.stderr
    assert wait_for(lambda: gone(pids), 10)
    [ctl] = Store(store_url)._query("SELECT host, handled FROM controls WHERE session_id=?",
                                    (a.ids[0],))
    assert ctl["host"] == "host-b" and ctl["handled"] is not None


def test_kill_all_host_kills_only_that_hosts_sessions(
        store_url: str, fleet: Callable[..., Host]) -> None:
    a = fleet("host-a", 2)
    b = fleet("host-b", 2)
    # The operator's view of the fleet first: a HOST column, filtered by host.
    ls = _cli(store_url, "ls")
    assert ls.returncode == 0 and ls.stdout.split("\n")[0].split()[:2] == ["ID", "HOST"], ls
    lines = {ln.split()[0]: ln.split()[1] for ln in ls.stdout.splitlines()[1:]}
    assert lines == {**dict.fromkeys(a.ids, "host-a"), **dict.fromkeys(b.ids, "host-b")}
    only_b = json.loads(_cli(store_url, "ls", "--host", "host-b", "--json").stdout)
    assert sorted(r["id"] for r in only_b) == sorted(b.ids)
    assert {r["host"] for r in only_b} == {"host-b"}
    text_b = _cli(store_url, "ls", "--host", "host-b").stdout
    assert all(i in text_b for i in b.ids) and not any(i in text_b for i in a.ids)
    assert "no sessions on host nowhere" in _cli(store_url, "ls", "--host", "nowhere").stdout
    show = _cli(store_url, "show", a.ids[0])
    assert show.returncode == 0 and "host host-a" in show.stdout, show.stdout
    # `logs -f` on host-c follows a host-a session until its end.
    follow = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--store", store_url, "logs", "-f", a.ids[0]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SANDBOX_HOST_ID": "host-c"})
    try:
        pids_a = [a.pids(0), a.pids(1)]
        bad = _cli(store_url, "kill", "--host", "host-a")
        assert bad.returncode == 2 and "--all" in bad.stderr
        k = _cli(store_url, "kill", "--all", "--host", "host-a")
        assert k.returncode == 0, k.stderr
        assert sorted(k.stdout.split()) == sorted([*a.ids, "killed", "killed"]), k.stdout
        out, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 0, err
    assert "sleep 1000 & sleep 1000 & true" in out and "session.end" in out, out
    assert all(gone(p) for p in pids_a)
    st = Store(store_url)
    assert [st.get_session(i).state for i in a.ids] == ["killed", "killed"]
    assert [st.get_session(i).state for i in b.ids] == ["running", "running"]
    assert all(not gone(b.pids(i)) for i in range(2))
    assert _cli(store_url, "kill", "--all", "--host", "host-a").stdout.strip() == \
        "no live sessions on host host-a"


def test_a_lost_host_is_marked_after_its_heartbeat_timeout_and_reaped_by_its_own_gc(
        store_url: str, fleet: Callable[..., Host], monkeypatch: pytest.MonkeyPatch) -> None:
    """host-a's supervisor is SIGKILLed: nothing beats for it any more. Another host's gc
    marks its session failed once the timeout has passed (not before), and never touches
    host-b, which is alive and beating although idle. host-a's own next gc then ends
    the jail and removes what the session left."""
    timeout = 3.0  # room for the first gc to run inside it on a busy host
    monkeypatch.setenv("SANDBOX_HOST_TIMEOUT", str(timeout))
    a = fleet("host-a")
    b = fleet("host-b")
    st = Store(store_url)
    assert wait_for(lambda: {h["host"] for h in st.host_status()} >= {"host-a", "host-b"}, 10)
    pids_a = a.pids()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    killed_at = time.monotonic()
    with acting_as_host("host-c"):
        c = Store(store_url)
        assert gc.collect(c) == []  # within the timeout: nothing is lost yet
        assert time.monotonic() - killed_at < timeout
        time.sleep(timeout + 2 * 0.5 + 0.5)  # the timeout, and host-a's last beat's age
        lost = gc.collect(c)
    assert lost == [a.ids[0]], lost
    s = st.get_session(a.ids[0])
    assert s.state == "failed" and (s.reason or "").startswith("host host-a lost (no heartbeat "
                                                               "since"), s.reason
    ok, msg = st.verify(s.id)
    assert ok and "sealed" in msg, msg
    assert st.get_session(b.ids[0]).state == "running"  # a live host is left alone
    assert not gone(b.pids())
    assert not s.resources.get("released")
    # host-a comes back (the same host id): its gc ends what the dead owner left.
    with acting_as_host("host-a"):
        gc.collect(Store(store_url))
    assert wait_for(lambda: gone(pids_a), 10)
    after = st.get_session(a.ids[0])
    assert after.resources.get("released") is True and after.state == "failed"
    assert not Path(after.resources.get("include", "/nonexistent")).exists()
    doctor = json.loads(_cli(store_url, "doctor", "--json").stdout)
    fleet_check = next(c for c in doctor if c["name"] == "fleet")
    assert "host-b" in fleet_check["detail"]


def test_a_lost_host_whose_clock_ran_ahead_is_still_marked(
        store_url: str, fleet: Callable[..., Host], monkeypatch: pytest.MonkeyPatch) -> None:
    """A session row's `updated` was the writing host's own clock, and the lost-host
    check leaves a session "written to lately" alone: a dead host whose clock ran an hour
    ahead looked busy for that hour, its sessions never marked. The store's clock now
    stamps the row, as it does the heartbeats."""
    timeout = 2.0
    monkeypatch.setenv("SANDBOX_HOST_TIMEOUT", str(timeout))
    a = fleet("host-ahead", TEST_CLOCK_AHEAD_S="3600")
    st = Store(store_url)
    assert wait_for(lambda: "host-ahead" in {h["host"] for h in st.host_status()}, 10)
    assert abs(st.get_session(a.ids[0]).updated - time.time()) < 60  # the server's clock
    pids = a.pids()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    time.sleep(timeout + 2 * 0.5 + 0.5)
    with acting_as_host("host-c"):
        lost = gc.collect(Store(store_url))
    assert lost == [a.ids[0]], lost
    with acting_as_host("host-ahead"):
        gc.collect(Store(store_url))
    assert wait_for(lambda: gone(pids), 10)


def test_a_session_the_store_says_ended_is_stopped_by_its_owner(
        store_url: str, fleet: Callable[..., Host], monkeypatch: pytest.MonkeyPatch) -> None:
    """Marked ended elsewhere (a lost host that was only stalled, say): its owner's
    watcher kills it at the next heartbeat, so the jail does not outlive its record."""
    a = fleet("host-a", SANDBOX_HOST_TIMEOUT="2")
    pids = a.pids()
    with acting_as_host("host-c"):
        assert Store(store_url).finish_session(a.ids[0], "failed", "marked lost by a test")
    assert wait_for(lambda: gone(pids), 10)


def test_the_fleet_feed_misses_no_late_committed_alert(store_url: str) -> None:
    """PostgreSQL assigns ids at insert: an alert whose transaction commits after a
    newer one's is behind a reader that polled by id; `events_after` still returns it,
    once. (The old since_id read is shown to miss it.)"""
    st = Store(store_url)
    for sid, host in (("s1aaaaaaaa", "host-a"), ("s2bbbbbbbb", "host-b")):
        st.create_session(sid, profile="default", kind="api", workdir="/w", argv=[],
                          owner_pid=1, owner_start="x", host=host, user="u")
    rows, cursor = st.events_after(None, alerts_only=True)
    assert rows == []
    slow = psycopg.connect(store_url)  # a transaction that takes its id now, commits later
    try:
        slow.execute("INSERT INTO events(session_id, seq, ts, kind, severity, action, rule, "
                     "detail, prev_hash, hash, host) VALUES('s1aaaaaaaa', 1, 0, 'late', "
                     "'alert', 'flag', 'r', '{}', 'p', 'h', 'host-a')")
        with acting_as_host("host-b"):
            fast = Store(store_url).add_event("s2bbbbbbbb", "guard.verdict", {"x": 1},
                                              severity="alert", action="block", rule="r2")
        rows, cursor = st.events_after(cursor, alerts_only=True)
        assert [r.id for r in rows] == [fast.id]
        old_cursor = fast.id
        slow.commit()
    finally:
        slow.close()
    rows, cursor = st.events_after(cursor, alerts_only=True)
    assert [(r.kind, r.host) for r in rows] == [("late", "host-a")]
    assert rows[0].id < fast.id
    assert st.events(since_id=old_cursor, alerts_only=True) == []  # what a by-id read misses
    assert st.events_after(cursor, alerts_only=True)[0] == []  # and only once


def test_tui_shows_every_host_filters_by_host_and_kills_across_hosts(
        store_url: str, fleet: Callable[..., Host], monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUI on host-c: sessions of host-a (real, in another process) and host-b with a
    HOST column, `host:` filter, host-b's alert in the feed with its host, and `k` `y`
    on host-a's session kills it there."""
    from sandbox_tui.alert_feed import AlertFeed
    from sandbox_tui.app import SandboxApp
    from sandbox_tui.sessions_table import SessionsTable
    from textual.widgets import Input

    from tests.tui.conftest import run, wait_until

    a = fleet("host-a")
    with acting_as_host("host-b"):
        b = Store(store_url)
        b.create_session("b0b0b0b0b0", profile="pypi", kind="api", workdir="/w", argv=[],
                         owner_pid=1, owner_start="x", host="host-b", user="u")
        b.update_session("b0b0b0b0b0", state="running")
        b.add_event("b0b0b0b0b0", "net.attempt", {"dst_ip": "198.51.100.7"},
                    severity="alert", action="block", rule="tunnels.reverse_ssh")
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-c")
    store = Store(store_url)
    assert isinstance(store, PgStore)
    pids = a.pids()

    async def scenario() -> None:
        app = SandboxApp(store, poll_interval=0.1)
        async with app.run_test(size=(180, 48)) as pilot:
            table = app.screen.query_one(SessionsTable)
            feed = app.screen.query_one(AlertFeed)
            await wait_until(pilot, lambda: table.row_count == 2 and feed.row_count >= 1,
                             timeout=10)
            labels = [str(c.label) for c in table.columns.values()]
            assert labels[:2] == ["ID", "HOST"], labels
            hosts = {str(table.get_cell(sid, "host")) for sid in (a.ids[0], "b0b0b0b0b0")}
            assert hosts == {"host-a", "host-b"}
            assert "2 hosts" in str(app.screen.sub_title)
            alert = next(x for x in feed.alerts if x["session_id"] == "b0b0b0b0b0")
            assert alert["host"] == "host-b" and alert["rule"] == "tunnels.reverse_ssh"
            await pilot.press("slash")
            app.screen.query_one("#filter", Input).value = "host:host-a"
            await wait_until(pilot, lambda: table.row_count == 1)
            assert table.selected_id == a.ids[0]
            await pilot.press("enter")  # back to the table, the filter kept
            await pilot.press("k")
            await pilot.pause(0.2)
            await pilot.press("y")
            await wait_until(pilot, lambda: app.last_kill_results.get(a.ids[0]) == "killed",
                             timeout=15)

    run(scenario())
    assert wait_for(lambda: gone(pids), 10)
    assert store.get_session(a.ids[0]).state == "killed"
    assert "via tui" in (store.get_session(a.ids[0]).reason or "")


def test_a_lost_connections_end_is_replayed_once_the_store_is_back(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local record of a session killed by a lost connection is written into
    PostgreSQL by this host's next gc: killed, with the reason, and the chain verifies."""
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-a")
    st = Store(store_url)
    assert isinstance(st, PgStore)
    created = {"profile": "default", "kind": "api", "workdir": "/w", "argv": [],
               "owner_pid": os.getpid(), "owner_start": "x", "host": "host-a", "user": "u"}
    st.create_session("cafe000001", **created)
    st.update_session("cafe000001", state="running")
    st.add_command("cafe000001", text="echo hi", output="hi\n", exit_code=0, started=1.0,
                   duration=0.1)
    head = st.get_session("cafe000001")
    reason = "lost the event store: server closed the connection"
    st._losses.record_locally("cafe000001", reason, created, head.last_seq, head.head_hash)
    assert st.get_session("cafe000001").state == "running"
    assert "cafe000001" in gc.collect(st)
    s = st.get_session("cafe000001")
    assert s.state == "killed" and s.reason == reason
    kinds = [e.kind for e in st.events("cafe000001")]
    assert kinds[-2:] == ["store.lost", "session.end"]
    ok, msg = st.verify("cafe000001")
    assert ok and "sealed" in msg, msg
    assert "cafe000001" not in gc.collect(st)  # once


def test_a_schema_3_postgres_store_gains_heartbeats_and_the_watermark(store_url: str) -> None:
    st = Store(store_url)
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("DROP TABLE hosts")
        conn.execute("ALTER TABLE events DROP COLUMN tx")
        conn.execute("DELETE FROM schema_migrations")
        conn.execute("INSERT INTO schema_migrations VALUES(3, 'old', 0)")
        conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    Pool._migrated.discard((store_url, os.getpid()))
    again = Store(store_url)
    versions = [r["version"] for r in again._query(
        "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [3, 4]
    [col] = again._query("SELECT column_default FROM information_schema.columns WHERE "
                         "table_name='events' AND column_name='tx'")
    assert "pg_current_xact_id" in col["column_default"]
    assert again._query("SELECT 1 FROM pg_indexes WHERE indexname='events_tx'")
    st.create_session("m4m4m4m4m4", profile="default", kind="api", workdir="/w", argv=[],
                      owner_pid=1, owner_start="x", host="h", user="u")
    e = st.add_event("m4m4m4m4m4", "x", {}, severity="alert")
    [row] = again._query("SELECT tx FROM events WHERE id=?", (e.id,))
    assert row["tx"] and int(row["tx"]) > 0
    again.heartbeat(1, "x", beat=1.0, sessions=0)
    assert [h["host"] for h in again.host_status()] == [again.host]


def test_the_tui_stays_live_with_64_sessions_across_hosts(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 live sessions over 2 hosts (rows written as each host would): every one is
    shown with its host, and a command or an alert recorded on either host reaches the
    table and the feed within a few polls while all 64 are there."""
    from sandbox_tui.alert_feed import AlertFeed
    from sandbox_tui.app import SandboxApp
    from sandbox_tui.sessions_table import SessionsTable

    from tests.tui.conftest import run, wait_until

    stores = {}
    for host in ("host-a", "host-b"):
        with acting_as_host(host):
            stores[host] = st = Store(store_url)
        for i in range(32):
            sid = f"{host[-1]}{i:09d}"
            st.create_session(sid, profile="default", kind="api", workdir="/w", argv=[],
                              owner_pid=1, owner_start="x", host=host, user="u")
            st.update_session(sid, state="running")
            st.add_command(sid, text="true", output="", exit_code=0, started=1.0,
                           duration=0.001)
    monkeypatch.setenv("SANDBOX_HOST_ID", "host-c")

    async def scenario() -> None:
        app = SandboxApp(Store(store_url), poll_interval=0.1)
        async with app.run_test(size=(180, 80)) as pilot:
            table = app.screen.query_one(SessionsTable)
            feed = app.screen.query_one(AlertFeed)
            await wait_until(pilot, lambda: table.row_count == 64, timeout=10)
            assert table.with_host
            assert "64 live · 64 sessions" in str(app.screen.sub_title)
            for rnd in range(3):
                for host, st in stores.items():
                    sid = f"{host[-1]}{rnd * 7:09d}"
                    st.add_command(sid, text=f"echo {rnd}", output="", exit_code=0,
                                   started=2.0, duration=0.001)
                    st.add_event(sid, "guard.verdict", {"n": rnd}, severity="alert",
                                 action="flag", rule=f"r{rnd}")
                    await wait_until(pilot, lambda sid=sid, rnd=rnd: str(
                        table.get_cell(sid, "cmds")) == "2" and any(
                        a["session_id"] == sid and a["rule"] == f"r{rnd}"
                        for a in feed.alerts), timeout=5, what=f"{sid} updated")
            assert {a["host"] for a in feed.alerts} == {"host-a", "host-b"}
            assert feed.with_host

    run(scenario())
