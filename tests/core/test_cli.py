"""The wrapper door and the inspection verbs, as a user types them."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import sandbox_cli

REPO = Path(__file__).resolve().parents[2]


def test_run_passes_output_and_exit_code(workspace: Path) -> None:
    """`sandbox run -- sh -c 'echo hi; exit 3'` prints hi, exits 3 and prints the summary."""
    r = sandbox_cli("run", "--workdir", str(workspace), "--", "sh", "-c", "echo hi; echo err >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout == "hi\n"
    assert "err\n" in r.stderr
    assert "sandbox: session" in r.stderr and "exited with status 3" in r.stderr
    sid = r.stderr.split("sandbox: session ")[1].split()[0]
    ls = sandbox_cli("ls")
    assert sid in ls.stdout and "exited" in ls.stdout
    show = sandbox_cli("show", sid)
    assert "exit 3" in show.stdout and "sh -c 'echo hi; echo err >&2; exit 3'" in show.stdout
    data = json.loads(sandbox_cli("show", sid, "--json").stdout)
    assert data["commands"][0]["exit_code"] == 3
    assert "hi" in data["commands"][0]["output"]
    assert json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"] == sid


def test_run_json_summary_and_quiet(workspace: Path) -> None:
    r = sandbox_cli("run", "--json", "-w", str(workspace), "--", "true")
    info = json.loads(r.stderr.strip().splitlines()[-1])
    assert info["exit_code"] == 0 and info["commands"] == 1 and len(info["head_hash"]) == 64
    r = sandbox_cli("run", "-q", "-w", str(workspace), "--", "false")
    assert r.returncode == 1 and r.stderr == ""


def test_run_binary_stdout_and_stdin(workspace: Path) -> None:
    """stdin and binary stdout pass through byte for byte."""
    data = bytes(range(256)) * 100
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "-q", "-w", str(workspace),
                           "--", "cat"], input=data, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout == data


def test_run_signal_exit_code(workspace: Path) -> None:
    r = sandbox_cli("run", "-q", "-w", str(workspace), "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15


def test_run_without_command_teaches(workspace: Path) -> None:
    r = sandbox_cli("run")
    assert r.returncode == 2 and "sandbox run -- " in r.stderr


def test_logs_verify_export(workspace: Path) -> None:
    r = sandbox_cli("run", "-q", "-w", str(workspace), "--", "echo", "logged")
    sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
    assert "logged" in sandbox_cli("logs", sid).stdout
    v = sandbox_cli("verify", sid)
    assert v.returncode == 0 and v.stdout.startswith("OK"), v.stdout
    report = json.loads(sandbox_cli("export", sid, "--format", "report").stdout)
    assert report["verdict"] == "clean" and report["counts"]["commands"] == 1
    cast = sandbox_cli("export", sid, "--format", "asciicast").stdout.splitlines()
    assert json.loads(cast[0])["version"] == 2
    assert any("logged" in json.loads(line)[2] for line in cast[1:])
    assert r.returncode == 0


def test_unknown_session_id_is_clear() -> None:
    r = sandbox_cli("show", "doesnotexist")
    assert r.returncode == 2 and "sandbox ls" in r.stderr


def test_doctor_reports_each_check() -> None:
    r = sandbox_cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["firejail"]["ok"] and checks["firejail runs"]["ok"]
    assert r.returncode == 0


def test_profiles_list_and_show() -> None:
    r = sandbox_cli("profiles")
    assert "default" in r.stdout and "strict" in r.stdout
    shown = json.loads(sandbox_cli("profiles", "show", "strict").stdout)
    assert shown["limits"]["processes"] == 128 and shown["network"]["mode"] == "none"


def test_help_teaches() -> None:
    r = sandbox_cli("--help")
    assert "sandbox run -- sh -c" in r.stdout
    r = subprocess.run([sys.executable, "-m", "sandbox", "run", "--help"], capture_output=True,
                       text=True, check=False)
    assert "--profile" in r.stdout and "--workdir" in r.stdout


@pytest.fixture
def throwaway_user(test_dir: Path) -> Iterator[pwd.struct_passwd]:
    """A real unprivileged user, removed afterwards, who can run this checkout's venv."""
    name = "sbxt" + uuid.uuid4().hex[:8]
    home = test_dir / name
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/bash",
                    name], check=True)
    user = pwd.getpwnam(name)
    granted: list[str] = []
    # The venv and checkout may sit under a directory the new user cannot enter.
    for path in [REPO, *REPO.parents, Path(sys.prefix), Path(sys.base_prefix)]:
        if os.stat(path).st_mode & 5 != 5:
            subprocess.run(["setfacl", "-m", f"u:{name}:rx", str(path)], check=True)
            granted.append(str(path))
    try:
        yield user
    finally:
        for path in granted:
            subprocess.run(["setfacl", "-x", f"u:{name}", path], check=False)
        subprocess.run(["userdel", "--force", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_none_mode_works_for_a_non_root_user(throwaway_user: pwd.struct_passwd) -> None:
    """A plain user (no root, no sudo) runs `sandbox run` in none mode: jailed, no network."""
    u = throwaway_user
    env = {"HOME": u.pw_dir, "USER": u.pw_name, "PATH": "/usr/bin:/bin",
           "SANDBOX_STATE_DIR": f"{u.pw_dir}/state"}
    ws = Path(u.pw_dir) / "ws"
    ws.mkdir()
    os.chown(ws, u.pw_uid, u.pw_gid)
    proc = subprocess.run(
        ["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}", "--init-groups", "--",
         sys.executable, "-m", "sandbox", "run", "-w", str(ws),
         "--", "sh", "-c", "id -u; cat /sys/class/net/*/address | wc -l; touch /etc/x || echo ro"],
        capture_output=True, text=True, env=env, timeout=60, check=False, cwd=u.pw_dir,
    )
    assert proc.returncode == 0, proc.stderr
    uid, nics, ro = proc.stdout.split()
    assert uid == str(u.pw_uid) and nics == "1" and ro == "ro"
    assert "sandbox: session" in proc.stderr


def test_run_timeout_kills_and_exits_124(workspace: Path) -> None:
    r = sandbox_cli("run", "-q", "--timeout", "1", "-w", str(workspace), "--", "sleep", "1005.5")
    assert r.returncode == 124
    from tests.helpers import procs_matching, wait_for
    assert wait_for(lambda: not procs_matching("sleep 1005.5"), 5)


def test_sigterm_to_the_wrapper_kills_the_session(workspace: Path) -> None:
    """An orchestrator's SIGTERM ends the jail too, and the store says why."""
    import signal as _signal

    from sandbox import Store
    from tests.helpers import procs_matching, wait_for

    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "run", "-q", "-w", str(workspace),
                             "--", "sleep", "1005.75"], env=os.environ.copy())
    try:
        assert wait_for(lambda: procs_matching("sleep 1005.75"), 10)
        proc.send_signal(_signal.SIGTERM)
        assert proc.wait(10) == 128 + 15
        assert wait_for(lambda: not procs_matching("sleep 1005.75"), 5)
        row = Store().list_sessions()[0]
        assert row["state"] == "killed" and "interrupted" in row["reason"]
    finally:
        proc.kill()
        proc.wait()
