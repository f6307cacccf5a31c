"""Red-team C1, L8, M4: nothing the jail does reaches a terminal's input queue.

C1 runs the attack through a real terminal (a tmux pane running a root bash, as an
operator would): the agent pushes `touch PROOF` into its stdin with TIOCSTI, then the
session ends abnormally (timeout, guard kill, `sandbox kill`). On the old code the
operator's shell ran the injected command as root after `sandbox` returned.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.record import Store

from ..helpers import sandbox_cli, wait_for

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

INJECTOR = """\
import fcntl, os, sys, termios, time
payload = b"touch {proof}\\n"
fds = [0]
try:
    fds.append(os.open("/dev/tty", os.O_RDWR))
except OSError as e:
    print("no /dev/tty:", e, flush=True)
for fd in fds:
    try:
        for c in payload:
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
        print("INJECTED", fd, flush=True)
    except OSError as e:
        print("TIOCSTI refused:", fd, e, flush=True)
{after}
"""


def capture(name: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True,
                          text=True, check=False).stdout


@pytest.fixture
def pane(state_dir: Path) -> Iterator[str]:
    """A root bash in a real terminal (tmux), with this test's store."""
    name = f"sbsti-{uuid.uuid4().hex[:8]}"
    env = f"SANDBOX_STATE_DIR={shlex.quote(str(state_dir))}"
    if os.environ.get("PYTHONPATH"):  # the checkout under test, when it is not the venv's
        env += f" PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "40",
                    f"env {env} PS1='op$ ' bash --norc --noprofile"], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def _attack(pane: str, workspace: Path, after: str, extra: str = "") -> Path:
    proof = workspace.parent / f"proof-{uuid.uuid4().hex[:6]}"
    script = workspace / "sti.py"
    script.write_text(INJECTOR.format(proof=proof, after=after))
    cmd = (f"cd {shlex.quote(str(workspace))} && {sys.executable} -m sandbox run {extra} "
           f"-- python3 sti.py; echo sandbox-exit=$?")
    subprocess.run(["tmux", "send-keys", "-t", pane, cmd, "Enter"], check=True, timeout=10)
    return proof


def _exited(pane: str) -> bool:
    return re.search(r"sandbox-exit=\d", capture(pane)) is not None


def _assert_no_injection(pane: str, proof: Path) -> str:
    assert wait_for(lambda: _exited(pane), timeout=60), capture(pane)
    # The operator's shell gets its prompt back: anything injected would run now.
    subprocess.run(["tmux", "send-keys", "-t", pane, "echo shell-$((6*7))", "Enter"],
                   check=True)
    assert wait_for(lambda: "shell-42" in capture(pane), timeout=10)
    time.sleep(0.5)
    screen = capture(pane)
    assert not proof.exists(), screen
    assert "INJECTED" not in screen, screen
    return screen


@needs_tmux
def test_timeout_does_not_type_into_the_operator_shell(pane: str, workspace: Path) -> None:
    proof = _attack(pane, workspace, "time.sleep(60)", "--timeout 3")
    screen = _assert_no_injection(pane, proof)
    assert "sandbox-exit=124" in screen


@needs_tmux
def test_guard_kill_does_not_type_into_the_operator_shell(pane: str, workspace: Path) -> None:
    # The agent triggers its own kill on purpose (strict kills `ssh -R`).
    after = ('os.execvp("ssh", ["ssh", "-o", "BatchMode=yes", "-R", "1:127.0.0.1:1", "x"])')
    proof = _attack(pane, workspace, after, "-p strict")
    screen = _assert_no_injection(pane, proof)
    assert "sandbox-exit=137" in screen


