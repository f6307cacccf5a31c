"""Who the agent runs as, and which workspace it gets.

Firejail makes a directory writable (`--read-write`) only for the user who owns it, so
the agent and its workspace always belong together:

- a non-root supervisor runs the jail as itself; the workspace must be its own;
- a root supervisor never lets the agent be uid 0 (a root shell with every capability
  dropped still reads /etc/shadow). It runs the agent as the sudo invoker when there is
  one, else as the owner of the given workspace when that is not root, else in a fresh
  workspace of its own under /srv/sandbox/work/ (0700), removed when the session ends,
  as a user of its own. (Not under /var: firejail mounts /var noexec, and agents must be
  able to run what they build.)

Fresh workspaces get a uid each (red-team H5): one shared uid let session A read B's
workspace and decoys (framing B) and exhaust B's per-uid process limit. The pool is
`sandbox-agent-0` .. `-N`, system users created on first use; a session holds its slot
by an flock on /run/sandbox/agents/<name>.lock for its lifetime (the kernel drops it if
the supervisor dies), so two live sessions never share a uid, whatever process owns
them.

A root-owned `--workdir` is refused with the fix, rather than chown'd behind the user's
back; so is a home directory or any directory holding shell start-up files (H2: the
agent would write `.bashrc`, persistence at the next login). The fix never suggests
changing a system tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DependencyMissing, SetupError
from . import launch, mounts
from .firejail import Agent

AGENT_USER = "sandbox-agent"
AGENT_HOME = Path("/var/lib/sandbox-agent")
WORK_ROOT = Path("/srv/sandbox")
POOL_HOMES = Path("/var/lib/sandbox-agents")
POOL_LOCKS = Path("/run/sandbox/agents")
# One agent uid per live session with a fresh workspace: hundreds of sandboxes in one
# process (RL rollouts, the framework door) need hundreds; users are created on first use.
POOL_SIZE = int(os.environ.get("SANDBOX_AGENT_POOL", "256"))
# Files whose presence makes a directory someone's login home (or as good as one).
STARTUP_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc",
                 ".zprofile", ".zshenv", ".login", ".cshrc", ".tcshrc", ".xinitrc",
                 ".xsession", ".xprofile")
# Trees whose ownership a fix must never suggest changing.
SYSTEM_TREES = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt",
                "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
                "/dev/shm", "/var/tmp", "/mnt", "/media")


@dataclass(frozen=True)
class Placement:
    """The agent user (None = the supervisor itself) and its workspace."""

    agent: Agent | None
    workdir: Path
    fresh: bool  # a workspace made for this session, removed at its end
    slot_fd: int | None = field(default=None, compare=False)  # the pool slot's flock


def _run(argv: list[str], what: str) -> None:
    argv = [launch.tool(argv[0]), *argv[1:]]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              env=launch.supervisor_env())
    except FileNotFoundError as e:
        raise DependencyMissing(f"{argv[0]} not found ({what}): apt-get install passwd") from e
    if proc.returncode != 0:
        raise SetupError(f"{what} failed: {' '.join(argv)}: {proc.stderr.strip()}")


def ensure_agent_user(name: str = AGENT_USER, home: Path = AGENT_HOME) -> Agent:
    """A system user the agent runs as under a root supervisor, created if missing."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        home.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            _run(
                ["useradd", "--system", "--home-dir", str(home), "--create-home",
                 "--shell", "/bin/bash", "--comment", "sandbox agent (unprivileged)", name],
                f"creating the agent user {name}",
            )
        except SetupError:
            with contextlib.suppress(KeyError):  # another supervisor made it meanwhile
                pw = pwd.getpwnam(name)
                return _agent(pw)
            raise
        pw = pwd.getpwnam(name)
    # firejail starts programs through the user's login shell: nologin would refuse.
    if pw.pw_shell.endswith(("nologin", "false")):
        _run(["usermod", "--shell", "/bin/bash", name], f"giving {name} a shell")
    return _agent(pw)


def _agent(pw: pwd.struct_passwd) -> Agent:
    return Agent(uid=pw.pw_uid, gid=pw.pw_gid, name=pw.pw_name)


def _owner_error(workdir: Path, owner: int, who: str, flag: str) -> SetupError:
    """`flag` is the door's word for the workspace: `--workdir` (CLI) or `workdir=` (API)."""
    fresh = f", or leave out {flag} for a fresh workspace" if os.geteuid() == 0 else ""
    # The fix must work as pasted: the user it names may not exist yet on a fresh host.
    make = "" if _exists(who) else f"useradd --system --shell /bin/bash {who} && "
    if str(workdir) in SYSTEM_TREES or len(workdir.parts) <= 2:
        # Never advise `chown -R` of a system tree (red-team L2).
        return SetupError(
            f"workspace {workdir} is a system directory and cannot be the agent's "
            f"workspace. Fix: create a project directory, e.g. {make}mkdir -p /srv/work/proj "
            f"&& chown {who} /srv/work/proj, and pass it as {flag}{fresh}")
    return SetupError(
        f"workspace {workdir} belongs to uid {owner}, but the agent runs as {who}; firejail "
        f"makes only the agent's own directories writable. Fix: {make}chown -R {who} "
        f"{workdir}, or pass a {flag} the agent owns{fresh}"
    )


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _user_of(uid: int, workdir: Path, flag: str = "--workdir") -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        raise SetupError(
            f"workspace {workdir} belongs to uid {uid}, which has no user account: the "
            f"agent cannot run as it. Fix: chown it to a real user, or leave out {flag} "
            "for a fresh workspace") from None


