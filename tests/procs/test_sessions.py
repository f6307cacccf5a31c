"""Process monitoring and resource limits in real sandboxes (real firejail, cgroups)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sandbox import Sandbox, Store
from tests.helpers import make_workspace, procs_matching, sandbox_cli, wait_for


def _execs(sid: str) -> list[list[str]]:
    return [e["detail"].get("argv") or [] for e in Store().events(sid, kinds=("proc.exec",))]


def test_wrapped_program_children_are_recorded(workspace: Path) -> None:
    """`sandbox run -- python3 agent.py` shows the commands the agent itself ran."""
    (workspace / "agent.py").write_text(
        "import subprocess, time\n"
        "subprocess.run(['sh', '-c', 'echo agent-step-one; sleep 0.2'])\n"
        "subprocess.run(['sleep', '0.15'])\ntime.sleep(0.2)\n")
    r = sandbox_cli("run", "-q", "-w", str(workspace), "--", "python3", "agent.py")
    assert r.returncode == 0 and "agent-step-one" in r.stdout, r.stderr
    sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
    argvs = [" ".join(a) for a in _execs(sid)]
    assert any(a.startswith("python3 agent.py") for a in argvs), argvs
    assert any("echo agent-step-one" in a for a in argvs), argvs
    assert any(a == "sleep 0.15" for a in argvs), argvs
    assert "processes (" in sandbox_cli("show", sid).stdout


def test_double_forked_background_is_recorded_and_dies_with_session(workspace: Path) -> None:
    with Sandbox(workdir=workspace) as box:
        box.run("(setsid sh -c 'sleep 1003.25' &) ; sh -c 'nohup sleep 1003.5 >/dev/null 2>&1 &'")
        assert wait_for(lambda: len(procs_matching("sleep 1003.")) == 2, 5)
        assert wait_for(lambda: sum("sleep 1003." in " ".join(a) for a in _execs(box.id)) >= 2, 5)
    assert wait_for(lambda: not procs_matching("sleep 1003."), 5)


def test_memory_hog_is_contained_and_recorded(test_dir: Path) -> None:
    prof = test_dir / "small.toml"
    prof.write_text('extends = "default"\n[limits]\nmemory_mib = 100\n')
    with Sandbox(profile=str(prof), workdir=make_workspace(test_dir / "w")) as box:
        r = box.run("python3 -c 'b = bytearray(600 << 20); b[::4096] = b\"x\" * len(b[::4096]); print(\"survived\")'", timeout=60)
        assert r.exit_code != 0 and "survived" not in r.output
        assert box.run("echo alive").output == "alive\n"
        assert wait_for(lambda: Store().events(box.id, kinds=("resource.breach",)), 6)


def test_fork_bomb_is_contained_and_host_stays_responsive(test_dir: Path) -> None:
    """A (bounded) fork bomb hits the session's pids limit; the shell and host recover."""
    prof = test_dir / "pids.toml"
    prof.write_text('extends = "default"\n[limits]\npids = 40\n')
    with Sandbox(profile=str(prof), workdir=make_workspace(test_dir / "w")) as box:
        r = box.run("for i in $(seq 1 300); do sleep 31.25 & done", timeout=8)
        assert "fork" in r.output and "Resource temporarily unavailable" in r.output
        assert len(procs_matching("sleep 31.25")) < 40
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)
        assert time.monotonic() - t0 < 10  # generous: the host is not starved
        assert wait_for(lambda: Store().events(box.id, kinds=("resource.breach",)), 8)
        box.run("kill -9 $(jobs -p) 2>/dev/null; true", timeout=10)
        assert box.run("echo alive", timeout=10).output == "alive\n"
    assert wait_for(lambda: not procs_matching("sleep 31.25"), 5)
