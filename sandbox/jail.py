"""Profile -> firejail command line. Pure: tested by comparing lists.

The argv has three parts:
1. an optional prefix that a root supervisor needs: `ip netns exec NS` (allowlist mode:
   the jail inherits a namespace we built, firejail is not asked for `--netns`, which
   Debian's `restricted-network yes` refuses to non-root users) and `setpriv` to drop to
   the unprivileged agent user (a root shell with every capability dropped still reads
   /etc/shadow, so the agent never runs as uid 0);
2. firejail and its flags;
3. `--` and the program.

Firejail is run, never reimplemented; its version is checked by `check_firejail`.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DependencyMissing
from .profile import Profile

MIN_FIREJAIL = (0, 9, 64)  # --deterministic-shutdown, --restrict-namespaces

# Host secrets hidden in every jail, relative to the host HOME. The profile adds more.
SECRET_PATHS = (
    ".ssh", ".aws", ".config/gcloud", ".kube", ".docker", ".netrc", ".gnupg",
    ".azure", ".config/gh", ".git-credentials", ".pypirc", ".npmrc", ".vault-token",
    ".password-store", ".bash_history", ".python_history",
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
    gpu_args: tuple[str, ...] = ()
    gpu_env: tuple[tuple[str, str], ...] = (("CUDA_VISIBLE_DEVICES", ""),)
    private_dev: bool = True
    extra_writable: tuple[str, ...] = field(default_factory=tuple)


def jail_name(session_id: str) -> str:
    """The firejail `--name`, so `firejail --list` and `--shutdown` find the session."""
    return JAIL_PREFIX + session_id


def hidden_paths(profile: Profile, spec: JailSpec) -> list[str]:
    """Absolute paths blacklisted in the jail, in a stable order."""
    out: list[str] = [str(spec.host_home / p) for p in SECRET_PATHS]
    out += list(SYSTEM_SECRETS)
    out.append(str(spec.state_dir))
    for p in (*profile.filesystem.hide, *spec.extra_hide):
        out.append(str(Path(p.replace("~", str(spec.host_home), 1)) if p.startswith("~") else p))
    seen: set[str] = set()
    unique = []
    workdir = str(spec.workdir)
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


def firejail_flags(profile: Profile, spec: JailSpec) -> list[str]:
    """The firejail options, without the program."""
    lim = profile.limits
    flags = [
        "--quiet",
        "--noprofile",  # no host-provided profile: everything is stated here
        f"--name={jail_name(spec.session_id)}",
        "--deterministic-shutdown",  # the whole tree dies with the first child (nohup too)
        "--deterministic-exit-code",  # exit with the program's status, not a late child's
        "--caps.drop=all",
        "--seccomp",
        "--nonewprivs",
        "--restrict-namespaces",  # no unshare/nsenter from inside
        "--ipc-namespace",
        *_tmp_flags(spec.workdir),
        "--disable-mnt",
        "--dbus-user=none",
        "--dbus-system=none",
        "--nosound",
        "--nodvd",
        "--notv",
        "--nou2f",
        "--hostname=sandbox",
        "--read-only=/",  # nothing writable but the workspace (and private /tmp, /dev)
        f"--read-write={spec.workdir}",
    ]
    if spec.private_dev:
        flags.append("--private-dev")
    for path in (*profile.filesystem.writable, *spec.extra_writable):
        flags.append(f"--read-write={path}")
    if profile.network.mode == "none":
        flags.append("--net=none")
    # allowlist: no --net flag, the jail inherits the namespace `ip netns exec` entered.
    if profile.gpu is None and not spec.gpu_args:
        flags.append("--no3d")
    flags += list(spec.gpu_args)
    flags += [f"--blacklist={p}" for p in hidden_paths(profile, spec)]
    flags += [
        f"--rlimit-nproc={lim.processes}",
        f"--rlimit-nofile={lim.open_files}",
        f"--rlimit-fsize={lim.file_size_mib * 1024 * 1024}",
    ]
    if lim.address_space_mib:
        flags.append(f"--rlimit-as={lim.address_space_mib * 1024 * 1024}")
    return flags


def prefix(spec: JailSpec) -> list[str]:
    """What runs before firejail: enter the netns, then drop to the agent user."""
    out: list[str] = []
    if spec.netns:
        out += ["ip", "netns", "exec", spec.netns]
    if spec.agent is not None:
        out += [
            "setpriv", f"--reuid={spec.agent.uid}", f"--regid={spec.agent.gid}",
            "--clear-groups", "--",
        ]
    return out


def build_argv(profile: Profile, spec: JailSpec, program: list[str]) -> list[str]:
    """The full command line for one session: prefix + firejail + `--` + program."""
    return [*prefix(spec), "firejail", *firejail_flags(profile, spec), "--", *program]


def build_env(profile: Profile, spec: JailSpec, host_env: dict[str, str]) -> dict[str, str]:
    """The jail's environment: cleared, then an allowlist (no host tokens leak in)."""
    home = str(spec.home or spec.workdir)
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
        "SANDBOX_WORKDIR": str(spec.workdir),
    }
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
    exe = shutil.which("firejail")
    if exe is None:
        raise DependencyMissing(
            "firejail not found: apt-get install firejail (or run `sandbox doctor`)"
        )
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
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
