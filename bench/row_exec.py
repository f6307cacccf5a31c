"""Rows 9-11: the framework door (`Sandbox.exec`, `AsyncSandbox.exec`, files, many sandboxes
in one event loop) against the floor of entering a running jail and inspect-ai's `local`.

The floor is the join `exec` makes (`firejail --quiet --join=<jail pid> -- argv`, the
session's environment and child-side launch: cgroup, rlimits, TIOCSTI filter, drop to the
agent user) run with `subprocess.run`, without the guard check, the record, the monitor's
settle or the asyncio plumbing. inspect-ai's `LocalSandboxEnvironment` runs the command on
the host with no sandbox at all (its files are plain `open()` calls in a temp dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from sandbox import AsyncSandbox, Sandbox
from sandbox.jail import launch, spawn

from .core import Ctx, Deadline, Goal, Line, Row, Stat, stat, unavailable

MS = 1000.0
MIB = 1024.0 * 1024.0
T = TypeVar("T")


# -- shared pieces ------------------------------------------------------------------------


def _join(sess: Any, argv: list[str], data: bytes | None = None) -> bytes:
    """The floor: the join `Exec.popen` runs, as a plain subprocess (stdout back)."""
    join = [launch.tool("firejail"), "--quiet", sess.join_flag(), "--", *argv]
    p = spawn.popen(join, sess.launcher(), env=sess.env(), cwd=str(sess.workdir),
                    stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # as `Exec.popen`
    out, err = p.communicate(data, timeout=60)
    proc = subprocess.CompletedProcess(join, p.returncode, out, err)
    if proc.returncode != 0:
        raise RuntimeError(f"floor join {argv} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def _atimed(aw: Awaitable[object]) -> float:
    t0 = time.perf_counter()
    await aw
    return time.perf_counter() - t0


def _inspect_local() -> tuple[Any, str]:
    """inspect-ai's unsandboxed `local` provider, or None and why not."""
    try:
        from inspect_ai.util._sandbox.local import LocalSandboxEnvironment
    except ImportError as e:
        return None, f"inspect-ai not importable: {e}"
    return LocalSandboxEnvironment(), ""


class _Loop:
    """A private asyncio loop for the async variants; times are taken inside it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _p99_line(name: str, samples: list[float], **kw: Any) -> Line:
    """A line whose figure is the p99 (and the max in the note)."""
    if not samples:
        return unavailable(name, "ms", "no samples", **kw)
    p99 = _pct(samples, 0.99)
    note = kw.pop("note", "")
    note = f"p99 of n={len(samples)}, max {max(samples):.1f} ms" + (f"; {note}" if note else "")
    return Line(name, "ms", Stat(p99, p99, p99, 1), note=note, **kw)


# -- row 9: exec ---------------------------------------------------------------------------


def exec_row(ctx: Ctx) -> Row:
    """`exec(["true"])`, sync and async, vs the bare join and inspect's local, interleaved."""
    row = Row("exec", "Framework door: `exec(['true'])`")
    n = ctx.reps(300, 40)
    dl = Deadline(240)
    aloop = _Loop()
    local, why_local = _inspect_local()
    sb = Sandbox(workdir=ctx.workspace())
    asb = AsyncSandbox(workdir=ctx.workspace())
    floor: list[float] = []
    sync: list[float] = []
    asyn: list[float] = []
    loc: list[float] = []
    try:
        sb.start()
        aloop.run(asb.start())
        variants: list[tuple[list[float], Callable[[], float]]] = [
            (floor, lambda: _timed(lambda: _join(sb._session, ["true"]))),
            (sync, lambda: _timed(lambda: sb.exec(["true"]))),
            (asyn, lambda: aloop.run(_atimed(asb.exec(["true"])))),
        ]
        if local is not None:
            variants.append((loc, lambda: aloop.run(_atimed(local.exec(["true"])))))
        for i in range(-3, n):  # three discarded warm-up rounds
            if not dl.left():
                break
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for samples, once in order:
                took = once()
                if i >= 0:
                    samples.append(took * MS)
        r = sb.exec(["true"])
        if r.returncode != 0:
            row.notes.append(f"Sandbox.exec(['true']) returned {r.returncode}")
    finally:
        sb.close()
        with contextlib.suppress(Exception):
            aloop.run(asb.close())
        if local is not None:
            local.directory.cleanup()
        aloop.close()
    base = "firejail --join floor"
    row.add(Line(base, "ms", stat(floor),
                 note="subprocess.run of exec's own join argv, env and launcher; no guard, "
                      "record or settle"))
    goal = Goal("<= 1.2x join floor", lambda r: r <= 1.2)
    row.add(Line("Sandbox.exec(['true'])", "ms", stat(sync), baseline=base, goal=goal,
                 note="sync: driven on the shared loop thread; guard, record, settle"))
    row.add(Line("AsyncSandbox.exec(['true'])", "ms", stat(asyn), baseline=base, goal=goal))
    if local is not None and loc:
        row.add(Line("inspect-ai local exec(['true'])", "ms", stat(loc), baseline=base,
                     note="no sandbox: a host subprocess"))
    else:
        row.add(unavailable("inspect-ai local exec(['true'])", "ms", why_local or "no samples"))
    if len(sync) < n:
        row.notes.append(f"time bound hit: {len(sync)} of {n} rounds")
    return row


