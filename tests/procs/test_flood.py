"""The exec monitor cannot be blinded, and the record has a budget (red team H4, M5).

Real firejail sessions as root: an exec flood with huge argv in one session does not stop
another session's `ssh -R` from being judged and killed; argv is kept and judged up to a
cap, marked when cut; an exec loop is summarised in `record.dropped`, never silently
lost; lost events are counted in `proc.lost`, a tamper alert in strict. No timing is
asserted tightly (the machine is shared): latency figures live in bench/row_flood.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench import row_flood as bench_flood
from sandbox import Sandbox, SandboxError, Store
from sandbox.events import ListEmit
from sandbox.monitor.procmon import Budget, ProcessMonitor
from sandbox.monitor.proctree import ARGV_CAP
from tests.helpers import make_workspace, wait_for

# The red team's flood.py (bounded in time and count), shared with bench row 8.
FLOOD_PY = bench_flood.FLOOD_PY

# Not typed as a command (the text check would refuse it before it ran): the exec
# monitor has to see it.
SSH_R = ("#!/bin/sh\nssh -o BatchMode=yes -R 1:127.0.0.1:1 x 2>/dev/null\n"
         "echo ssh-done\nsleep 20\necho survived\n")


def _events(sid: str, *kinds: str) -> list[dict[str, Any]]:
    return Store().events(sid, kinds=kinds)


def _write(ws: Path, name: str, text: str) -> None:
    from sandbox.jail.users import ensure_agent_user

    agent = ensure_agent_user()
    path = ws / name
    path.write_text(text)
    path.chmod(0o755)
    os.chown(path, agent.uid, agent.gid)


def test_flood_in_one_session_does_not_blind_another(test_dir: Path) -> None:
    """Session A floods execs with ~2 MB of argv each; session B (strict) runs `ssh -R`
    from a script and is killed by tunnels.ssh_forward within a few seconds."""
    ws_a = make_workspace(test_dir / "a")
    ws_b = make_workspace(test_dir / "b")
    _write(ws_a, "flood.py", FLOOD_PY)
    _write(ws_b, "a1.sh", SSH_R)
    a = Sandbox(workdir=ws_a)
    b = Sandbox(profile="strict", workdir=ws_b)
    try:
        a.start()
        b.start()
        a.run("python3 flood.py 10 >/dev/null 2>&1 &", timeout=30)
        assert wait_for(lambda: any(e["detail"].get("argv_truncated")
                                    for e in _events(a.id, "proc.exec")), 8), \
            "the flood never got going"
        time.sleep(1.0)  # let the flood build up before B acts
        t0 = time.monotonic()
        output = ""
        with contextlib.suppress(SandboxError):  # SessionClosed: killed while it ran
            output = b.run("./a1.sh", timeout=30).output
        killed = wait_for(lambda: b.state == "killed", 10)
        assert killed, (b.state, output, [
            (e["kind"], e["detail"].get("argv") or e["detail"]) for e in
            _events(b.id, "proc.exec", "proc.lost", "guard.verdict")][-8:])
        took = time.monotonic() - t0
        assert "survived" not in output
        assert took < 20, took  # before the script's sleep ended (not a latency figure)
        verdicts = [e["rule"] for e in _events(b.id, "guard.verdict")]
        assert "tunnels.ssh_forward" in verdicts, verdicts
        assert "tunnels.ssh_forward" in str(b._session.reason)
        cut = [e["detail"] for e in _events(a.id, "proc.exec")
               if e["detail"].get("argv_truncated")]
        assert cut and all(d["argv_bytes"] > 1_900_000 for d in cut)
    finally:
        b.close()
        a.close()


def test_flood_in_the_same_session_does_not_hide_ssh(test_dir: Path) -> None:
    """The red team's a2.sh: a strict session floods itself, then runs `ssh -R`: the
    exec of a program the rules name is judged before the flood's backlog."""
    ws = make_workspace(test_dir / "w")
    _write(ws, "flood.py", FLOOD_PY)
    _write(ws, "a2.sh", "#!/bin/bash\npython3 flood.py 8 >/dev/null 2>&1 & sleep 3\n"
                        + SSH_R.partition("\n")[2] + "wait\n")
    b = Sandbox(profile="strict", workdir=ws)
    output = ""
    try:
        b.start()
        with contextlib.suppress(SandboxError):  # SessionClosed: killed while it ran
            output = b.run("./a2.sh", timeout=40).output
        assert wait_for(lambda: b.state == "killed", 10), (b.state, output)
        assert "survived" not in output
        assert "tunnels.ssh_forward" in str(b._session.reason)
    finally:
        b.close()


