"""Rows 11 and 17: the framework door with many sandboxes: N AsyncSandboxes in one event
loop (start, exec latency and throughput with all alive, memory, threads), on the joined
path (row 11) and with `[exec] fast` (row 17), beside the join floor round robin and the
same exec with one sandbox alive."""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time

import psutil

from sandbox import AsyncSandbox

from .boxes import memory, tree
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable
from .row_exec import MIB, MS, _atimed, _join, _Loop, _p99_line


def _threads() -> tuple[int, str]:
    names = collections.Counter(
        t.name.split("_")[0].rstrip("0123456789-") or t.name for t in threading.enumerate())
    return psutil.Process().num_threads(), ", ".join(f"{k} x{v}" for k, v in
                                                     names.most_common(6))


def _fds() -> tuple[int, int]:
    fds = [int(f) for f in os.listdir("/proc/self/fd")]
    return len(fds), max(fds)


def _cpu() -> tuple[float, float, float]:
    """(owner CPU s, reaped children's CPU s, wall s) now."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system, time.perf_counter()


class _CpuUse:
    """CPU seconds of the owner and of the joins it reaped, over some spans."""

    def __init__(self) -> None:
        self.owner = self.children = self.wall = 0.0

    def add(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> None:
        self.owner += b[0] - a[0]
        self.children += b[1] - a[1]
        self.wall += b[2] - a[2]

    def text(self, n: int) -> str:
        if not n or not self.wall:
            return ""
        return (f"{n / self.wall:.0f} execs/s; CPU per exec: owner {self.owner / n * MS:.1f} "
                f"ms, join + `true` {self.children / n * MS:.1f} ms")


async def _idle_cpu(seconds: float) -> tuple[float, str]:
    """Owner CPU (% of a core) while the loop sleeps, and the busiest threads."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    me = psutil.Process()
    before = {t.id: t.user_time + t.system_time for t in me.threads()}
    a = _cpu()
    await asyncio.sleep(seconds)
    b = _cpu()
    busy = collections.Counter[str]()
    for t in me.threads():
        used = t.user_time + t.system_time - before.get(t.id, 0.0)
        busy[names.get(t.id, str(t.id))] += used
    top = ", ".join(f"{k} {v / (b[2] - a[2]) * 100:.0f} %" for k, v in busy.most_common(3))
    return (b[0] - a[0]) / (b[2] - a[2]) * 100.0, top


def _failure(sb: AsyncSandbox, e: BaseException) -> str:
    """What the record says about a sandbox that failed to start (for the notes)."""
    s = sb._session
    agent = s.placement.agent.name if s.placement and s.placement.agent else None
    try:
        events = [f"{ev['kind']} {str(ev['detail'])[:160]}" for ev in
                  s.store.events(s.id)[-4:]]
    except Exception as x:
        events = [f"(no events: {x})"]
    return (f"first failed start: {s.id} as {agent}: {type(e).__name__}: {str(e)[:160]}; "
            f"last events: {' | '.join(events)}")


def many_fast(ctx: Ctx) -> Row:
    """`many` with the profile's `[exec] fast` on: every sandbox's execs forked by its
    in-jail helper (issue 20)."""
    return many(ctx, fast=True)


