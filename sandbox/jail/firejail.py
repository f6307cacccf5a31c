"""Profile -> firejail command line. Pure: tested by comparing lists.

The argv is firejail (by absolute path), its flags, `--` and the program. What a root
supervisor needs before firejail (enter the session's netns, drop to the unprivileged
agent user, a TIOCSTI filter) happens in the forked child itself (`launch.Launch`), not
through helper programs: no root helper ever runs with the agent's environment (red-team
H1). In allowlist mode the jail inherits a namespace we built; firejail is not asked for
`--netns`, which Debian's `restricted-network yes` refuses to non-root users.

Firejail is run, never reimplemented; its version is checked by `check_firejail`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DependencyMissing, SetupError
from . import launch
from .profile import Profile

MIN_FIREJAIL = (0, 9, 64)  # --deterministic-shutdown, --restrict-namespaces

# Secrets hidden in every jail, relative to each home involved: the supervisor's, the
# agent user's and the sudo invoker's (red-team H2). The profile adds more.
SECRET_PATHS = (
    ".ssh", ".aws", ".config/gcloud", ".kube", ".docker", ".netrc", ".gnupg",
    ".azure", ".config/gh", ".git-credentials", ".pypirc", ".npmrc", ".vault-token",
    ".password-store", ".bash_history", ".python_history", ".zsh_history", ".history",
    ".sh_history", ".mysql_history", ".psql_history", ".sqlite_history",
    ".node_repl_history", ".lesshst", ".config/sandbox", ".config/hub", ".terraform.d",
    ".local/share/keyrings", ".pgpass", ".my.cnf", ".cargo/credentials",
    ".cargo/credentials.toml", ".config/rclone", ".s3cfg", ".boto", ".databrickscfg",
    ".huggingface", ".cache/huggingface/token", ".config/op", ".wandb", ".netrc.gpg",
)
# System paths hidden whatever the user.
SYSTEM_SECRETS = ("/etc/sandbox", "/var/lib/sandbox", "/root")

JAIL_PREFIX = "sbx-"


@dataclass(frozen=True)
class Agent:
    """The unprivileged user the jailed program runs as (only set under a root supervisor)."""

    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class JailSpec:
    """Everything besides the profile that shapes one session's jail."""

    session_id: str
    workdir: Path
    state_dir: Path
    host_home: Path
    agent: Agent | None = None
    netns: str | None = None
    home: Path | None = None  # HOME inside; default: the workspace
    extra_hide: tuple[str, ...] = ()
    other_homes: tuple[Path, ...] = ()  # the agent user's and the invoker's homes
    gpu_args: tuple[str, ...] = ()
    gpu_env: tuple[tuple[str, str], ...] = (("CUDA_VISIBLE_DEVICES", ""),)
    private_dev: bool = True
    extra_writable: tuple[str, ...] = field(default_factory=tuple)
    # In an image (`sandbox.jail.images`): the root the launch mounts and firejail chroots into.
    image: launch.ImageMount | None = None
    image_env: tuple[tuple[str, str], ...] = ()  # the image's Env (under the profile's)

    @property
    def inside_workdir(self) -> str:
        """The workspace as the jail sees it: the image's working directory, or the host
        path (the host-filesystem jail sees the host's tree)."""
        return self.image.workdir if self.image is not None else str(self.workdir)


def jail_name(session_id: str) -> str:
    """The firejail `--name`, so `firejail --list` and `--shutdown` find the session."""
    return JAIL_PREFIX + session_id


def hidden_paths(profile: Profile, spec: JailSpec) -> list[str]:
    """Absolute paths blacklisted in the jail, in a stable order."""
    homes = [spec.host_home, *(h for h in spec.other_homes if h != spec.host_home)]
    out: list[str] = [str(home / p) for home in homes for p in SECRET_PATHS]
    out += list(SYSTEM_SECRETS)
    out.append(str(spec.state_dir))
    for p in (*profile.filesystem.hide, *spec.extra_hide):
        if p.startswith("~"):
            out += [str(Path(p.replace("~", str(home), 1))) for home in homes]
        else:
            out.append(p)
    seen: set[str] = set()
    unique = []
    workdir = spec.inside_workdir
    for p in out:
        # Never blacklist the workspace itself or a parent of it (firejail would hide it).
        if p in seen or workdir == p or workdir.startswith(p.rstrip("/") + "/"):
            continue
        seen.add(p)
        unique.append(p)
    return unique