def homes_of(*uids: int | None) -> list[Path]:
    """The login homes of these users (those that exist), for hiding their secrets."""
    out: list[Path] = []
    for uid in uids:
        if uid is None:
            continue
        with contextlib.suppress(KeyError):
            home = Path(pwd.getpwuid(uid).pw_dir)
            if home not in out and str(home) not in ("/", "/nonexistent"):
                out.append(home)
    return out


def check_not_a_home(workdir: Path) -> None:
    """Refuse a workdir that is a login home or holds shell start-up files (H2)."""
    # Compared as normalised strings: one Path per passwd entry cost ~4 ms a start with
    # the agent pool's few hundred users.
    target = os.path.normpath(workdir)
    if any(pw.pw_dir not in ("/", "") and os.path.normpath(pw.pw_dir) == target
           for pw in pwd.getpwall()):
        raise SetupError(
            f"workspace {workdir} is a login home directory: the agent could write its "
            "shell start-up files (persistence at the next login) and read its secrets. "
            f"Fix: use a project directory, e.g. mkdir {workdir}/proj && cd {workdir}/proj")
    found = [f for f in STARTUP_FILES if (workdir / f).exists()]
    if found:
        raise SetupError(
            f"workspace {workdir} holds shell start-up files ({', '.join(found)}): it looks "
            "like a home directory, and the agent could plant commands in them. Fix: use a "
            "project directory without them")


def place(workdir: Path | None, session_id: str, flag: str = "--workdir") -> Placement:
    """Decide the agent user and workspace for a session (see the module docstring);
    `flag` names the workspace in errors as the caller's door does."""
    if os.geteuid() != 0:
        wd = (workdir or Path.cwd()).resolve()
        if wd.is_dir() and wd.stat().st_uid != os.getuid():
            raise _owner_error(wd, wd.stat().st_uid, pwd.getpwuid(os.getuid()).pw_name, flag)
        return Placement(None, wd, False)
    sudo_uid = os.environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        agent = _agent(_user_of(int(sudo_uid), Path("SUDO_UID")))
        wd = (workdir or Path.cwd()).resolve()
        if wd.is_dir() and wd.stat().st_uid != agent.uid:
            raise _owner_error(wd, wd.stat().st_uid, agent.name, flag)
        check_not_a_home(wd)
        return Placement(agent, wd, False)
    if workdir is not None:
        wd = workdir.resolve()
        if not wd.is_dir():
            raise SetupError(f"workspace {wd} is not a directory: create it first")
        owner = wd.stat().st_uid
        if owner == 0:
            raise _owner_error(wd, 0, AGENT_USER, flag)
        agent = _agent(_user_of(owner, wd, flag))
        check_not_a_home(wd)
        return Placement(agent, wd, False)
    cwd = Path.cwd().resolve()
    if cwd.stat().st_uid != 0 and len(cwd.parts) > 2:
        agent = _agent(_user_of(cwd.stat().st_uid, cwd, flag))
        check_not_a_home(cwd)
        return Placement(agent, cwd, False)
    agent, slot_fd = _take_slot()
    try:
        fresh = WORK_ROOT / "work" / session_id
        # 0711: agents may pass through to their own workspace, not list the others.
        fresh.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(fresh.parent, 0o711)
        fresh.mkdir(mode=0o700)
        os.chown(fresh, agent.uid, agent.gid)
    except BaseException:
        _release_slot(slot_fd)
        raise
    return Placement(agent, fresh, True, slot_fd)


_mine: dict[int, int] = {}  # slot fd -> pool index: the slots this process holds
_mine_lock = threading.Lock()


def _take_slot() -> tuple[Agent, int]:
    """A pool user no live session holds, and the open flock that holds it for us.

    The slots this process holds are skipped without a look: each start tried every
    one of them first (an open and a flock each), with 256 alive ~33k over a burst."""
    POOL_LOCKS.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _mine_lock:
        held = set(_mine.values())
    for i in range(POOL_SIZE):
        if i in held:
            continue
        name = f"{AGENT_USER}-{i}"
        fd = os.open(POOL_LOCKS / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        with _mine_lock:
            _mine[fd] = i
        try:
            return ensure_agent_user(name, POOL_HOMES / name), fd
        except BaseException:
            _release_slot(fd)
            raise
    raise SetupError(
        f"all {POOL_SIZE} agent users are busy (one per live session with a fresh "
        "workspace). Fix: end some sessions, or raise SANDBOX_AGENT_POOL")


def remove_fresh(placement: Placement) -> None:
    """Remove a fresh workspace (unmounting its quota first) and free its pool slot."""
    if placement.fresh:
        unmount_quota(placement.workdir)
        shutil.rmtree(placement.workdir, ignore_errors=True)
    if placement.slot_fd is not None:
        _release_slot(placement.slot_fd)


def _release_slot(fd: int) -> None:
    with _mine_lock:
        _mine.pop(fd, None)
    with contextlib.suppress(OSError):
        os.close(fd)


def mount_quota(workdir: Path, agent: Agent, mib: int) -> None:
    """A size-limited filesystem (tmpfs) on a fresh workspace: the disk quota.

    tmpfs because it needs nothing of the host filesystem (no project quotas, no image
    files) and its pages are charged to the writer's memory cgroup, so the quota cannot
    push the session past its memory limit either.
    """
    mounts.tmpfs(str(workdir), f"sbx-ws-{workdir.name}",
                 f"size={mib}m,mode=0700,uid={agent.uid},gid={agent.gid}",
                 f"mounting the {mib} MiB workspace quota")


def unmount_quota(workdir: Path) -> None:
    if os.path.ismount(workdir):
        mounts.detach(str(workdir))
