"""Session lifecycle: kill from another process, owner crash and gc, fail-closed starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from sandbox import Sandbox, SessionClosed, Store
from tests.helpers import make_workspace, procs_matching, sandbox_cli, wait_for


def test_kill_from_second_process_ends_whole_tree(workspace: Path) -> None:
    """`sandbox kill ID` from another process ends the session, nohup'd children included."""
    box = Sandbox(workdir=workspace).start()
    try:
        box.run("nohup sleep 1001.5 >/dev/null 2>&1 & (setsid sleep 1001.6 &) ; true")
        assert wait_for(lambda: len(procs_matching("sleep 1001.")) == 2, 5)
        r = sandbox_cli("kill", box.id)
        assert r.returncode == 0, r.stderr
        assert "killed" in r.stdout
        assert wait_for(lambda: not procs_matching("sleep 1001."), 5)
        assert Store().get_session(box.id)["state"] == "killed"
        try:
            box.run("true")
        except SessionClosed:
            pass
        else:
            raise AssertionError("a killed session must refuse commands")
    finally:
        box.close()


OWNER = textwrap.dedent("""
    import sys, time
    from sandbox import Sandbox
    box = Sandbox(workdir=sys.argv[1]).start()
    box.run("nohup sleep 1002.5 >/dev/null 2>&1 &")
    print(box.id, flush=True)
    time.sleep(600)
""")


def test_owner_crash_then_gc(workspace: Path) -> None:
    """Owner SIGKILLed: its jail dies, `sandbox gc` marks the session failed with a reason."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(workspace)],
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert owner.stdout is not None
        sid = owner.stdout.readline().strip()
        assert sid, "owner did not start a session"
        assert Store().get_session(sid)["state"] == "running"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        r = sandbox_cli("gc")
        assert r.returncode == 0 and sid in r.stdout, r.stdout + r.stderr
        row = Store().get_session(sid)
        assert row["state"] == "failed"
        assert "owner process" in row["reason"] and "died" in row["reason"]
        assert wait_for(lambda: not procs_matching("sleep 1002.5"), 5)
        ls = sandbox_cli("ls")
        assert sid in ls.stdout and "failed" in ls.stdout
    finally:
        owner.kill()
        owner.wait()


def test_missing_workspace_fails_closed(test_dir: Path) -> None:
    """A start that cannot be set up raises, records `failed` with the reason, leaves nothing."""
    try:
        Sandbox(workdir=test_dir / "nope").start()
    except Exception as e:
        assert "not a directory" in str(e)
    else:
        raise AssertionError("start should fail")
    rows = Store().list_sessions()
    assert rows and rows[0]["state"] == "failed" and "not a directory" in rows[0]["reason"]


def test_api_kill_and_many_sandboxes(test_dir: Path) -> None:
    """Several sandboxes live in one process; killing one leaves the others running."""
    boxes = []
    for i in range(3):
        ws = make_workspace(test_dir / f"w{i}")
        boxes.append(Sandbox(workdir=ws).start())
    try:
        boxes[1].kill()
        assert boxes[0].run("echo a").output == "a\n"
        assert boxes[2].run("echo c").output == "c\n"
        assert Store().get_session(boxes[1].id)["state"] == "killed"
    finally:
        for b in boxes:
            b.close()


def test_root_owned_workdir_is_refused_with_the_fix(test_dir: Path) -> None:
    """The agent never runs as root, and a root-owned workspace is not silently chown'd."""
    ws = test_dir / "rootowned"
    ws.mkdir()
    try:
        Sandbox(workdir=ws).start()
    except Exception as e:
        assert "chown -R" in str(e) and str(ws) in str(e)
    else:
        raise AssertionError("a root-owned workspace must be refused")


def test_fresh_workspace_when_none_given(test_dir: Path, monkeypatch: object) -> None:
    """Root without --workdir in a root-owned cwd: a fresh workspace, removed at the end."""
    with Sandbox() as box:
        wd = box.run("pwd").output.strip()
        assert wd.startswith("/srv/sandbox/work/")
        assert box.run("echo x > f && cat f").output == "x\n"
    assert not Path(wd).exists()
