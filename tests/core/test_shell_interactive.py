"""`sandbox shell` in a real terminal (tmux): the operator's keys pass through, and every
command is still recorded with its output and exit code."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

from sandbox import Store
from tests.helpers import wait_for


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False,
                          timeout=10).stdout


def test_interactive_shell_records_commands(state_dir: Path) -> None:
    name = "sbx-" + uuid.uuid4().hex[:8]
    cmd = (f"env SANDBOX_STATE_DIR={shlex.quote(str(state_dir))} "
           f"{shlex.quote(sys.executable)} -m sandbox shell")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "30", cmd],
                   check=True, env=os.environ.copy(), timeout=10)
    try:
        assert wait_for(lambda: "sandbox:" in _tmux("capture-pane", "-t", name, "-p"), 15)
        _tmux("send-keys", "-t", name, "echo typed-by-operator; (exit 4)", "Enter")
        assert wait_for(lambda: "typed-by-operator\n" in _tmux("capture-pane", "-t", name, "-p"), 5)
        _tmux("send-keys", "-t", name, "exit", "Enter")
        store = Store()
        sid = wait_for(lambda: [s["id"] for s in store.list_sessions()
                                if s["state"] == "exited"], 10)
        assert sid
        rows = store.commands(sid[0])  # type: ignore[index]
        assert rows[0]["text"] == "echo typed-by-operator; (exit 4)"
        assert rows[0]["exit_code"] == 4 and "typed-by-operator" in rows[0]["output"]
        assert rows[0]["source"] == "shell"
    finally:
        _tmux("kill-session", "-t", name)
