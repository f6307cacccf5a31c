"""Row 1: start to ready, against the firejail floor, bash, srt and SWE-ReX.

"Ready" means the first command could run: for a session, `Sandbox(...).start()` plus the
first `run("true")` returned; for a one-shot jail, the first byte the jailed program writes
(`echo`). "Closed"/"exit" adds the teardown: a session's `close()`, a jail's exit. The
floor is the session's own firejail argv (build_argv, dropped to the agent user in the child)
with the program swapped. Variants run interleaved, one of each per round, so drift on
this noisy machine hits all of them alike.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from sandbox import Sandbox
from sandbox.jail import spawn

from . import peers
from .boxes import floor_cmd, time_until_first_byte
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable
from .netcheck import allowlist_profile, check_isolated, network_problem

MS = 1000.0
FLOOR_READY = "firejail floor: ready (`echo`, first byte)"
FLOOR_EXIT = "firejail floor: `true` to exit"


def _session(ctx: Ctx, profile: object) -> tuple[float, float]:
    t0 = time.perf_counter()
    sb = Sandbox(profile=profile, workdir=ctx.workspace())  # type: ignore[arg-type]
    try:
        sb.start()
        sb.run("true")
        ready = time.perf_counter() - t0
    finally:
        sb.close()
    return ready, time.perf_counter() - t0


def run(ctx: Ctx) -> Row:
    row = Row("start", "Start to ready")
    reps = ctx.reps(20, 5)
    ws = ctx.workspace("floor")
    ready_argv, env, launch = floor_cmd(ctx, ["echo", "r"], ws, "benchfloor1")
    true_argv, _, _ = floor_cmd(ctx, ["true"], ws, "benchfloor2")

    samples: dict[str, list[float]] = {}
    variants: dict[str, Callable[[], None]] = {}

    def add(name: str, fn: Callable[[], None]) -> None:
        samples[name] = []
        variants[name] = fn

    def bash() -> None:
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", "true"], check=False)
        samples["bash -c true"].append(time.perf_counter() - t0)

    def floor_ready() -> None:
        samples[FLOOR_READY].append(time_until_first_byte(ready_argv, env, ws, preexec=launch)[0])

    def floor_exit() -> None:
        t0 = time.perf_counter()
        spawn.popen(true_argv, launch, env=env, cwd=ws).wait()
        samples[FLOOR_EXIT].append(time.perf_counter() - t0)

    def none_mode() -> None:
        ready, full = _session(ctx, "default")
        samples["sandbox none: start to ready"].append(ready)
        samples["sandbox none: start, ready, closed"].append(full)

    add("bash -c true", bash)
    add(FLOOR_READY, floor_ready)
    add(FLOOR_EXIT, floor_exit)
    add("sandbox none: start to ready", none_mode)
    samples["sandbox none: start, ready, closed"] = []

    allow_why = network_problem()
    allow_name = "sandbox allowlist: start to ready"
    if allow_why is None:
        prof = str(allowlist_profile(ctx))
        try:
            with Sandbox(profile=prof, workdir=ctx.workspace()) as sb:
                allow_why = check_isolated(sb)
        except Exception as e:
            allow_why = f"allowlist session fails to start: {type(e).__name__}: {e}"
        if allow_why is None:
            def allow() -> None:
                samples[allow_name].append(_session(ctx, prof)[0])
            add(allow_name, allow)

    # srt runs as the invoking user (root here), per its docs, in a directory that user owns
    # (bwrap as root cannot write into the agent's workspace).
    srt_ws = ctx.root / "srt-ws"
    srt_ws.mkdir(exist_ok=True)
    srt_why = peers.srt_problem(ctx, srt_ws)
    if srt_why is None:
        srt_ready_argv = peers.srt_argv(ctx, ["echo", "r"])
        srt_true_argv = peers.srt_argv(ctx, ["true"])

        def srt_ready() -> None:
            samples["srt: ready (`echo`, first byte)"].append(
                time_until_first_byte(srt_ready_argv, None, srt_ws)[0])

        def srt_exit() -> None:
            t0 = time.perf_counter()
            subprocess.run(srt_true_argv, cwd=srt_ws, check=False, capture_output=True)
            samples["srt: `true` to exit"].append(time.perf_counter() - t0)

        add("srt: ready (`echo`, first byte)", srt_ready)
        add("srt: `true` to exit", srt_exit)

    dl = Deadline(240 if not ctx.quick else 90)
    for fn in variants.values():  # warm-up round: page cache, first-use setup
        fn()
    for name in samples:
        samples[name].clear()
    i = 0
    while i < reps and dl.left():
        for fn in variants.values():
            fn()
        i += 1

    def line(name: str, **kw: object) -> None:
        vals = samples.get(name) or []
        if vals:
            row.add(Line(name, "ms", stat([v * MS for v in vals]), **kw))  # type: ignore[arg-type]

    line("bash -c true", baseline=FLOOR_EXIT, note="no jail: the cost of a process")
    line(FLOOR_READY)
    line(FLOOR_EXIT)
    line("sandbox none: start to ready", baseline=FLOOR_READY,
         goal=Goal("<= 1.3x floor", lambda r: r <= 1.3))
    line("sandbox none: start, ready, closed", baseline=FLOOR_EXIT,
         goal=Goal("<= 1.3x floor", lambda r: r <= 1.3))
    if allow_why is None:
        line(allow_name, baseline=FLOOR_READY, goal=Goal("<= 2x floor", lambda r: r <= 2.0))
    else:
        row.add(unavailable(allow_name, "ms", allow_why, goal=Goal("<= 2x floor", lambda r: True)))
    if srt_why is None:
        line("srt: ready (`echo`, first byte)", baseline=FLOOR_READY,
             note="bubblewrap + proxies; run as the invoking user, per its docs")
        line("srt: `true` to exit", baseline=FLOOR_EXIT)
    else:
        row.add(unavailable("srt (Anthropic sandbox-runtime)", "ms", srt_why))

    sx_why = peers.swerex_problem()
    if sx_why is None:
        try:
            data = peers.swerex(starts=ctx.reps(10, 3), commands=0, budget_s=120)
            row.add(Line("SWE-ReX local: start to ready", "ms",
                         stat([v * MS for v in data["start_ready"]]), baseline=FLOOR_READY,
                         note="no sandbox: LocalRuntime runs on the host"))
            row.add(Line("SWE-ReX local: start, ready, stopped", "ms",
                         stat([v * MS for v in data["start_full"]]), baseline=FLOOR_EXIT))
        except (RuntimeError, KeyError, ValueError) as e:
            sx_why = str(e)
    if sx_why is not None:
        row.add(unavailable("SWE-ReX local", "ms", sx_why))
    if i < reps:
        row.notes.append(f"time bound hit: {i} of {reps} rounds")
    return row
