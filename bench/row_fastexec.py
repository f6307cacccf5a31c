"""Fast exec (issue 20): `exec(["true"])` through the in-jail helper (profile `[exec] fast`)
beside the joined path, the bare join and `subprocess.run(["true"])` on the host, all
interleaved in one run. Both sandboxes record, guard and settle every exec the same way:
only how the process enters the jail differs.

Standalone: `python -m bench.row_fastexec [--quick]`.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable

from sandbox import AsyncSandbox, Sandbox
from sandbox.jail import fastexec
from sandbox.jail.profile import ExecSection, load

from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable
from .row_exec import MS, _atimed, _inspect_local, _join, _Loop, _timed


def run(ctx: Ctx) -> Row:
    row = Row("fastexec", "Fast exec: `exec(['true'])` forked in the jail vs joined")
    why = fastexec.unsupported()
    if why:
        row.add(unavailable("Sandbox.exec(['true']), fast", "ms", why))
        return row
    n = ctx.reps(300, 40)
    dl = Deadline(240)
    fast = dataclasses.replace(load("default"), exec=ExecSection(fast=True))
    aloop = _Loop()
    sb_fast = Sandbox(fast, workdir=ctx.workspace())
    sb_join = Sandbox(dataclasses.replace(fast, exec=ExecSection(fast=False)),
                      workdir=ctx.workspace())
    asb = AsyncSandbox(fast, workdir=ctx.workspace())
    local, why_local = _inspect_local()
    names = ("host", "floor", "join", "fast", "afast", "local")
    got: dict[str, list[float]] = {k: [] for k in names}
    used = ""
    try:
        sb_fast.start()
        sb_join.start()
        aloop.run(asb.start())
        for box in (sb_fast._session, asb._session):
            helper = box.hooks.fast.helper if box.hooks.fast else None
            if helper is None or not helper.ready(30):
                raise RuntimeError(f"no exec helper: {helper.why_off if helper else 'none'}")
        variants: list[tuple[str, Callable[[], float]]] = [
            ("host", lambda: _timed(lambda: subprocess.run(["true"], check=True))),
            ("floor", lambda: _timed(lambda: _join(sb_join._session, ["true"]))),
            ("join", lambda: _timed(lambda: sb_join.exec(["true"]))),
            ("fast", lambda: _timed(lambda: sb_fast.exec(["true"]))),
            ("afast", lambda: aloop.run(_atimed(asb.exec(["true"])))),
        ]
        if local is not None:
            variants.append(("local", lambda: aloop.run(_atimed(local.exec(["true"])))))
        for i in range(-3, n):  # three discarded warm-up rounds
            if not dl.left():
                break
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for name, once in order:
                took = once()
                if i >= 0:
                    got[name].append(took * MS)
        part = sb_fast._session.hooks.fast
        helper = part.helper if part is not None else None
        assert helper is not None
        used = f"{helper.used['fast']} fast, {helper.used['join']} joined"
        if helper.state != "ready":
            row.notes.append(f"the helper went off: {helper.why_off}")
    finally:
        sb_fast.close()
        sb_join.close()
        aloop.run(asb.close())
        if local is not None:
            local.directory.cleanup()
        aloop.close()
    base = "Sandbox.exec(['true']), joined"
    row.add(Line("subprocess.run(['true']) on the host", "ms", stat(got["host"]),
                 note="no sandbox"))
    row.add(Line("firejail --join floor", "ms", stat(got["floor"])))
    row.add(Line(base, "ms", stat(got["join"]), note="a firejail --join per command"))
    goal = Goal("<= 2 ms", lambda v: v <= 2.0, on="value")
    row.add(Line("Sandbox.exec(['true']), fast", "ms", stat(got["fast"]), baseline=base,
                 goal=goal, note="forked by the in-jail helper; status from the kernel"))
    row.add(Line("AsyncSandbox.exec(['true']), fast", "ms", stat(got["afast"]),
                 baseline=base, goal=goal))
    if got["local"]:
        row.add(Line("inspect-ai local exec(['true'])", "ms", stat(got["local"]),
                     baseline=base, note="no sandbox: a host subprocess"))
    else:
        row.add(unavailable("inspect-ai local exec(['true'])", "ms", why_local or "no samples"))
    row.notes.append(f"the fast sandbox's execs: {used}")
    return row


if __name__ == "__main__":
    import argparse
    import sys

    from . import report
    from .core import make_ctx, remove_ctx

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    ctx = make_ctx(quick=args.quick, sessions=1, python=sys.executable)
    try:
        out = run(ctx).finish()
    finally:
        remove_ctx(ctx)
    print(report.table_text([out]))