@needs_tmux
def test_operator_kill_does_not_type_into_the_operator_shell(
        pane: str, workspace: Path, state_dir: Path) -> None:
    proof = _attack(pane, workspace, "time.sleep(60)")
    store = Store(state_dir / "sandbox.db")
    assert wait_for(lambda: any(s["state"] == "running" for s in store.list_sessions()),
                    timeout=30)
    sid = next(s["id"] for s in store.list_sessions() if s["state"] == "running")
    assert wait_for(lambda: "INJECTED" in capture(pane) or "refused" in capture(pane),
                    timeout=20)
    assert sandbox_cli("kill", sid, env={"SANDBOX_STATE_DIR": str(state_dir)}).returncode == 0
    screen = _assert_no_injection(pane, proof)
    assert "sandbox-exit=137" in screen


@needs_tmux
def test_the_jail_cannot_change_the_operator_tty_modes(pane: str, workspace: Path) -> None:
    """L8: `stty` in the jail acts on its own pty; the operator's modes come back intact."""
    before = subprocess.run(["tmux", "display", "-p", "-t", pane, "#{pane_tty}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    modes = subprocess.run(["stty", "-g", "-F", before], capture_output=True, text=True,
                           check=True).stdout
    cmd = (f"cd {shlex.quote(str(workspace))} && {sys.executable} -m sandbox run -q -- "
           "bash -c 'test -t 0 && echo STDIN-IS-TTY; stty -echo raw; stty size'; "
           "echo sandbox-exit=$?")
    subprocess.run(["tmux", "send-keys", "-t", pane, cmd, "Enter"], check=True, timeout=10)
    assert wait_for(lambda: _exited(pane), timeout=60), capture(pane)
    screen = capture(pane)
    assert "STDIN-IS-TTY" in screen and "40 160" in screen, screen  # own pty, our size
    after = subprocess.run(["stty", "-g", "-F", before], capture_output=True, text=True,
                           check=True).stdout
    assert after == modes


def test_api_shell_cannot_inject_hidden_commands(workspace: Path) -> None:
    """M4: TIOCSTI into the jail's own pty is refused (the seccomp filter)."""
    with Sandbox(workdir=workspace) as sb:
        r = sb.run(
            "python3 -c 'import fcntl,termios,os\n"
            "fd=os.open(\"/dev/tty\",os.O_RDWR)\n"
            "fcntl.ioctl(fd, termios.TIOCSTI, b\"x\")'")
        assert r.exit_code != 0 and "Operation not permitted" in r.output, r.output
        sb.run("true")
        assert not (workspace / "hidden.txt").exists()


def test_wrapped_program_sees_no_controlling_tty_without_one(workspace: Path) -> None:
    """stdin not a terminal: the jail has a session of its own and no /dev/tty at all."""
    r = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "-q", "--workdir", str(workspace), "--",
         "bash", "-c", "exec 3</dev/tty && echo HAS-TTY || echo no-tty"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=dict(os.environ), check=False)
    assert "no-tty" in r.stdout and "HAS-TTY" not in r.stdout, r.stdout + r.stderr


@needs_tmux
def test_ctrl_c_and_typed_input_reach_the_jail_through_its_own_pty(
        pane: str, workspace: Path) -> None:
    cmd = (f"cd {shlex.quote(str(workspace))} && {sys.executable} -m sandbox run -q -- "
           "sh -c 'trap \"echo got-int; exit 7\" INT; read line; echo \"typed:$line\"; "
           "echo ready; sleep 20 & wait'; echo sandbox-exit=$?")
    subprocess.run(["tmux", "send-keys", "-t", pane, cmd, "Enter"], check=True, timeout=10)
    time.sleep(1.5)
    subprocess.run(["tmux", "send-keys", "-t", pane, "hello there", "Enter"], check=True)
    assert wait_for(lambda: "ready" in capture(pane), timeout=30), capture(pane)
    subprocess.run(["tmux", "send-keys", "-t", pane, "C-c"], check=True)
    assert wait_for(lambda: _exited(pane), timeout=30), capture(pane)
    screen = capture(pane)
    assert "typed:hello there" in screen and "got-int" in screen, screen