def _tmp_flags(workdir: Path) -> list[str]:
    """A private /tmp; a workspace under /tmp is whitelisted into it (else it would vanish)."""
    if workdir == Path("/tmp") or Path("/tmp") in workdir.parents:
        return [f"--whitelist={workdir}"]
    return ["--private-tmp"]


def _root_flags(spec: JailSpec) -> list[str]:
    """The root filesystem: the host's, read-only but for the workspace; or an image's.

    In an image the root is the sandbox's private copy-on-write overlay, so it is
    writable where the image's own permissions let the agent write (what `docker run`
    users expect; the upper layer holds it, under the disk quota). `--restrict-namespaces`
    is not given there: firejail builds that filter with a helper it runs *inside* the
    new root, linked against the host's libc, which an image need not have. The kernel
    holds the line instead: no user namespace can be made from inside a chroot
    (create_user_ns: EPERM when chrooted), and every other namespace needs
    CAP_SYS_ADMIN, which is dropped (tests/images: test_no_namespaces_from_inside)."""
    if spec.image is None:
        return ["--restrict-namespaces",  # no unshare/nsenter from inside
                "--read-only=/",  # nothing writable but the workspace (and /tmp, /dev)
                f"--read-write={spec.workdir}"]
    return [f"--chroot={spec.image.target}", f"--private-cwd={spec.image.workdir}"]


def firejail_flags(profile: Profile, spec: JailSpec) -> list[str]:
    """The firejail options, without the program."""
    lim = profile.limits
    flags = [
        "--quiet",
        "--noprofile",  # no host-provided profile: everything is stated here
        # Which session's jail this is, for a crash's cleanup (`reap.kill_jail` checks it
        # before a SIGKILL): a no-op option (no profile line starts with it). Not
        # --name, which makes firejail scan every process's cmdline (see join_flag).
        f"--ignore={jail_name(spec.session_id)}",
        "--deterministic-shutdown",  # the whole tree dies with the first child (nohup too)
        "--deterministic-exit-code",  # exit with the program's status, not a late child's
        "--caps.drop=all",
        "--seccomp",
        "--nonewprivs",
        "--ipc-namespace",
        *_tmp_flags(Path(spec.inside_workdir)),
        "--disable-mnt",
        "--dbus-user=none",
        "--dbus-system=none",
        "--nosound",
        "--nodvd",
        "--notv",
        "--nou2f",
        "--hostname=sandbox",
        *_root_flags(spec),
    ]
    if spec.private_dev:
        flags.append("--private-dev")
    for path in (*profile.filesystem.writable, *spec.extra_writable):
        if spec.image is None:  # an image's root is the sandbox's own, writable already
            flags.append(f"--read-write={path}")
    if profile.network.mode == "none":
        flags.append("--net=none")
    # allowlist/guarded: no --net flag, the jail inherits the namespace the launch entered.
    if profile.gpu is None and not spec.gpu_args:
        flags.append("--no3d")
    flags += list(spec.gpu_args)
    flags += image_env_flags(spec)
    flags += [f"--blacklist={p}" for p in hidden_paths(profile, spec)]
    flags += [
        f"--rlimit-nproc={lim.processes}",
        f"--rlimit-nofile={lim.open_files}",
        f"--rlimit-fsize={lim.file_size_mib * 1024 * 1024}",
    ]
    if lim.address_space_mib:
        flags.append(f"--rlimit-as={lim.address_space_mib * 1024 * 1024}")
    return flags


def build_argv(profile: Profile, spec: JailSpec, program: list[str]) -> list[str]:
    """The full command line for one session: firejail + flags + `--` + program."""
    return [launch.tool("firejail"), *firejail_flags(profile, spec), "--", *program]


INCLUDE_DIR = Path("/run/sandbox/jail")