def test_oversized_argv_is_recorded_cut_and_marked(sb: Sandbox) -> None:
    """One exec with ~100 kB of argv: head and tail kept (<= 16 KiB), the cut marked, the
    real size said; an argument after the cut is still there for the rules."""
    tag = f"tail-{uuid.uuid4().hex[:8]}"
    sb.run("python3 -c \"import os; os.execvp('sh', ['sh', '-c', 'sleep 0.3', "
           f"'x' * 100000, '{tag}'])\"", timeout=30)

    def found() -> list[dict[str, Any]]:
        return [e["detail"] for e in _events(sb.id, "proc.exec")
                if (e["detail"].get("argv") or [""])[0] == "sh" and tag in e["detail"]["argv"]]

    assert wait_for(found, 5)
    d = found()[0]
    assert d["argv_truncated"] is True
    assert d["argv_bytes"] == len("sh -c sleep 0.3 ") + 100001 + len(tag) + 1
    assert sum(len(a.encode()) + 1 for a in d["argv"]) <= ARGV_CAP + 64
    assert d["argv"][:3] == ["sh", "-c", "sleep 0.3"]
    assert any(a.startswith("...[") and "bytes cut]" in a for a in d["argv"])
    assert d["argv"][-1] == tag


def test_exec_loop_is_summarised_not_lost(sb: Sandbox) -> None:
    """A plain exec loop: far fewer proc.exec rows than execs, the rest counted in
    record.dropped (at least once a second); nothing unaccounted for."""
    r = sb.run("n=0; end=$((SECONDS+5)); while [ $SECONDS -lt $end ] && [ $n -lt 50000 ]; "
               "do /bin/true; n=$((n+1)); done; echo n=$n", timeout=60)
    n = int(r.output.strip().rpartition("n=")[2])
    sid = sb.id
    sb.close()  # flushes what is still pending
    rows = sum(1 for e in _events(sid, "proc.exec") if e["detail"].get("argv") == ["/bin/true"])
    dropped = _events(sid, "record.dropped")
    lost = sum(e["detail"]["lost"] for e in _events(sid, "proc.lost"))
    summarised = sum(e["detail"]["counts"].get("proc.exec", 0) for e in dropped)
    assert n > 300, n
    assert dropped, "no record.dropped event"
    assert rows < n / 2, (rows, n)
    assert len(dropped) >= 3  # at least once a second while dropping (5 s)
    assert rows + summarised + lost >= n * 0.95, (rows, summarised, lost, n)


# -- the monitor alone (real processes, no jail) -------------------------------------------


