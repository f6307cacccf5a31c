"""Red-team M6 and the disk quota: when `run`, `close()` or the interpreter returns,
every host resource of the session is gone, whatever ended it.

On the old code guard and operator kills tore down on daemon threads, and 5 of 5
guard-killed `sandbox run` sessions left their cgroups behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.errors import SessionClosed
from sandbox.record import Store

# The exec of `ssh -R` is what strict kills; the text is built so that the text check
# (which judges mentions) does not refuse it first.
SSH_R = ("python3 -c \"import os; s='s'+'sh'; os.execvp(s, [s, '-o', 'BatchMode=yes', "
         "'-'+'R', '1:127.0.0.1:1', 'x'])\"")


def _leftovers(res: dict[str, Any]) -> list[str]:
    out = []
    for key in ("workspace", "home"):
        if key in res and Path(res[key]).exists():
            out.append(res[key])
    for d in (res.get("cgroup") or {}).get("dirs", {}).values():
        if Path(d).exists():
            out.append(d)
    net = res.get("network") or {}
    ns = net.get("netns") if isinstance(net, dict) else None
    if ns and Path(f"/run/netns/{ns}").exists():
        out.append(ns)
    return out


def _only_session(state_dir: Path) -> dict[str, Any]:
    sessions = Store(state_dir / "sandbox.db").list_sessions()
    assert len(sessions) == 1
    return sessions[0]


@pytest.fixture
def root_cwd(test_dir: Path) -> Path:
    """A root-owned directory: run from here, a session gets a fresh workspace."""
    d = test_dir / "rootcwd"
    d.mkdir()
    return d


def test_guard_killed_run_leaves_nothing(root_cwd: Path, state_dir: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "-q", "-p", "strict", "--", "bash", "-c",
         f"{SSH_R}; sleep 30"], cwd=root_cwd, capture_output=True, text=True, timeout=60,
        check=False, stdin=subprocess.DEVNULL)
    assert r.returncode == 137, r.stderr
    s = _only_session(state_dir)
    assert s["state"] == "killed" and s["resources"].get("workspace")
    assert s["resources"].get("home") and s["resources"].get("cgroup")
    assert _leftovers(s["resources"]) == []


def test_api_guard_kill_then_close_leaves_nothing(root_cwd: Path, state_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root_cwd)
    sb = Sandbox(profile="strict")
    sb.start()
    with pytest.raises(SessionClosed, match=r"tunnels\.ssh_forward"):
        sb.run(f"{SSH_R}; sleep 30", timeout=30)
    sb.close()
    s = _only_session(state_dir)
    assert s["state"] == "killed"
    assert _leftovers(s["resources"]) == []


def test_interpreter_exit_without_close_leaves_nothing(root_cwd: Path, state_dir: Path) -> None:
    script = textwrap.dedent("""
        from sandbox import Sandbox
        sb = Sandbox(profile="strict")
        sb.start()
        print(sb.run("echo up").output, flush=True)
        # no close(): the interpreter exits with the session live
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=root_cwd, capture_output=True,
                       text=True, timeout=60, check=False)
    assert "up" in r.stdout, r.stderr
    s = _only_session(state_dir)
    assert s["state"] in ("exited", "killed")
    assert _leftovers(s["resources"]) == []


def test_gc_reaps_resources_of_a_final_session_left_unreleased(
        root_cwd: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner that died mid-teardown: its final row still lists resources; the next
    start's gc removes them."""
    leftover = Path("/srv/sandbox/work/0123456789")
    leftover.mkdir(parents=True, exist_ok=True)
    store = Store(state_dir / "sandbox.db")
    store.create_session("0123456789", profile="default", kind="api", workdir=str(leftover),
                         argv=[], owner_pid=999999, owner_start=1.0, host="h", user="root")
    store.update_session("0123456789", resources={"workspace": str(leftover)})
    store.finish_session("0123456789", "killed", "test")
    monkeypatch.chdir(root_cwd)
    from sandbox import gc

    gc.collect(store)
    assert not leftover.exists()
    assert store.get_session("0123456789")["resources"].get("released")


def test_workspace_quota_is_enforced_and_recorded(root_cwd: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """M5 (wall): strict's 512 MiB fresh workspace: the 4th 200 MB file fails cleanly."""
    monkeypatch.chdir(root_cwd)
    with Sandbox(profile="strict") as sb:
        r = sb.run("for i in 1 2 3; do dd if=/dev/zero of=f$i bs=1M count=200 status=none "
                   "|| echo WRITE-FAILED; done; df -m . | tail -1", timeout=60)
        assert "WRITE-FAILED" in r.output and "No space left" in r.output, r.output
        workdir = Path(sb.run("pwd").output.strip())
        assert os.path.ismount(workdir)
        sid = sb.id
    events = Store().events(sid)
    full = [e for e in events if e["kind"] == "resource.disk_full"]
    assert full and full[0]["action"] == "flag"
    assert not workdir.exists()


def test_deep_gc_removes_stale_include_files(state_dir: Path) -> None:
    """A hide-list include of a session whose owner was killed mid-start: `sandbox gc`
    removes it once it is older than a minute (firejail only reads it at jail start)."""
    from sandbox import gc
    from sandbox.jail.firejail import INCLUDE_DIR

    INCLUDE_DIR.mkdir(parents=True, exist_ok=True)
    old, fresh = INCLUDE_DIR / "00000000aa.inc", INCLUDE_DIR / "00000000bb.inc"
    for p in (old, fresh):
        p.write_text("blacklist /nonexistent\n")
    os.utime(old, (1.0, 1.0))
    try:
        gc.collect(Store(state_dir / "sandbox.db"), deep=True)
        assert not old.exists() and fresh.exists()
    finally:
        for p in (old, fresh):
            p.unlink(missing_ok=True)


def test_close_reentered_from_its_own_teardown_does_not_wait_on_itself(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A framework's __del__ run by gc inside the teardown (mini-swe-agent's, at exit)
    called close() again on the same thread and waited TEARDOWN_WAIT_S for itself."""
    import threading

    from sandbox import session as session_mod

    monkeypatch.setattr(session_mod, "TEARDOWN_WAIT_S", 1000.0)
    sb = Sandbox(workdir=workspace).start()
    inner = sb._session
    original = inner._stop_jail

    def stop_and_reenter() -> None:
        original()
        inner.close()  # as a __del__ would

    monkeypatch.setattr(inner, "_stop_jail", stop_and_reenter)
    t = threading.Thread(target=sb.close)
    t.start()
    t.join(60)
    assert not t.is_alive(), "close() waited on its own teardown"
    assert inner.state == "exited"
