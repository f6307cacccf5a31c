"""Red-team H2, H5, L2, L3 (users): whose secrets are hidden, who runs as whom.

H2: root runs the agent as an ordinary user (the sudo invoker, or the owner of the
workdir); that user's own `~/.ssh`, `~/.aws`, histories were readable in the jail, and
run from `~` the agent could write `.bashrc`. H5: every fresh workspace ran as one uid,
so session A read session B's workspace and decoys.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.errors import SetupError

from ..helpers import sandbox_cli

DUMP = """\
import os, pwd, sys
home = sys.argv[1]
for rel in (".ssh/id_ed25519", ".aws/credentials", ".bash_history", ".config/gcloud/x"):
    p = os.path.join(home, rel)
    try:
        print("READ", p, open(p).read().strip())
    except OSError as e:
        print("DENIED", p, type(e).__name__)
"""


@pytest.fixture
def user_with_secrets(test_dir: Path) -> Iterator[pwd.struct_passwd]:
    """A real ordinary user whose home holds (fake) keys, removed afterwards."""
    name = "sbxh" + uuid.uuid4().hex[:8]
    home = test_dir / name
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell",
                    "/bin/bash", name], check=True, timeout=30)
    user = pwd.getpwnam(name)
    for rel, text in ((".ssh/id_ed25519", "FAKE-USER-KEY"), (".aws/credentials", "FAKE-AWS"),
                      (".bash_history", "mysql -psupersecret"),
                      (".config/gcloud/x", "FAKE-GCLOUD")):
        p = home / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
        for q in (p, p.parent):
            os.chown(q, user.pw_uid, user.pw_gid)
        p.chmod(0o600)
    try:
        yield user
    finally:
        subprocess.run(["userdel", "--force", name], check=False, timeout=30,
                       capture_output=True)


def _project(user: pwd.struct_passwd) -> Path:
    proj = Path(user.pw_dir) / "proj"
    proj.mkdir(exist_ok=True)
    os.chown(proj, user.pw_uid, user.pw_gid)
    (proj / "dump.py").write_text(DUMP)
    return proj


def _assert_hidden(out: str) -> None:
    assert "FAKE" not in out and "supersecret" not in out, out
    assert out.count("DENIED") == 4, out


def test_workdir_owner_secrets_are_hidden(user_with_secrets: pwd.struct_passwd) -> None:
    proj = _project(user_with_secrets)
    for profile in ("default", "strict"):
        with Sandbox(profile=profile, workdir=proj) as sb:
            r = sb.run(f"id -un; python3 dump.py {user_with_secrets.pw_dir}")
            assert user_with_secrets.pw_name in r.output
            _assert_hidden(r.output)


def test_sudo_invoker_secrets_are_hidden(user_with_secrets: pwd.struct_passwd) -> None:
    """The documented main path: `sudo sandbox run`, HOME still /root."""
    proj = _project(user_with_secrets)
    r = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "-q", "--", "python3", "dump.py",
         user_with_secrets.pw_dir], cwd=proj, capture_output=True, text=True, timeout=60,
        check=False, stdin=subprocess.DEVNULL,
        env={**os.environ, "SUDO_UID": str(user_with_secrets.pw_uid),
             "SUDO_USER": user_with_secrets.pw_name, "HOME": "/root"})
    assert r.returncode == 0, r.stderr
    _assert_hidden(r.stdout)


def test_a_home_directory_is_refused_as_workdir(user_with_secrets: pwd.struct_passwd) -> None:
    home = Path(user_with_secrets.pw_dir)
    rc = home / ".bashrc"
    before = rc.read_bytes() if rc.exists() else None
    with pytest.raises(SetupError, match="login home"):
        Sandbox(workdir=home).start()
    r = subprocess.run([sys.executable, "-m", "sandbox", "run", "-q", "--", "sh", "-c",
                        "echo PERSIST >> .bashrc"],
                       cwd=home, capture_output=True, text=True, timeout=60, check=False,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "login home" in r.stderr and "Traceback" not in r.stderr
    assert (rc.read_bytes() if rc.exists() else None) == before


def test_a_directory_with_shell_startup_files_is_refused(workspace: Path) -> None:
    (workspace / ".bashrc").write_text("echo hi\n")
    with pytest.raises(SetupError, match="start-up files"):
        Sandbox(workdir=workspace).start()


def test_fresh_sessions_cannot_read_each_other(test_dir: Path) -> None:
    """H5: two fresh workspaces, two uids; A cannot read B's workspace or decoys."""
    root_cwd = test_dir / "rootcwd"
    root_cwd.mkdir()
    cwd = os.getcwd()
    os.chdir(root_cwd)
    try:
        with Sandbox(profile="strict") as b, Sandbox() as a:
            b.run("echo episode-B-secret > solution.txt")
            ub, ua = b.run("id -u").output.strip(), a.run("id -u").output.strip()
            assert ub != ua
            r = a.run("cat /srv/sandbox/work/*/solution.txt; ls /srv/sandbox/work; "
                      "cat /srv/sandbox/homes/*/.aws/credentials")
            assert "episode-B-secret" not in r.output and "aws_access_key_id" not in r.output
            assert "b.id" not in r.output
            # No honeytoken alert is pinned on B for A's attempt.
            assert not [x for x in b.run("true").alerts if "honeytoken" in str(x)]
    finally:
        os.chdir(cwd)


def test_fork_bomb_in_one_fresh_session_does_not_starve_another(test_dir: Path) -> None:
    """H5: RLIMIT_NPROC counts per uid; a uid per session keeps the limits apart.

    B (strict: 128 processes) leaves 120 sleepers running in the background, just under
    its limit; A then forks. With one shared uid A's forks failed (after bash's retries)."""
    root_cwd = test_dir / "rootcwd2"
    root_cwd.mkdir()
    cwd = os.getcwd()
    os.chdir(root_cwd)
    try:
        with Sandbox(profile="strict") as b, Sandbox(profile="strict") as a:
            r = b.run("for i in $(seq 120); do sleep 60 & done; echo spawned", timeout=30)
            assert "spawned" in r.output and "fork" not in r.output, r.output
            r = a.run("for i in $(seq 10); do sleep 0.2 & done; wait; echo ok", timeout=60)
            assert r.output.strip().endswith("ok"), r.output
            assert "fork" not in r.output, r.output  # "fork: retry: Resource ..." before
    finally:
        os.chdir(cwd)


def test_system_trees_never_get_a_chown_suggestion() -> None:
    for wd in ("/", "/etc", "/dev/shm"):
        r = sandbox_cli("run", "-q", "--workdir", wd, "--", "true")
        assert r.returncode != 0 and "chown -R" not in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_workdir_owned_by_a_uid_without_account(test_dir: Path) -> None:
    """L3: a clear error, no KeyError traceback."""
    wd = test_dir / "orphan"
    wd.mkdir()
    os.chown(wd, 54321, 54321)
    r = sandbox_cli("run", "-q", "--workdir", str(wd), "--", "true")
    assert r.returncode != 0 and "no user account" in r.stderr and "Traceback" not in r.stderr
