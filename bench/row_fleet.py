"""Row 13: a fleet's store: commands recorded per second with 64 sessions over 2 hosts
(PostgreSQL vs SQLite, same run), and the kill latency across hosts (NOTIFY vs polling).

Each "host" is a separate supervisor process (`python -c WORKER`, its own
SANDBOX_HOST_ID) on this machine. Throughput: 2 processes x 32 sessions, each session
a thread running `run("true")` in a loop for a fixed window started at the same moment
in both; the figure is the commands recorded in the store during the window (counted
in the store itself) per second, one sample per window. The PostgreSQL server is a
throwaway one started for the row (`sandbox/record/pgserver.py`: initdb into a temp dir,
loopback TCP, SCRAM, fsync off as in the tests; stopped and removed at the end).

Kill: host A holds a session with a small tree (bash + two background sleeps); this
process, as host B, writes the kill request (`Store.request_kill`, what `sandbox kill`
and the TUI write) and /proc is polled until every process of the session is gone. One
host A listens (LISTEN/NOTIFY, the default), the other polls (`SANDBOX_STORE_NOTIFY=0`,
every 25 ms); the two variants alternate within each round.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sandbox import Store
from sandbox.paths import acting_as_host

from .boxes import wait_gone
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable

MS = 1000.0
GOAL_KILL = Goal("<= 200 ms", lambda v: v <= 200.0, on="value")
SESSIONS_PER_HOST = 32

# A supervisor process. `load WS...`: one session per workspace, "ready", then per
# "go SECONDS" line every session runs run("true") until the window ends and the total
# is printed. `kill WS`: per "new" line a fresh session with a small tree, its id and
# pids printed. Both end (closing every session) when stdin closes.
WORKER = r"""
import json, os, sys, threading, time
import psutil
from sandbox import Sandbox

def tree(pid):
    p = psutil.Process(pid)
    return [pid] + [c.pid for c in p.children(recursive=True)]

mode, wss = sys.argv[1], sys.argv[2:]
boxes = []
try:
    if mode == "load":
        errs = []
        def start(ws):
            try:
                b = Sandbox(workdir=ws); b.start(); b.run("true"); boxes.append(b)
            except Exception as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=start, args=(w,)) for w in wss]
        for t in ts: t.start()
        for t in ts: t.join()
        print(json.dumps({"ready": len(boxes), "errors": errs[:3]}), flush=True)
        for line in sys.stdin:
            end = time.time() + float(line.split()[1])
            counts = [0] * len(boxes)
            def loop(i, b):
                while time.time() < end:
                    b.run("true"); counts[i] += 1
            ts = [threading.Thread(target=loop, args=(i, b)) for i, b in enumerate(boxes)]
            for t in ts: t.start()
            for t in ts: t.join()
            print(json.dumps({"commands": sum(counts)}), flush=True)
    else:
        for line in sys.stdin:
            for b in boxes: b.close()
            b = Sandbox(workdir=wss[0]); b.start(); boxes.append(b)
            b.run("sleep 1000 & sleep 1000 & true")
            print(json.dumps({"id": b.id, "pids": tree(b._session.jail_pid)}), flush=True)
finally:
    for b in boxes: b.close()