def hide_list_in_file(argv: list[str], session_id: str) -> tuple[list[str], Path | None]:
    """Move the `--blacklist=` flags into a root-owned include file (red-team L7).

    Inside the jail `/proc/1/cmdline` is firejail's argv, readable by the agent: inline,
    it lists every hidden path, the state dir's location included. The file sits in a
    0711 directory that the file itself hides. Root only (firejail reads it as the
    agent user, before the sandbox exists); paths with a newline stay inline, since a
    newline would start a new profile command.
    """
    if os.geteuid() != 0:
        return argv, None
    hidden = [a for a in argv if a.startswith("--blacklist=") and "\n" not in a]
    if not hidden:
        return argv, None
    INCLUDE_DIR.mkdir(parents=True, exist_ok=True, mode=0o711)
    os.chmod(INCLUDE_DIR.parent, 0o711)
    os.chmod(INCLUDE_DIR, 0o711)
    path = INCLUDE_DIR / f"{session_id}.inc"
    lines = [f"blacklist {a.removeprefix('--blacklist=')}" for a in hidden]
    lines.append(f"blacklist {INCLUDE_DIR.parent}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    drop = set(hidden)
    out = [a for a in argv if a not in drop]
    out.insert(out.index("--noprofile") + 1, f"--include={path}")
    return out, path


def rlimits(profile: Profile) -> list[tuple[int, int]]:
    """The [limits] rlimits, as firejail's --rlimit-* flags set them for the jail.
    A process that joins a running jail (`exec`) does not get those flags: the launch
    sets these instead, so no door into the jail escapes them."""
    import resource

    lim = profile.limits
    out = [(resource.RLIMIT_NPROC, lim.processes), (resource.RLIMIT_NOFILE, lim.open_files),
           (resource.RLIMIT_FSIZE, lim.file_size_mib << 20)]
    if lim.address_space_mib:
        out.append((resource.RLIMIT_AS, lim.address_space_mib << 20))
    return out


def launcher(spec: JailSpec, *, join_files: Sequence[bytes] = (),
             ctty_fd: int | None = None,
             limits: list[tuple[int, int]] | None = None) -> launch.Launch:
    """The child-side set-up for this spec: cgroup join, own session, netns, rlimits,
    drop."""
    return launch.Launch(
        agent_uid=spec.agent.uid if spec.agent else None,
        agent_gid=spec.agent.gid if spec.agent else None,
        netns=spec.netns, join_files=join_files, ctty_fd=ctty_fd, rlimits=limits or (),
        image=spec.image,
    )


# Keys that steer the dynamic loader or an interpreter's start-up. firejail is setuid, so
# the loader drops LD_* on its way in: they would be silently lost, so they are refused.
_LOADER_KEYS = re.compile(r"^(LD_\w*|GCONV_PATH|GETCONF_DIR|HOSTALIASES|LOCALDOMAIN|"
                          r"MALLOC_\w*|NLSPATH|RES_OPTIONS|TMPDIR|TZDIR)$")


def image_env_flags(spec: JailSpec) -> list[str]:
    """An image's loader variables, set by firejail inside the jail (after its setuid
    start, which would drop them from the environment it is given): the image's own
    programs expect them, and they reach only the jail's processes."""
    return [f"--env={k}={v}" for k, v in spec.image_env
            if _LOADER_KEYS.match(k) and "\n" not in v and "\0" not in v]


def check_env(env: dict[str, str]) -> None:
    """Refuse environment the jail cannot honour, with the fix."""
    for key in env:
        if not key or "=" in key or "\0" in key:
            raise SetupError(f"invalid environment variable name {key!r}")
        if _LOADER_KEYS.match(key):
            raise SetupError(
                f"environment variable {key} cannot be passed into the jail: firejail is "
                "setuid and the loader drops it. Set it inside the command instead "
                f"(e.g. `{key}=... prog`)")


# The store's location and credentials: never passed into a jail, whatever the profile's
# passthrough says (libpq reads the PG* ones).
STORE_SECRET_ENV = frozenset({"SANDBOX_STORE", "SANDBOX_DB", "PGPASSWORD", "PGPASSFILE",
                              "PGSERVICEFILE"})


def session_env(profile: Profile, spec: JailSpec, extra: dict[str, str],
                store_password: str | None) -> dict[str, str]:
    """A session's jail environment: the profile's allowlist from this process's
    environment (never the store's settings), the caller's `extra`, checked; refused if
    any value holds the store's password."""
    # Only what build_env reads of the host (USER, the passthrough names): copying all of
    # os.environ decoded every variable on every exec.
    wanted = ("USER", *profile.env.passthrough)
    host_env = {k: os.environ[k] for k in wanted
                if k in os.environ and k not in STORE_SECRET_ENV}
    env = build_env(profile, spec, host_env)
    env.update(extra)
    check_env(env)
    for key, value in env.items():
        if store_password and store_password in value:
            raise SetupError(f"environment variable {key} holds the event store's "
                             "password: it cannot be passed into the jail")
    return env


def build_env(profile: Profile, spec: JailSpec, host_env: dict[str, str]) -> dict[str, str]:
    """The jail's environment: cleared, then an allowlist (no host tokens leak in)."""
    home = str(spec.home or spec.inside_workdir)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "HOME": home,
        "USER": spec.agent.name if spec.agent else host_env.get("USER", "sandbox"),
        "SHELL": "/bin/bash",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "PAGER": "cat",  # pagers would wait for a keypress the agent never sends
        "GIT_PAGER": "cat",
        "SANDBOX": "1",
        "SANDBOX_SESSION": spec.session_id,
        "SANDBOX_WORKDIR": spec.inside_workdir,
    }
    # As `docker run`: the image's Env, then -e. Loader keys (CUDA images set
    # LD_LIBRARY_PATH) go in through firejail's --env instead (see `image_env_flags`).
    env.update({k: v for k, v in spec.image_env if not _LOADER_KEYS.match(k)})
    for name in profile.env.passthrough:
        if name in host_env:
            env[name] = host_env[name]
    env.update(dict(spec.gpu_env))
    env.update(profile.env.set)
    return env


