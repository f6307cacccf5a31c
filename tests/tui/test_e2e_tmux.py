"""End to end in a real terminal: `sandbox tui` in tmux kills a real `sandbox run` session."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbox.record import Store

from ..helpers import tree, tree_argvs, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None,
                                                    reason="needs tmux")]


def capture(name: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True,
                          text=True, check=False).stdout


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def sleeper(state_dir: Path, workspace: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real session: `sandbox run -- sleep 1000` in the background, owned by its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "run", "-q", "--workdir", str(workspace), "--",
         "sleep", "1000"],
        env={**os.environ, "SANDBOX_STATE_DIR": str(state_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def tmux_name() -> Iterator[str]:
    name = f"sbtui-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def test_k_in_a_real_terminal_kills_a_real_session(state_dir: Path, sleeper, tmux_name: str) -> None:
    """The row shows in `sandbox tui`; k then y ends the jail and every process in it, and
    the store says killed."""
    store = Store()
    session = wait_for(lambda: next((s for s in store.list_sessions()
                                     if s["state"] == "running" and s["jail_pid"]), None), 20)
    assert session, "the sandbox never started"
    sid, jail_pid = session["id"], session["jail_pid"]
    # the tree as it is once the program runs (a snapshot taken first could miss it)
    assert wait_for(lambda: any(a.startswith("sleep") for a in tree_argvs(jail_pid)), 5)
    pids = tree(jail_pid)

    sandbox = shutil.which("sandbox")
    cmd = shlex.join([sandbox, "tui"] if sandbox else [sys.executable, "-m", "sandbox", "tui"])
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux_name, "-x", "160", "-y", "48",
                    f"env SANDBOX_STATE_DIR={shlex.quote(str(state_dir))} {cmd}"], check=True)
    assert wait_for(lambda: sid in capture(tmux_name) and "running" in capture(tmux_name), 20), \
        capture(tmux_name)

    subprocess.run(["tmux", "send-keys", "-t", tmux_name, "k"], check=True)
    assert wait_for(lambda: "Kill session" in capture(tmux_name), 10), capture(tmux_name)
    subprocess.run(["tmux", "send-keys", "-t", tmux_name, "y"], check=True)

    assert wait_for(lambda: store.get_session(sid)["state"] == "killed", 10)
    assert wait_for(lambda: not any(alive(p) for p in pids), 10), [p for p in pids if alive(p)]
    assert wait_for(lambda: "killed" in capture(tmux_name), 5), capture(tmux_name)
    assert sleeper.wait(timeout=10) != 0  # the wrapper saw its program die
    assert "via tui" in store.get_session(sid)["reason"]


def test_agent_output_cannot_retitle_or_paint_the_operators_terminal(
        state_dir: Path, workspace: Path, tmux_name: str) -> None:
    """M1 in a real terminal: output with OSC 2 (title) and SGR colours, shown in the
    session screen, leaves tmux's pane title alone and appears as visible `␛` text."""
    from sandbox import Sandbox

    with Sandbox(workdir=workspace) as box:
        r = box.run("printf 'x\\033]2;TUI-TITLE-INJECTED\\033\\\\y\\n\\033[31;1mRED\\n'")
        assert "\x1b]2;TUI-TITLE-INJECTED" in r.output  # the API result stays exact
    sandbox = shutil.which("sandbox")
    cmd = shlex.join([sandbox, "tui"] if sandbox else [sys.executable, "-m", "sandbox", "tui"])
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux_name, "-x", "200", "-y", "48",
                    f"env SANDBOX_STATE_DIR={shlex.quote(str(state_dir))} {cmd}"], check=True)
    subprocess.run(["tmux", "select-pane", "-t", tmux_name, "-T", "operator"], check=True)
    assert wait_for(lambda: box.id in capture(tmux_name), 20), capture(tmux_name)
    subprocess.run(["tmux", "send-keys", "-t", tmux_name, "Enter"], check=True)
    assert wait_for(lambda: "TUI-TITLE-INJECTED" in capture(tmux_name), 10), capture(tmux_name)
    subprocess.run(["tmux", "send-keys", "-t", tmux_name, "Enter"], check=True)  # full output
    assert wait_for(lambda: "␛[31;1mRED" in capture(tmux_name), 10), capture(tmux_name)
    screen = capture(tmux_name)
    assert "␛]2;TUI-TITLE-INJECTED" in screen, screen
    title = subprocess.run(["tmux", "display", "-p", "-t", tmux_name, "#{pane_title}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert title == "operator", title
