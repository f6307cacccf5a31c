"""proctree: process info, pid-reuse-proof liveness, tree walks and tree kills over /proc."""

from __future__ import annotations

import os
import signal
import subprocess

from sandbox.monitor import proctree
from tests.helpers import wait_for


def test_info_describes_a_running_process(procs: list[subprocess.Popen[bytes]]) -> None:
    """info() gives argv, exe, comm, uid, ppid and a start token of a live process."""
    p = subprocess.Popen(["sleep", "30.25"])
    procs.append(p)
    assert wait_for(lambda: proctree.argv_of(p.pid) == ["sleep", "30.25"], 5)
    info = proctree.info(p.pid)
    assert info.ppid == os.getpid()
    assert info.comm == "sleep"
    assert info.exe.endswith("sleep")
    assert info.uid == 0
    assert info.start == proctree.pid_start_time(p.pid) != ""
    assert info.detail()["argv"] == ["sleep", "30.25"]


def test_is_alive_is_false_for_a_dead_or_different_process(
        procs: list[subprocess.Popen[bytes]]) -> None:
    """A pid with the wrong start token, or an exited pid, is not alive."""
    p = subprocess.Popen(["sleep", "30"])
    procs.append(p)
    start = proctree.pid_start_time(p.pid)
    assert proctree.is_alive(p.pid, start)
    assert not proctree.is_alive(p.pid, str(int(start) - 1))
    p.kill()
    p.wait()
    assert not proctree.is_alive(p.pid, start)
    assert proctree.info(p.pid, "sleep").comm == "sleep"  # the fallback name survives


def test_descendants_and_kill_tree(procs: list[subprocess.Popen[bytes]]) -> None:
    """descendants() lists children and grandchildren; kill_tree() ends them all."""
    p = subprocess.Popen(["sh", "-c", "sh -c 'sleep 30.5 & sleep 30.6' & sleep 30.7"])
    procs.append(p)

    def argvs() -> list[str]:
        return sorted(" ".join(proctree.argv_of(x)) for x in proctree.descendants(p.pid))

    # Wait for the execs, not just the forks: a forked child shows its parent's
    # argv until it execs (CI once caught 'sh -c ...' where 'sleep 30.5' was due).
    assert wait_for(lambda: {"sleep 30.5", "sleep 30.6", "sleep 30.7"} <= set(argvs()), 5)
    tree = proctree.descendants(p.pid)
    assert len(tree) >= 4
    killed = proctree.kill_tree(p.pid, signal.SIGKILL)
    assert set(tree) | {p.pid} <= set(killed)
    p.wait(timeout=5)
    assert wait_for(lambda: not any(proctree.info_stat(x) for x in tree), 5)


def test_kill_tree_refuses_a_reused_pid(procs: list[subprocess.Popen[bytes]]) -> None:
    """With a stale start token kill_tree signals nothing."""
    p = subprocess.Popen(["sleep", "30"])
    procs.append(p)
    assert proctree.kill_tree(p.pid, signal.SIGKILL, start="1") == []
    assert p.poll() is None
