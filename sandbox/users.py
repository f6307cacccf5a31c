"""Who the agent runs as, and which workspace it gets.

Firejail makes a directory writable (`--read-write`) only for the user who owns it, so
the agent and its workspace always belong together:

- a non-root supervisor runs the jail as itself; the workspace must be its own;
- a root supervisor never lets the agent be uid 0 (a root shell with every capability
  dropped still reads /etc/shadow). It runs the agent as the sudo invoker when there is
  one, else as the owner of the given workspace when that is not root, else as the
  system user `sandbox-agent` (created on first use) in a fresh workspace of its own
  under /srv/sandbox/work/, removed when the session ends. (Not under /var: firejail
  mounts /var noexec, and agents must be able to run what they build.)

A root-owned `--workdir` is refused with the fix, rather than chown'd behind the user's
back.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import DependencyMissing, SetupError
from .jail import Agent

AGENT_USER = "sandbox-agent"
AGENT_HOME = Path("/var/lib/sandbox-agent")
WORK_ROOT = Path("/srv/sandbox")


@dataclass(frozen=True)
class Placement:
    """The agent user (None = the supervisor itself) and its workspace."""

    agent: Agent | None
    workdir: Path
    fresh: bool  # a workspace made for this session, removed at its end


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as e:
        raise DependencyMissing(f"{argv[0]} not found ({what}): apt-get install passwd") from e
    if proc.returncode != 0:
        raise SetupError(f"{what} failed: {' '.join(argv)}: {proc.stderr.strip()}")


def ensure_agent_user(name: str = AGENT_USER) -> Agent:
    """The system user the agent runs as under a root supervisor, created if missing."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        _run(
            ["useradd", "--system", "--home-dir", str(AGENT_HOME), "--create-home",
             "--shell", "/bin/bash", "--comment", "sandbox agent (unprivileged)", name],
            f"creating the agent user {name}",
        )
        pw = pwd.getpwnam(name)
    # firejail starts programs through the user's login shell: nologin would refuse.
    if pw.pw_shell.endswith(("nologin", "false")):
        _run(["usermod", "--shell", "/bin/bash", name], f"giving {name} a shell")
    return _agent(pw)


def _agent(pw: pwd.struct_passwd) -> Agent:
    return Agent(uid=pw.pw_uid, gid=pw.pw_gid, name=pw.pw_name)


def _owner_error(workdir: Path, owner: int, who: str) -> SetupError:
    return SetupError(
        f"workspace {workdir} belongs to uid {owner}, but the agent runs as {who}; firejail "
        f"makes only the agent's own directories writable. Fix: chown -R {who} {workdir}, "
        "or pass a --workdir the agent owns" + (
            ", or leave out --workdir for a fresh workspace" if os.geteuid() == 0 else "")
    )


def place(workdir: Path | None, session_id: str) -> Placement:
    """Decide the agent user and workspace for a session (see the module docstring)."""
    if os.geteuid() != 0:
        wd = (workdir or Path.cwd()).resolve()
        if wd.is_dir() and wd.stat().st_uid != os.getuid():
            raise _owner_error(wd, wd.stat().st_uid, pwd.getpwuid(os.getuid()).pw_name)
        return Placement(None, wd, False)
    sudo_uid = os.environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        agent = _agent(pwd.getpwuid(int(sudo_uid)))
        wd = (workdir or Path.cwd()).resolve()
        if wd.is_dir() and wd.stat().st_uid != agent.uid:
            raise _owner_error(wd, wd.stat().st_uid, agent.name)
        return Placement(agent, wd, False)
    if workdir is not None:
        wd = workdir.resolve()
        if not wd.is_dir():
            raise SetupError(f"workspace {wd} is not a directory: create it first")
        owner = wd.stat().st_uid
        if owner == 0:
            raise _owner_error(wd, 0, AGENT_USER)
        return Placement(_agent(pwd.getpwuid(owner)), wd, False)
    cwd = Path.cwd().resolve()
    if cwd.stat().st_uid != 0 and len(cwd.parts) > 2:
        return Placement(_agent(pwd.getpwuid(cwd.stat().st_uid)), cwd, False)
    agent = ensure_agent_user()
    fresh = WORK_ROOT / "work" / session_id
    fresh.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fresh.mkdir(mode=0o700)
    os.chown(fresh, agent.uid, agent.gid)
    return Placement(agent, fresh, True)


def remove_fresh(placement: Placement) -> None:
    if placement.fresh:
        shutil.rmtree(placement.workdir, ignore_errors=True)
