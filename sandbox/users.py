"""Who the agent runs as.

A non-root supervisor runs the jail as itself (firejail is setuid and drops what it must).
A root supervisor never lets the agent be uid 0: it uses the sudo invoker when there is
one (their files, their workspace), else a system user `sandbox-agent` that it creates on
first use. The workspace is then opened to that user with POSIX ACLs, which add an entry
instead of changing the owner of the user's files.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .errors import DependencyMissing, SetupError
from .jail import Agent

AGENT_USER = "sandbox-agent"
AGENT_HOME = Path("/var/lib/sandbox-agent")


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as e:
        raise DependencyMissing(f"{argv[0]} not found ({what}): apt-get install {_pkg(argv[0])}") \
            from e
    if proc.returncode != 0:
        raise SetupError(f"{what} failed: {' '.join(argv)}: {proc.stderr.strip()}")


def _pkg(program: str) -> str:
    return {"setfacl": "acl", "useradd": "passwd", "setpriv": "util-linux"}.get(program, program)


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
    if pw.pw_shell.endswith("nologin") or pw.pw_shell.endswith("false"):
        _run(["usermod", "--shell", "/bin/bash", name], f"giving {name} a shell")
    return Agent(uid=pw.pw_uid, gid=pw.pw_gid, name=name)


def resolve_agent() -> Agent | None:
    """None when we are not root (the jail runs as us), else the unprivileged agent."""
    if os.geteuid() != 0:
        return None
    sudo_uid = os.environ.get("SUDO_UID")
    if sudo_uid and sudo_uid.isdigit() and int(sudo_uid) != 0:
        pw = pwd.getpwuid(int(sudo_uid))
        return Agent(uid=pw.pw_uid, gid=pw.pw_gid, name=pw.pw_name)
    return ensure_agent_user()


def _dangerous(path: Path) -> bool:
    home = Path.home().resolve()
    return len(path.parts) < 3 or path in (home, Path("/root"), Path("/home"))


def agent_can_write(path: Path, agent: Agent) -> bool:
    """Ask the kernel (ACLs included) whether the agent can enter and write `path`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([])
            os.setgid(agent.gid)
            os.setuid(agent.uid)
            ok = os.access(path, os.W_OK | os.X_OK | os.R_OK)
        except OSError:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def grant_workspace(workdir: Path, agent: Agent) -> bool:
    """Open `workdir` to the agent (rwX, recursive, default ACL) and its parents (x).

    Returns True when ACLs were added. Refuses `/`, top-level directories and HOME:
    handing those to an agent is never what the operator meant.
    """
    workdir = workdir.resolve()
    if agent_can_write(workdir, agent):
        return False
    if _dangerous(workdir):
        raise SetupError(
            f"refusing to open {workdir} to the agent user {agent.name}: pass "
            "--workdir with a project directory (e.g. --workdir $(mktemp -d -p /srv))"
        )
    if shutil.which("setfacl") is None:
        raise DependencyMissing(
            f"the agent user {agent.name} cannot write {workdir} and setfacl is missing: "
            "apt-get install acl, or pass --workdir with a directory the agent owns"
        )
    spec = f"u:{agent.uid}:rwX"
    _run(["setfacl", "-R", "-m", spec, "-m", f"d:{spec}", str(workdir)],
         f"opening {workdir} to {agent.name}")
    for parent in workdir.parents:
        if not parent.stat().st_mode & 0o001:
            _run(["setfacl", "-m", f"u:{agent.uid}:x", str(parent)],
                 f"letting {agent.name} traverse {parent}")
    return True
