"""Red-team H1: the agent's environment never drives a root helper.

The agent plants `setpriv`, `firejail` and `ip` in its workspace's `bin/`; the operator
then puts that directory first on the session's PATH. On the old code the root
supervisor found the planted `setpriv` there (host root) or the planted `firejail`
(a program outside every namespace). Now nothing before the jail looks at that PATH.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.errors import SetupError


def _plant(ws: Path, proof_dir: Path) -> list[Path]:
    owner = ws.stat()
    (ws / "bin").mkdir(exist_ok=True)
    os.chown(ws / "bin", owner.st_uid, owner.st_gid)
    proofs = []
    for name in ("setpriv", "firejail", "ip", "env"):
        proof = proof_dir / f"proof-{name}"
        exe = ws / "bin" / name
        exe.write_text(f"#!/bin/sh\nid > {proof}\nexec /usr/bin/{name} \"$@\"\n")
        exe.chmod(0o755)
        os.chown(exe, owner.st_uid, owner.st_gid)
        proofs.append(proof)
    return proofs


def test_planted_helpers_on_the_agent_path_never_run(workspace: Path, test_dir: Path) -> None:
    proofs = _plant(workspace, test_dir)
    path = f"{workspace}/bin:.::/usr/local/bin:/usr/bin:/bin"
    with Sandbox(workdir=workspace, env={"PATH": path}) as sb:
        r = sb.run("echo $PATH; id -u")
        assert r.exit_code == 0 and f"{workspace}/bin" in r.output
    for proof in proofs:
        assert not proof.exists(), proof.read_text()


def test_planted_helpers_through_sandbox_run(workspace: Path, test_dir: Path) -> None:
    proofs = _plant(workspace, test_dir)
    r = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "-q", "-w", str(workspace), "-e",
         f"PATH={workspace}/bin:/usr/bin:/bin", "--", "/bin/true"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    for proof in proofs:
        assert not proof.exists(), proof.read_text()


@pytest.mark.parametrize("key", ["LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH"])
def test_loader_variables_are_refused_with_the_fix(workspace: Path, key: str) -> None:
    with pytest.raises(SetupError, match=f"{key}.*inside the command"):
        Sandbox(workdir=workspace, env={key: f"{workspace}/hook.so"}).start()


def test_loader_variables_refused_by_the_cli(workspace: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "-q", "-w", str(workspace), "-e",
         f"LD_PRELOAD={workspace}/hook.so", "--", "/bin/true"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "LD_PRELOAD" in r.stderr and "Traceback" not in r.stderr


def test_helpers_resolve_to_root_owned_absolute_paths() -> None:
    from sandbox.jail.launch import supervisor_env, tool

    exe = Path(tool("firejail"))
    assert exe.is_absolute() and exe.stat().st_uid == 0
    assert not exe.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert supervisor_env()["PATH"].split(":")[0].startswith("/")


def test_doctor_reports_tiocsti_and_shared_disk() -> None:
    r = subprocess.run([sys.executable, "-m", "sandbox", "doctor"], capture_output=True,
                       text=True, timeout=120, check=False)
    out = r.stdout + r.stderr
    knob = Path("/proc/sys/dev/tty/legacy_tiocsti")
    if knob.exists() and knob.read_text().strip() == "1":
        assert "legacy_tiocsti = 1" in out and "sysctl -w dev.tty.legacy_tiocsti=0" in out
    assert "share a filesystem" in out or "different filesystems" in out, out


def test_jail_pid1_cmdline_does_not_list_hidden_paths(workspace: Path, state_dir: Path) -> None:
    """L7: firejail's argv (PID 1 inside) used to name every hidden path, the store's too."""
    with Sandbox(workdir=workspace) as sb:
        r = sb.run("tr '\\0' ' ' < /proc/1/cmdline; echo; ls /run/sandbox 2>&1 | head -1")
        assert "--blacklist" not in r.output and str(state_dir) not in r.output, r.output
        assert "--include=/run/sandbox/jail/" in r.output
        assert "Permission denied" in r.output
        assert sb.run(f"ls {state_dir} 2>&1").exit_code != 0
        include = Path(f"/run/sandbox/jail/{sb.id}.inc")
        assert include.exists()
    assert not include.exists()
