"""Row 12: a warm pool's `acquire` against a cold start, in the same run.

`WarmPool.warm(2)` keeps two `AsyncSandbox`es (fresh workspaces) started; the warm figure
is `await pool.acquire()` returning a started sandbox, the cold one `AsyncSandbox().start()`.
Each round runs both (order alternating, one discarded warm-up round) and then the first
`exec(["true"])` of each, so "to first exec" compares what an episode waits for. Before a
warm acquire the pool is let refill (untimed): the figure is a ready pool's, and a fallback
to a cold start (pool empty) would be counted and noted, not hidden.
"""

from __future__ import annotations

import time

from sandbox import AsyncSandbox
from sandbox.doors.pool import WarmPool

from .core import Ctx, Deadline, Goal, Line, Row, run_async, stat

MS = 1000.0
COLD = "cold: `AsyncSandbox().start()`"
COLD_EXEC = "cold: start + first `exec(['true'])`"


def run(ctx: Ctx) -> Row:
    row = Row("pool", "Warm pool: `acquire()` vs a cold start")
    n = ctx.reps(40, 8)
    dl = Deadline(240)
    s: dict[str, list[float]] = {k: [] for k in ("warm", "warm_exec", "cold", "cold_exec")}
    stats: dict[str, object] = {}

    async def warm_once(pool: WarmPool, keep: bool) -> None:
        await pool.wait_ready(timeout=120)  # untimed: the pool is full again
        t0 = time.perf_counter()
        sb = await pool.acquire()
        t1 = time.perf_counter()
        try:
            await sb.exec(["true"])
            t2 = time.perf_counter()
        finally:
            await pool.release(sb)
        if keep:
            s["warm"].append((t1 - t0) * MS)
            s["warm_exec"].append((t2 - t0) * MS)

    async def cold_once(keep: bool) -> None:
        sb = AsyncSandbox()
        try:
            t0 = time.perf_counter()
            await sb.start()
            t1 = time.perf_counter()
            await sb.exec(["true"])
            t2 = time.perf_counter()
        finally:
            await sb.close()
        if keep:
            s["cold"].append((t1 - t0) * MS)
            s["cold_exec"].append((t2 - t0) * MS)

    async def body() -> None:
        pool = WarmPool()
        try:
            pool.warm(2, profile="default")
            for i in range(-1, n):
                if not dl.left():
                    break
                pair = [warm_once(pool, i >= 0), cold_once(i >= 0)]
                for step in pair if i % 2 else pair[::-1]:
                    await step
            stats.update(pool.stats("default"))
        finally:
            await pool.close()

    run_async(body(), 300)

    row.add(Line(COLD, "ms", stat(s["cold"]), note="fresh workspace, jail, shell; the "
                 "baseline"))
    row.add(Line("warm: `await pool.acquire()`", "ms", stat(s["warm"]), baseline=COLD,
                 ratio_kind="inv", goal=Goal("<= 5 ms", lambda v: v <= 5.0, on="value"),
                 note="a started sandbox, never used before (pool of 2, refilled between "
                      "rounds)"))
    row.add(Line(COLD_EXEC, "ms", stat(s["cold_exec"])))
    row.add(Line("warm: acquire + first `exec(['true'])`", "ms", stat(s["warm_exec"]),
                 baseline=COLD_EXEC, ratio_kind="inv"))
    if stats.get("cold_starts"):
        row.notes.append(f"{stats['cold_starts']} acquire(s) found the pool empty and "
                         "cold-started")
    row.notes.append(f"pool: {stats.get('warm_hits')} warm hits, {stats.get('started')} "
                     f"warm starts (mean {float(stats.get('mean_start_s') or 0) * MS:.0f} ms "
                     "each, in the background)")
    return row