def _burst(n: int, tag: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", f"read go; for i in $(seq {n}); do /bin/echo {tag}; done"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def test_full_queue_is_counted_in_proc_lost(procs: list[subprocess.Popen[bytes]]) -> None:
    """A slow consumer and a small queue: what does not fit is counted in proc.lost, and
    delivered + lost accounts for every exec."""
    emit = ListEmit()
    tag = f"burst-{uuid.uuid4().hex[:8]}"
    mon = ProcessMonitor(on_exec=lambda sid, info: time.sleep(0.02), workers=1)
    try:
        p = _burst(60, tag)
        procs.append(p)
        mon.register("s-lost", p.pid, emit=emit, budget=Budget(queue=4))
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
        p.wait(timeout=20)
        mon.drain(timeout=10)
        mon.unregister("s-lost")
    finally:
        mon.stop()
    # (an echo may be gone before its argv is read: count every exec of the tree)
    seen = len(emit.of_kind("proc.exec"))
    lost = emit.of_kind("proc.lost")
    assert lost and lost[0]["severity"] == "warning"
    assert sum(e["detail"].get("queue_full", 0) for e in lost) > 0
    assert seen + sum(e["detail"]["lost"] for e in lost) >= 60


def test_record_budget_summarises_but_rules_see_every_exec(
        procs: list[subprocess.Popen[bytes]]) -> None:
    """Over events_per_s, proc.exec rows stop and record.dropped counts them; on_exec
    (the guard) is still called for every exec."""
    emit = ListEmit()
    tag = f"budget-{uuid.uuid4().hex[:8]}"
    judged: list[int] = []
    mon = ProcessMonitor(on_exec=lambda sid, info: judged.append(info.pid))
    try:
        p = _burst(80, tag)
        procs.append(p)
        mon.register("s-budget", p.pid, emit=emit, budget=Budget(events_per_s=5))
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
        p.wait(timeout=20)
        mon.drain(timeout=10)
        mon.unregister("s-budget")
    finally:
        mon.stop()
    rows = len(emit.of_kind("proc.exec"))
    counted = sum(e["detail"]["counts"]["proc.exec"] for e in emit.of_kind("record.dropped"))
    lost = sum(e["detail"]["lost"] for e in emit.of_kind("proc.lost"))
    assert rows <= 12, rows
    assert counted >= 60
    assert rows + counted + lost >= 80
    assert len(judged) + lost >= 80, (len(judged), lost)


def test_lost_events_are_a_tamper_alert_in_strict_only(test_dir: Path) -> None:
    """proc.lost is a warning in default; in strict it is also a tamper verdict (alert)."""
    for profile, expect in (("default", False), ("strict", True)):
        with Sandbox(profile=profile, workdir=make_workspace(test_dir / profile)) as box:
            box._session.emit("proc.lost", {"lost": 3, "queue_full": 3}, severity="warning")
            verdicts = [e for e in _events(box.id, "guard.verdict")
                        if e["rule"] == "tamper.proc_lost"]
            assert bool(verdicts) is expect, profile
            if expect:
                assert verdicts[0]["severity"] == "alert"


# -- bounded work per event (pure) ---------------------------------------------------------


def test_guard_work_per_text_is_bounded() -> None:
    """Whatever the text, rules search at most MAX_TEXT + MAX_VARIANT_CHARS characters
    (plus window overlaps), and no search scans more than a window."""
    from sandbox.guard.engine import _searchable
    from sandbox.guard.normalize import MAX_TEXT, MAX_VARIANT_CHARS, OVERLAP, WINDOW

    nasty = [
        "ssh " * 500_000,  # a backtracking pattern's worst case, 2 MB
        " ".join(f"a{i}=b;" for i in range(50_000)) + " $a1",  # many variables
        "echo base64 " + "QUJDREVGR0hJSktMTU5PUA== " * 20_000,  # many payloads
        "x" * 2_000_000,  # no whitespace at all
    ]
    for text in nasty:
        pieces = _searchable(text)
        assert all(len(p) <= WINDOW for p in pieces)
        total = sum(len(p) for p in pieces)
        assert total <= (MAX_TEXT + MAX_VARIANT_CHARS) * WINDOW / (WINDOW - OVERLAP) + WINDOW


def test_windows_still_find_what_long_texts_hide() -> None:
    """A tunnel buried in a long command line is found wherever it falls (window edges
    included), and a windowed cut never invents a command start."""
    from sandbox.guard import build_engine
    from sandbox.guard.evidence import CommandText, ProcessExec
    from sandbox.jail.profile import load

    engine = build_engine(load("strict").guard)
    words = " ".join(f"w{i:05d}" for i in range(4000))  # 28 KB of harmless words
    for at in range(0, 9000, 997):
        text = f"echo {words[:at]} ; ssh -R 1:127.0.0.1:1 x ; echo {words[at:]}"
        got = [v.rule_id for v in engine.evaluate(CommandText(text))]
        assert "tunnels.ssh_forward" in got, at
    for tail in ("nc -e /bin/sh", "echo done", "ssh-keygen -R host"):
        long = {v.rule_id for v in engine.evaluate(CommandText(f"echo {words} {tail}"))}
        short = {v.rule_id for v in engine.evaluate(CommandText(f"echo {words[:100]} {tail}"))}
        assert long == short, tail
    cut = ProcessExec(argv=("ssh", "-o", "x" * 8000, "...[1949000 bytes cut]...", "x" * 8000,
                            "-R", "1:127.0.0.1:1", "x"),
                      exe="/usr/bin/ssh", comm="ssh", argv_truncated=True)
    top = engine.evaluate(cut)
    assert top and top[0].rule_id == "tunnels.ssh_forward" and top[0].action == "kill"
    assert top[0].evidence["argv_truncated"] is True


def test_kernel_overrun_is_told_to_every_live_session(
        procs: list[subprocess.Popen[bytes]]) -> None:
    """ENOBUFS names no session: every live one records proc.lost (netlink_overrun)."""
    emits = {"s-o1": ListEmit(), "s-o2": ListEmit()}
    mon = ProcessMonitor()
    try:
        for sid, emit in emits.items():
            p = subprocess.Popen(["sleep", "30"])
            procs.append(p)
            mon.register(sid, p.pid, emit=emit)
        mon.overrun()  # what the reader does on ENOBUFS
        assert wait_for(lambda: all(e.of_kind("proc.lost") for e in emits.values()), 5)
    finally:
        mon.stop()
    for emit in emits.values():
        d = emit.of_kind("proc.lost")[0]["detail"]
        assert d["netlink_overrun"] == 1 and d["lost"] == 1


def test_short_lived_execs_keep_their_argv(procs: list[subprocess.Popen[bytes]]) -> None:
    """Processes that live about a millisecond are read in time (the reader process runs
    first); one that is gone anyway says argv_unknown instead of looking empty."""
    emit = ListEmit()
    tag = f"quick-{uuid.uuid4().hex[:8]}"
    mon = ProcessMonitor()
    try:
        p = _burst(100, tag)
        procs.append(p)
        mon.register("s-quick", p.pid, emit=emit)
        assert mon.mode == "netlink" and mon.reader.child is not None  # the reader process
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
        p.wait(timeout=20)
        mon.drain(timeout=10)
    finally:
        mon.stop()
    execs = [e["detail"] for e in emit.of_kind("proc.exec")]
    assert all(d["argv"] or d.get("argv_unknown") for d in execs)
    # Most, not all: a loaded machine may starve even the reader (old code: 2 of 20).
    assert sum(1 for d in execs if tag in d["argv"]) >= 60