def many(ctx: Ctx, fast: bool = False) -> Row:
    """N AsyncSandboxes in one event loop: start, exec latency with all alive, memory,
    threads; vs the same exec with one sandbox alive. Fresh workspaces (workdir=None, as
    the framework adapters use), one pool uid each. Throughput: execs finished per second
    of wall time while 16 (or all) are in flight."""
    import dataclasses

    from sandbox.jail import users
    from sandbox.jail.profile import ExecSection, load

    n = int(ctx.extra.get("many", 256))
    profile = dataclasses.replace(load("default"), exec=ExecSection(fast=fast))
    row = Row("many_fast" if fast else "many",
              f"Framework door: {n} AsyncSandboxes in one event loop"
              + (", fast exec" if fast else ""))
    rounds = ctx.reps(4, 2)
    base_n = ctx.reps(200, 40)
    bound = 16  # bounded-concurrency variant: execs in flight at once
    dl = Deadline(600)
    old_pool = users.POOL_SIZE
    users.POOL_SIZE = max(old_pool, n + 16)  # read at call time (also SANDBOX_AGENT_POOL)
    aloop = _Loop()
    me = psutil.Process(os.getpid())
    sbs: list[AsyncSandbox] = []
    errors: collections.Counter[str] = collections.Counter()
    base: list[float] = []
    alone_t: list[float] = []
    floor: list[float] = []
    start_t: list[float] = []
    ready_t: list[float] = []
    seq: list[float] = []
    bnd: list[float] = []
    unb: list[float] = []
    rate: dict[str, list[float]] = {"bnd": [], "unb": []}  # execs per second of wall
    wall = 0.0
    live: list[AsyncSandbox] = []
    mem: tuple[float, float, float] | None = None
    threads_before = threads_alive = ""
    nthreads = (0, 0)
    fds = (0, 0, 0)

    first_failure: list[str] = []
    idle: list[tuple[float, str]] = []
    cpu = {k: _CpuUse() for k in ("floor", "seq", "bnd", "unb")}

    def err(e: BaseException) -> None:
        errors[f"{type(e).__name__}: {str(e)[:200]}"] += 1

    async def baseline(k: int, starts: int) -> None:
        """Start to ready and exec latency with this one sandbox alive."""
        for j in range(starts):
            one = AsyncSandbox(profile)
            try:
                t0 = time.perf_counter()
                await one.start()
                await one.exec(["true"])
                alone_t.append((time.perf_counter() - t0) * MS)
                for _ in range(k // starts + (j < k % starts)):
                    if not dl.left():
                        break
                    base.append(await _atimed(one.exec(["true"])) * MS)
            finally:
                await one.close()

    async def start_one(sb: AsyncSandbox, t0: float) -> None:
        try:
            await sb.start()
            start_t.append((time.perf_counter() - t0) * MS)
            await sb.exec(["true"])
            ready_t.append((time.perf_counter() - t0) * MS)
            live.append(sb)
        except Exception as e:
            err(e)
            if not first_failure:
                first_failure.append(_failure(sb, e))

    async def one_exec(sb: AsyncSandbox, out: list[float]) -> None:
        try:
            out.append(await _atimed(sb.exec(["true"], timeout=60)) * MS)
        except Exception as e:
            err(e)

    async def bounded(out: list[float]) -> None:
        queue = collections.deque(live)

        async def worker() -> None:
            while queue and dl.left():
                await one_exec(queue.popleft(), out)

        await asyncio.gather(*(worker() for _ in range(bound)))

    async def measure() -> None:
        nonlocal wall, mem, threads_before, threads_alive, nthreads, fds, close_all
        # Pool users exist before the clock runs (created once per machine, useradd).
        made = time.perf_counter()
        for i in range(users.POOL_SIZE):
            name = f"{users.AGENT_USER}-{i}"
            users.ensure_agent_user(name, users.POOL_HOMES / name)
        made = time.perf_counter() - made
        if made > 1.0:
            row.notes.append(f"created pool users up to {users.POOL_SIZE} first ({made:.0f} s)")
        await baseline(base_n // 2, 3)
        idle.append(await _idle_cpu(3.0))
        nthreads_before, threads_before = _threads()
        fd_before = _fds()[0]
        owner_before = me.memory_info().rss
        sbs.extend(AsyncSandbox(profile) for _ in range(n))
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(start_one(sb, t0) for sb in sbs)),
                                   max(1.0, dl.remaining() - 120))
        except TimeoutError:
            errors["start: time bound hit"] += 1
        wall = time.perf_counter() - t0
        if not live:
            return
        owner_share = (me.memory_info().rss - owner_before) / len(live)
        rss = pss = 0.0
        for sb in live:
            r, p = memory(tree(sb._session.jail_pid))
            rss += r
            pss += p
        mem = (rss / len(live), pss / len(live), owner_share)
        idle.append(await _idle_cpu(3.0))
        nthreads_alive, threads_alive = _threads()
        nthreads = (nthreads_before, nthreads_alive)
        count, top = _fds()
        fds = (fd_before, count, top)
        # Exec with all alive: one pass of each variant per round, interleaved.
        for _ in range(rounds):
            for sb in live:  # one at a time, round robin, the bare join next to it
                if not dl.left():
                    break
                c0 = _cpu()
                try:
                    t0 = time.perf_counter()
                    _join(sb._session, ["true"])
                    floor.append((time.perf_counter() - t0) * MS)
                except Exception as e:
                    err(e)
                c1 = _cpu()
                await one_exec(sb, seq)
                cpu["floor"].add(c0, c1)
                cpu["seq"].add(c1, _cpu())
            if dl.left():
                c0, had, t0 = _cpu(), len(bnd), time.perf_counter()
                await bounded(bnd)
                rate["bnd"].append((len(bnd) - had) / (time.perf_counter() - t0))
                cpu["bnd"].add(c0, _cpu())
            if dl.left():  # every sandbox at once
                c0, had, t0 = _cpu(), len(unb), time.perf_counter()
                await asyncio.gather(*(one_exec(sb, unb) for sb in live))
                rate["unb"].append((len(unb) - had) / (time.perf_counter() - t0))
                cpu["unb"].add(c0, _cpu())
        t0 = time.perf_counter()
        await asyncio.gather(*(sb.close() for sb in sbs), return_exceptions=True)
        close_all = time.perf_counter() - t0
        await baseline(base_n - base_n // 2, 3)

    close_all = 0.0
    try:
        aloop.run(measure(), timeout=dl.remaining() + 60)
    except Exception as e:
        err(e)
    finally:
        # Starts still running in the executor finish first (queued ones were cancelled);
        # then every sandbox is closed, started or not (close is idempotent).
        aloop.close()
        for sb in sbs:
            try:
                sb._session.close()
            except Exception as e:
                err(e)
        users.POOL_SIZE = old_pool
    k = len(live)
    bl = "exec, 1 sandbox alive"
    goal = Goal("p99 <= 50 ms", lambda v: v <= 50.0, on="value")
    row.add(Line(bl, "ms", stat(base)) if base else unavailable(bl, "ms", "no samples"))
    row.add(_p99_line(f"{bl}: p99", base))
    sl = "start to ready (+ first exec), 1 at a time"
    if alone_t:
        row.add(Line(sl, "ms", stat(alone_t), note="nothing else starting"))
    if start_t:
        row.add(Line(f"start(), {n} started at once", "ms", stat(start_t),
                     note=f"{k} of {n} ready; per sandbox, from the common start"))
        row.add(_p99_line(f"start(), {n} at once: p99", start_t))
    if ready_t:
        row.add(Line(f"start to ready (+ first exec), {n} at once", "ms", stat(ready_t),
                     baseline=sl if alone_t else None))
        row.add(_p99_line(f"start to ready, {n} at once: p99", ready_t))
        row.add(Line(f"all {n} ready: total wall", "s", stat([wall])))
    fl = f"firejail --join floor, round robin over {k} alive"
    if floor:
        row.add(Line(fl, "ms", stat(floor), baseline=bl,
                     note="exec's join as a plain subprocess, interleaved with the next line; "
                          + cpu["floor"].text(len(floor))))
        row.add(_p99_line(f"{fl}: p99", floor))
    for name, samples, g, use in (
            (f"exec, round robin over {k} alive (1 in flight)", seq,
             Goal("p99 <= 10 ms", lambda v: v <= 10.0, on="value") if fast else goal,
             cpu["seq"]),
            (f"exec, {k} alive, {min(bound, k)} in flight", bnd, goal, cpu["bnd"]),
            (f"exec, {k} alive, all {k} in flight", unb, None, cpu["unb"])):
        if samples:
            row.add(Line(name, "ms", stat(samples), baseline=bl, note=use.text(len(samples))))
            row.add(_p99_line(f"{name}: p99", samples, goal=g))
        else:
            row.add(unavailable(name, "ms", "no sandbox alive" if not k else "no samples"))
    for key, what in (("bnd", f"{min(bound, k)} in flight"), ("unb", f"all {k} in flight")):
        if rate[key]:
            row.add(Line(f"execs/s, {k} alive, {what}", "/s", stat(rate[key]),
                         goal=Goal(">= 500/s", lambda v: v >= 500.0, on="value")
                         if key == "bnd" else None,
                         note="finished per second of wall, whole host"))
    if fast:
        row.notes.append("profile `[exec] fast = true`: execs forked by each sandbox's "
                         "in-jail helper (fastexec)")
    if mem:
        rss, pss, share = mem
        row.add(Line("memory per sandbox (RSS)", "MiB", stat([(rss + share) / MIB]),
                     note=f"firejail x2 + bash + owner share {share / MIB:.2f} MiB"))
        row.add(Line("memory per sandbox (PSS)", "MiB", stat([(pss + share) / MIB]),
                     note="shared pages split among sharers"))
    if len(idle) == 2:
        il = "owner CPU, idle, nothing alive"
        row.add(Line(il, "% core", stat([idle[0][0]]), note=idle[0][1]))
        row.add(Line(f"owner CPU, idle, {k} alive", "% core", stat([idle[1][0]]),
                     baseline=il, note=f"3 s of the loop asleep; busiest: {idle[1][1]}"))
    if nthreads[1]:
        row.add(Line(f"owner threads, {k} alive", "threads", stat([float(nthreads[1])]),
                     note=f"{nthreads[0]} before; {threads_alive}"))
        row.notes.append(f"owner fds: {fds[0]} before, {fds[1]} with {k} alive (highest "
                         f"fd {fds[2]})")
    if close_all:
        row.notes.append(f"closing all {len(sbs)} at once took {close_all:.2f} s")
    for e, c in errors.most_common(5):
        row.notes.append(f"error x{c}: {e}")
    if k < n:
        row.notes.append(f"only {k} of {n} sandboxes reached ready")
    row.notes.extend(first_failure)
    return row