# -- row 10: files -------------------------------------------------------------------------


def files_row(ctx: Ctx) -> Row:
    """write_file + read_file of 5 MB, sync and async, vs the join floor and inspect local."""
    size = 5_000_000
    row = Row("files", "Framework door: `write_file` + `read_file`, 5 MB")
    n = ctx.reps(30, 6)
    dl = Deadline(240)
    data = os.urandom(size)
    aloop = _Loop()
    local, why_local = _inspect_local()
    sb = Sandbox(workdir=ctx.workspace())
    asb = AsyncSandbox(workdir=ctx.workspace())
    names = ("floor", "cat", "sync", "async", "local")
    w: dict[str, list[float]] = {k: [] for k in names}
    r: dict[str, list[float]] = {k: [] for k in names}
    bad: list[str] = []

    def check(name: str, got: object) -> None:
        if got != data and name not in bad:
            bad.append(name)

    def floor_once() -> None:
        s = sb._session
        w["floor"].append(_timed(lambda: _join(s, ["/bin/sh", "-c", 'cat > "$1"', "sh",
                                                  "floor.bin"], data)))
        t0 = time.perf_counter()
        got = _join(s, ["/bin/cat", "--", "floor.bin"])
        r["floor"].append(time.perf_counter() - t0)
        check("floor", got)

    def cat_once() -> None:  # the same door's own path, exec: what the file door adds
        w["cat"].append(_timed(lambda: sb.exec(["/bin/sh", "-c", 'cat > "$1"', "sh",
                                                "cat.bin"], input=data)))
        t0 = time.perf_counter()
        got = sb.exec(["/bin/cat", "--", "cat.bin"], max_output=size * 2).stdout_bytes
        r["cat"].append(time.perf_counter() - t0)
        check("cat", got)

    def sync_once() -> None:
        w["sync"].append(_timed(lambda: sb.write_file("sync.bin", data)))
        t0 = time.perf_counter()
        got = sb.read_file("sync.bin", text=False)
        r["sync"].append(time.perf_counter() - t0)
        check("sync", got)

    async def a_once(name: str, box: Any) -> None:  # AsyncSandbox, or inspect's local
        w[name].append(await _atimed(box.write_file(f"{name}.bin", data)))
        t0 = time.perf_counter()
        got = await box.read_file(f"{name}.bin", text=False)
        r[name].append(time.perf_counter() - t0)
        check(name, got)

    try:
        sb.start()
        aloop.run(asb.start())
        variants: list[Callable[[], None]] = [floor_once, cat_once, sync_once,
                                              lambda: aloop.run(a_once("async", asb))]
        if local is not None:
            variants.append(lambda: aloop.run(a_once("local", local)))
        for i in range(-1, n):  # one discarded warm-up round
            if not dl.left():
                break
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for once in order:
                once()
            if i == -1:
                for v in w.values():
                    v.clear()
                for v in r.values():
                    v.clear()
    finally:
        sb.close()
        with contextlib.suppress(Exception):
            aloop.run(asb.close())
        if local is not None:
            local.directory.cleanup()
        aloop.close()
    if bad:
        row.notes.append(f"bytes read back differ from those written: {', '.join(bad)}")
    labels = {"floor": "firejail --join floor", "sync": "Sandbox", "async": "AsyncSandbox",
              "local": "inspect-ai local"}
    goal = Goal("<= 1.2x cat through exec", lambda v: v <= 1.2)
    for what, d, how in (("write_file", w, "`sh -c 'cat > f'` fed 5 MB"),
                         ("read_file", r, "`cat f`, 5 MB back")):
        base = f"{what}: firejail --join floor"
        row.add(Line(base, "ms", stat([v * MS for v in d["floor"]]), note=how))
        cat = f"{what}: the same cat through Sandbox.exec"
        row.add(Line(cat, "ms", stat([v * MS for v in d["cat"]]), baseline=base,
                     note="the profile's exec path (fast exec, by default), recorded"))
        for k in ("sync", "async"):
            row.add(Line(f"{what}: {labels[k]}.{what}", "ms", stat([v * MS for v in d[k]]),
                         baseline=cat, goal=goal))
        name = f"{what}: inspect-ai local"
        if d["local"]:
            row.add(Line(name, "ms", stat([v * MS for v in d["local"]]), baseline=base,
                         note="no sandbox: open() in a host temp dir"))
        else:
            row.add(unavailable(name, "ms", why_local or "no samples"))
    if len(w["sync"]) < n:
        row.notes.append(f"time bound hit: {len(w['sync'])} of {n} rounds")
    return row