def parse_version(text: str) -> tuple[int, ...]:
    match = re.search(r"firejail version (\d+)\.(\d+)\.(\d+)", text)
    if not match:
        return ()
    return tuple(int(g) for g in match.groups())


@functools.cache
def check_firejail() -> tuple[int, ...]:
    """The installed firejail's version; DependencyMissing with the fix when unusable.

    Cached per process: the binary does not change under a running supervisor, and
    asking costs a fork+exec (~4 ms) per session start.
    """
    exe = launch.tool("firejail")
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=10, check=False,
            env=launch.supervisor_env(),
        ).stdout
    except OSError as e:
        raise DependencyMissing(f"firejail cannot run: {e}; reinstall: apt-get install firejail") \
            from e
    version = parse_version(out)
    if not version or version < MIN_FIREJAIL:
        want = ".".join(map(str, MIN_FIREJAIL))
        raise DependencyMissing(
            f"firejail {'.'.join(map(str, version)) or '?'} is too old; need >= {want}: "
            "apt-get install -t bookworm firejail (Debian 12 ships 0.9.72)"
        )
    return version


def program_started(jail_pid: int) -> bool:
    """Whether firejail has set the jail up and started its program: a process below it
    that is not firejail, in a mount namespace of its own (what `--join` needs)."""
    from ..monitor.proctree import named_descendants

    try:
        mine = os.readlink("/proc/self/ns/mnt")
        return any(name not in ("firejail", "") and os.readlink(f"/proc/{pid}/ns/mnt") != mine
                   for pid, name in named_descendants(jail_pid))
    except OSError:
        return False


def exec_var_tmp(jail_pid: int) -> None:
    """Remount the jail's private /var/tmp executable (firejail mounts it noexec).

    Done from outside, as root, in the jail's own mount namespace and root (those of its
    first program), running none of the jail's files (`remount`): the agent has no
    capability to do it itself. Refuses to touch a process that shares the supervisor's
    mount namespace (that /var/tmp would be the host's)."""
    from ..monitor.proctree import named_descendants

    if not os.path.exists(f"/proc/{jail_pid}"):
        raise SetupError(f"exec_var_tmp: the jail ({jail_pid}) is gone")
    program = next((pid for pid, name in named_descendants(jail_pid)
                    if name not in ("firejail", "")), None)
    try:
        same = program is None or (os.readlink(f"/proc/{program}/ns/mnt")
                                   == os.readlink("/proc/self/ns/mnt"))
    except OSError:
        same = True
    if same or program is None:
        raise SetupError("exec_var_tmp: no program in the jail's own mount namespace yet; "
                         "set [filesystem] exec_var_tmp = false or report this")
    from .remount import make_exec

    make_exec(program, "/var/tmp")
