"""The process monitor records every exec in a registered tree, from outside, both ways."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from sandbox.events import ListEmit
from sandbox.monitor import proctree
from sandbox.monitor.procmon import ProcessMonitor
from tests.helpers import wait_for


def _execs(emit: ListEmit, needle: str) -> list[dict[str, Any]]:
    """proc.exec details whose argv, joined, is `needle` (or starts with it + a space)."""
    out = []
    for e in emit.of_kind("proc.exec"):
        line = " ".join(e["detail"]["argv"])
        if line == needle or line.startswith(needle + " "):
            out.append(e["detail"])
    return out


def _gated_tree(script: str, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """A shell that waits for a line on stdin before running `script`, so registering
    it first cannot race with the execs the test looks for."""
    p = subprocess.Popen(["sh", "-c", f"read go; {script}"], stdin=subprocess.PIPE)
    procs.append(p)
    return p


def _go(p: subprocess.Popen[bytes]) -> None:
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


def test_netlink_records_child_and_grandchild_execs(
        monitor: ProcessMonitor, emit: ListEmit, procs: list[subprocess.Popen[bytes]]) -> None:
    """With root the proc connector is used; execs two levels down carry argv, ppid, uid.

    The commands live 0.1 s: argv is read from /proc after the event, and a process that
    exits within the reader thread's wake-up latency is recorded with whatever was left.
    """
    tag = f"0.1{uuid.uuid4().int % 10**6:06d}"
    calls: list[tuple[str, proctree.ProcInfo]] = []
    monitor.on_exec = lambda sid, info: calls.append((sid, info))
    p = _gated_tree(f"/bin/sleep {tag}1; sh -c '/bin/sleep {tag}2; true'", procs)
    monitor.register("s-net", p.pid, emit=emit)
    assert monitor.mode == "netlink"
    _go(p)
    child_argv, grand_argv = f"/bin/sleep {tag}1", f"/bin/sleep {tag}2"
    assert wait_for(lambda: _execs(emit, grand_argv) and _execs(emit, child_argv), 5), emit.events
    child = _execs(emit, child_argv)[0]
    grand = _execs(emit, grand_argv)[0]
    assert child["ppid"] == p.pid and child["uid"] == 0 and child["source"] == "netlink"
    assert child["exe"] == "/usr/bin/sleep" and child["comm"] == "sleep"
    assert grand["ppid"] != p.pid and grand["ppid"] in monitor.known_pids("s-net")
    assert {child["pid"], grand["pid"], p.pid} <= monitor.known_pids("s-net")
    assert wait_for(lambda: any(i.argv == grand_argv.split() for _s, i in calls), 2)
    assert all(sid == "s-net" for sid, _ in calls)


def test_unrelated_processes_are_not_attributed(
        monitor: ProcessMonitor, emit: ListEmit, procs: list[subprocess.Popen[bytes]]) -> None:
    """An exec outside every registered tree is not recorded for any session."""
    tag = uuid.uuid4().hex[:8]
    p = _gated_tree("true", procs)
    monitor.register("s-mine", p.pid, emit=emit)
    subprocess.run(["/bin/echo", f"outsider-{tag}"], check=True, capture_output=True)
    _go(p)
    p.wait(timeout=5)
    monitor.drain()
    assert not _execs(emit, f"/bin/echo outsider-{tag}")


def test_double_forked_daemon_is_recorded_and_killed_with_the_cgroup(
        monitor: ProcessMonitor, emit: ListEmit, make_cgroup: Any,
        procs: list[subprocess.Popen[bytes]]) -> None:
    """`(setsid sleep &) &` leaves the tree, but stays recorded and in the cgroup; kill() ends it."""
    group = make_cgroup(pids=64, memory_mib=256)
    monitor.register("s-daemon", None, group, emit=emit)  # before spawn: catches the first exec
    p = subprocess.Popen(["sh", "-c", "(setsid sleep 300.77 &) &"],
                         preexec_fn=group.enter_current_process)
    procs.append(p)
    monitor.register("s-daemon", p.pid)
    p.wait(timeout=5)
    assert wait_for(lambda: _execs(emit, "sleep 300.77"), 5)
    sleeper = _execs(emit, "sleep 300.77")[0]["pid"]
    assert proctree.ppid_of(sleeper) != p.pid  # re-parented out of the tree
    assert sleeper in group.pids()
    assert sleeper in monitor.live_pids("s-daemon")
    # (No assertion on the root `sh` itself: it exits at once, and whether its exec is seen
    # before it vanishes is a race; the jail's first exec is checked in test_sessions.)
    assert group.kill() >= 1
    assert wait_for(lambda: proctree.info_stat(sleeper) is None, 5)
    assert group.pids() == []


def test_poll_fallback_records_execs(
        poll_monitor: ProcessMonitor, emit: ListEmit,
        procs: list[subprocess.Popen[bytes]]) -> None:
    """Forced polling (the non-root path) records children and grandchildren too."""
    p = _gated_tree("/bin/sleep 0.41; sh -c '/bin/sleep 0.42; true'", procs)
    poll_monitor.register("s-poll", p.pid, emit=emit)
    assert poll_monitor.mode == "poll"
    _go(p)
    assert wait_for(lambda: _execs(emit, "/bin/sleep 0.42"), 5)
    first = _execs(emit, "/bin/sleep 0.41")
    assert first and first[0]["ppid"] == p.pid and first[0]["source"] == "poll"
    assert _execs(emit, "/bin/sleep 0.42")[0]["pid"] in poll_monitor.known_pids("s-poll")


def test_unregister_stops_recording(
        monitor: ProcessMonitor, emit: ListEmit, procs: list[subprocess.Popen[bytes]]) -> None:
    """After unregister nothing more is recorded and known_pids is empty."""
    tag = uuid.uuid4().hex[:8]
    p = _gated_tree(f"/bin/echo late-{tag}", procs)
    monitor.register("s-gone", p.pid, emit=emit)
    monitor.unregister("s-gone")
    _go(p)
    p.wait(timeout=5)
    monitor.drain()
    assert not _execs(emit, f"/bin/echo late-{tag}")
    assert monitor.known_pids("s-gone") == set()
