"""Rows 2 and 3: per-command overhead and recorded output throughput."""

from __future__ import annotations

import errno
import os
import subprocess
import time

from . import peers
from .boxes import sandbox
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable

MS = 1000.0
MB = 1e6


def per_command(ctx: Ctx) -> Row:
    """`true` N times through `Sandbox.run` (recorded in the store) vs subprocess, SWE-ReX."""
    row = Row("per_command", "Per-command overhead (`true`)")
    n = ctx.reps(1000, 200)
    dl = Deadline(120)
    ours: list[float] = []
    with sandbox(ctx) as sb:
        for _ in range(20):  # warm-up
            sb.run("true")
        while len(ours) < n and dl.left():
            t0 = time.perf_counter()
            sb.run("true")
            ours.append(time.perf_counter() - t0)
    base: list[float] = []
    while len(base) < n and dl.left():
        t0 = time.perf_counter()
        subprocess.run(["true"], check=False)
        base.append(time.perf_counter() - t0)
    row.add(Line("subprocess.run(['true'])", "ms", stat([v * MS for v in base]),
                 note="a fresh process, no jail, nothing recorded"))
    row.add(Line("sandbox Sandbox.run('true')", "ms", stat([v * MS for v in ours]),
                 baseline="subprocess.run(['true'])",
                 goal=Goal("<= 1 ms incl. recording", lambda v: v <= 1.0, on="value"),
                 note="jailed bash, fork+exec of `true`, SQLite row + hash chain"))
    why = peers.swerex_problem()
    sx_name = "SWE-ReX run_in_session('true')"
    if why is None:
        try:
            m = ctx.reps(100, 20)
            data = peers.swerex(starts=0, commands=m, budget_s=60)
            vals = [v * MS for v in data["per_command"]]
            row.add(Line(sx_name, "ms", stat(vals), note="LocalRuntime, no sandbox"))
            row.add(Line("speed-up of sandbox over SWE-ReX", "ms", stat([v * MS for v in ours]),
                         baseline=sx_name, ratio_kind="inv",
                         goal=Goal(">= 100x faster", lambda r: r >= 100)))
        except (RuntimeError, KeyError, ValueError) as e:
            why = str(e)
    if why is not None:
        row.add(unavailable(sx_name, "ms", why, goal=Goal(">= 100x faster", lambda r: True)))
    if len(ours) < n:
        row.notes.append(f"time bound hit: {len(ours)} of {n} commands")
    return row


def _raw_pty(nbytes: int, timeout: float = 60.0) -> float:
    """Seconds to read `nbytes` from a raw PTY a child writes into (64 KiB reads, no record)."""
    master, slave = os.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(["head", "-c", str(nbytes), "/dev/zero"], stdout=slave,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(slave)
    got = 0
    end = time.monotonic() + timeout
    try:
        while got < nbytes and time.monotonic() < end:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:
                if e.errno == errno.EIO:  # the writer closed the PTY
                    break
                raise
            if not chunk:
                break
            got += len(chunk)
        return time.perf_counter() - t0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def throughput(ctx: Ctx) -> Row:
    """`head -c N /dev/zero` recorded in the sandbox (profile cap) vs a raw PTY read loop."""
    row = Row("throughput", "Recorded output throughput")
    nbytes = 200_000_000 if not ctx.quick else 50_000_000
    reps = ctx.reps(5, 2)
    dl = Deadline(180)
    raw: list[float] = []
    ours: list[float] = []
    truncated = False
    with sandbox(ctx) as sb:
        sb.run("true")
        i = 0
        while i < reps and dl.left():
            raw.append(nbytes / MB / _raw_pty(nbytes))
            t0 = time.perf_counter()
            r = sb.run(f"head -c {nbytes} /dev/zero", timeout=120)
            ours.append(nbytes / MB / (time.perf_counter() - t0))
            truncated = truncated or r.truncated
            i += 1
    row.add(Line(f"raw PTY read, {nbytes // 1_000_000} MB", "MB/s", stat(raw),
                 note="os.openpty + a child writing, 64 KiB reads, nothing kept"))
    row.add(Line(f"sandbox run('head -c {nbytes}')", "MB/s", stat(ours),
                 baseline=f"raw PTY read, {nbytes // 1_000_000} MB", ratio_kind="%",
                 goal=Goal(">= 80 % of raw", lambda r: r >= 80.0),
                 note=("head+tail kept within max_output_bytes" if truncated else "")))
    return row