"""


class _Worker:
    def __init__(self, ctx: Ctx, mode: str, host: str, env: dict[str, str], n: int) -> None:
        wss = [str(ctx.workspace()) for _ in range(n)]
        self.proc = subprocess.Popen(
            [ctx.python, "-c", WORKER, mode, *wss], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SANDBOX_HOST_ID": host, **env})
        self.err: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:  # stderr must never fill its pipe (64 sessions log)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err = [*self.err, line][-20:]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a bench host died: " + "".join(self.err)[-600:])
        out: dict[str, Any] = json.loads(line)
        return out

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _pg_server(ctx: Ctx) -> Any:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from sandbox.record.pgserver import PgServer, pg_bindir

    if pg_bindir() is None:
        raise RuntimeError("PostgreSQL is not installed (scripts/bootstrap.sh installs it)")
    return PgServer(ctx.root).start()


def _throughput(ctx: Ctx, env: dict[str, str], window: float, rounds: int,
                count: Any) -> tuple[list[float], list[str]]:
    """Commands per second recorded (by the store's count) over `rounds` windows."""
    hosts = [_Worker(ctx, "load", f"bench-{h}", env, SESSIONS_PER_HOST) for h in "ab"]
    notes: list[str] = []
    samples: list[float] = []
    try:
        ready = [w.read() for w in hosts]
        for r in ready:
            if r["ready"] != SESSIONS_PER_HOST:
                notes.append(f"a host started {r['ready']}/{SESSIONS_PER_HOST} sessions: "
                             f"{r['errors']}")
        for _ in range(rounds):
            before = count()
            for w in hosts:
                w.send(f"go {window}")
            reported = sum(int(w.read()["commands"]) for w in hosts)
            recorded = count() - before
            if recorded != reported:
                notes.append(f"recorded {recorded} commands, hosts ran {reported}")
            samples.append(recorded / window)
    finally:
        for w in hosts:
            w.stop()
    return samples, notes


def run(ctx: Ctx) -> Row:
    row = Row("fleet", "Fleet store: 64 sessions over 2 hosts, kill across hosts")
    try:
        server = _pg_server(ctx)
    except Exception as e:
        why = f"no PostgreSQL server: {e}"
        for name in ("PostgreSQL: cmd/s, 2 hosts x 32 sessions",
                     "SQLite: cmd/s, 2 procs x 32, one file"):
            row.add(unavailable(name, "cmd/s", why))
        return row
    try:
        url = server.createdb("bench_fleet")
        pg = Store(url)
        window = 5.0 if ctx.quick else 10.0
        rounds = ctx.reps(3, 1)

        def pg_count() -> int:
            return int(pg._query("SELECT count(*) AS n FROM commands")[0]["n"])

        sqlite_path = ctx.root / "fleet-sqlite" / "sandbox.db"
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        lite = Store(sqlite_path)

        def lite_count() -> int:
            return int(lite._query("SELECT count(*) AS n FROM commands")[0]["n"])

        pg_name = "PostgreSQL: cmd/s, 2 hosts x 32 sessions"
        lite_name = "SQLite: cmd/s, 2 procs x 32, one file"
        results: dict[str, list[float]] = {}
        for name, env, count in ((pg_name, {"SANDBOX_STORE": url}, pg_count),
                                 (lite_name, {"SANDBOX_STORE": str(sqlite_path)}, lite_count)):
            try:
                results[name], notes = _throughput(ctx, env, window, rounds, count)
                row.notes.extend(notes)
            except Exception as e:
                row.notes.append(f"{name}: {type(e).__name__}: {e}")
        for name in (pg_name, lite_name):
            if results.get(name):
                row.add(Line(name, "cmd/s", stat(results[name]),
                             baseline=lite_name if name == pg_name else None,
                             ratio_kind="%"))
            else:
                row.add(unavailable(name, "cmd/s", "the run failed (see notes)"))
        if results.get(pg_name):
            per_host = stat(results[pg_name]).median / 2
            row.notes.append(f"PostgreSQL: ~{per_host:.0f} commands/s per host; each command "
                             "is 2 write transactions (the session's current command, then "
                             "the chained row with the counters): ~"
                             f"{per_host * 2:.0f} transactions/s per host")
        _kills(ctx, row, url)
    finally:
        server.remove()
    row.notes.append(f"{window:g} s windows, {rounds} per backend; PostgreSQL measured first, "
                     "then SQLite (each 64 sessions started fresh); server: fsync off, "
                     "loopback, same 2 cores as the hosts")
    return row


def _kills(ctx: Ctx, row: Row, url: str) -> None:
    notify = "kill B->A, LISTEN/NOTIFY"
    poll = "kill B->A, polling (NOTIFY off, 25 ms)"
    workers = {notify: _Worker(ctx, "kill", "bench-a", {"SANDBOX_STORE": url}, 1),
               poll: _Worker(ctx, "kill", "bench-a2", {"SANDBOX_STORE": url,
                                                       "SANDBOX_STORE_NOTIFY": "0"}, 1)}
    samples: dict[str, list[float]] = {k: [] for k in workers}
    failed = dict.fromkeys(workers, 0)
    reps = ctx.reps(15, 4)
    dl = Deadline(180)
    try:
        with acting_as_host("bench-b"):
            store = Store(url)
            for i in range(reps + 1):  # round 0: a discarded warm-up
                if not dl.left():
                    break
                order = list(workers) if i % 2 == 0 else list(reversed(workers))
                for name in order:
                    w = workers[name]
                    w.send("new")
                    info = w.read()
                    time.sleep(0.2 + random.random() * 0.1)  # any phase of the poll
                    t0 = time.perf_counter()
                    store.request_kill(info["id"], "bench on host B")
                    took = wait_gone(info["pids"], timeout=5.0)
                    if took is None:
                        failed[name] += 1
                    elif i > 0:
                        samples[name].append((time.perf_counter() - t0) * MS)
    finally:
        for w in workers.values():
            w.stop()
    for name in (notify, poll):
        if samples[name]:
            row.add(Line(name, "ms", stat(samples[name]), goal=GOAL_KILL,
                         baseline=poll if name == notify else None))
        else:
            row.add(unavailable(name, "ms", f"processes still alive after 5 s "
                                f"({failed[name]}x)", goal=GOAL_KILL))
        if failed[name]:
            row.notes.append(f"{name}: {failed[name]} kill(s) left processes after 5 s")
