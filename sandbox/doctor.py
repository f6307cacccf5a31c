"""`sandbox doctor`: check every dependency and say the fix for each missing one."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import SandboxError
from .jail import firejail, launch
from .record import Store


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _which(program: str, package: str, why: str, required: bool = True) -> Check:
    path = shutil.which(program, path=launch.TRUSTED_PATH)
    return Check(program, path is not None, path or f"not found ({why})",
                 "" if path else f"apt-get install {package}", required)


def _firejail() -> list[Check]:
    try:
        version = firejail.check_firejail()
    except SandboxError as e:
        return [Check("firejail", False, str(e), "apt-get install firejail")]
    out = [Check("firejail", True, "version " + ".".join(map(str, version)))]
    proc = subprocess.run(
        [launch.tool("firejail"), "--quiet", "--noprofile", "--net=none", "--", "true"],
        capture_output=True, text=True, timeout=30, check=False, env=launch.supervisor_env(),
    )
    out.append(Check(
        "firejail runs", proc.returncode == 0,
        "a --net=none jail ran `true`" if proc.returncode == 0 else proc.stderr.strip()[-300:],
        "" if proc.returncode == 0 else "check /etc/firejail/firejail.config and kernel "
        "namespaces (unprivileged_userns_clone, user.max_user_namespaces)",
    ))
    return out


def _kernel() -> list[Check]:
    status = Path("/proc/self/status").read_text()
    seccomp = "Seccomp:" in status
    ns = all(Path(f"/proc/self/ns/{n}").exists() for n in ("net", "pid", "mnt", "ipc", "uts"))
    return [
        Check("seccomp", seccomp, "kernel supports seccomp" if seccomp else "missing",
              "" if seccomp else "use a kernel built with CONFIG_SECCOMP_FILTER"),
        Check("namespaces", ns, "net, pid, mnt, ipc, uts" if ns else "missing",
              "" if ns else "use a kernel with namespaces enabled"),
    ]


def _state() -> Check:
    try:
        store = Store(paths.db_path())  # the local file (a fleet store's loss record too)
        store.close()
        return Check("state dir", True, str(paths.db_path()))
    except SandboxError as e:
        return Check("state dir", False, str(e), "set SANDBOX_STATE_DIR to a writable dir")


def _store() -> list[Check]:
    """The event store this command would use: reachable, its schema, and (a fleet's
    PostgreSQL store) which hosts beat and which are lost with sessions still live."""
    from .reap import host_timeout
    from .record.schema import SCHEMA_VERSION

    try:
        store = Store()
    except SandboxError as e:
        return [Check("store", False, str(e), "check --store / SANDBOX_STORE, the server, "
                      "and `pip install 'ringfence[postgres]'` for a postgresql:// store")]
    try:
        rows = store._query("SELECT value FROM meta WHERE key='schema_version'")
        version = rows[0]["value"] if rows else "?"
        kind = "postgresql" if store.shared else "sqlite"
        out = [Check("store", True, f"{kind} {store.key}, schema {version} "
                     f"(this sandbox: {SCHEMA_VERSION}), host id {store.host}")]
        if store.shared:
            timeout = host_timeout()
            status = store.host_status()
            lost = [h for h in status if h["live"] and h["age"] >= max(timeout, 3 * h["beat"])]
            beating = [h["host"] for h in status if h["age"] < max(timeout, 3 * h["beat"])]
            detail = (f"{len(beating)} host(s) beating within {timeout:g}s"
                      + (f": {', '.join(beating[:8])}" if beating else ""))
            if lost:
                names = ", ".join(f"{h['host']} ({h['live']} live, silent "
                                  f"{h['age']:.0f}s)" for h in lost[:8])
                out.append(Check("fleet", False, f"{detail}; lost with live sessions: "
                                 f"{names}", "`sandbox gc` marks their sessions failed",
                                 required=False))
            else:
                out.append(Check("fleet", True, detail, required=False))
        return out
    except SandboxError as e:
        return [Check("store", False, str(e), "check the store's server and permissions")]
    finally:
        store.close()


def _cgroups() -> Check:
    v1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists() or Path(
        "/sys/fs/cgroup/unified/cgroup.controllers").exists()
    kinds = [k for k, ok in (("v1", v1), ("v2", v2)) if ok]
    return Check("cgroups", bool(kinds), " + ".join(kinds) or "none mounted",
                 "" if kinds else "mount cgroup2 at /sys/fs/cgroup", required=False)


def _compiled() -> list[Check]:
    """The compiled exec helper (fast exec) and jail launcher (vfork spawns): without a
    compiler both fall back to their Python versions (slower, the same wall)."""
    from .jail import spawn
    from .jail.fastexec import build

    fix = "apt-get install gcc libc6-dev, then scripts/bootstrap.sh (or python -m " \
          "sandbox.jail.fastexec)"
    helper, why = build.binary()
    out = [Check("exec helper", helper is not None,
                 "compiled (sandbox-exec)" if helper is not None
                 else f"Python helper: {why}", "" if helper is not None else fix,
                 required=False)]
    tool = spawn.launcher()
    out.append(Check("jail launcher", tool is not None,
                     f"compiled: {tool}" if tool else "Python launch steps (each spawn forks "
                     "the supervisor): not built, or not in a root-owned path",
                     "" if tool else fix, required=False))
    return out


def _gpu() -> Check:
    try:
        from .gpu import get_backend

        backend = get_backend()
        devices = backend.devices()
        names = ", ".join(f"{d.index}:{d.name} ({d.memory_total >> 20} MiB)" for d in devices)
        return Check("nvml", True, names or "NVML works, no GPUs", required=False)
    except Exception as e:
        return Check("nvml", False, f"no GPU use possible: {e}",
                     "install the NVIDIA driver (needed only for profiles with [gpu])",
                     required=False)


def _tiocsti() -> Check:
    """C1: a jail that could TIOCSTI into a terminal types commands into it. The jail's
    own seccomp filter refuses it either way; the sysctl is defence in depth."""
    knob = Path("/proc/sys/dev/tty/legacy_tiocsti")
    try:
        value = knob.read_text().strip()
    except OSError:
        return Check("tiocsti", False, "kernel < 6.2: TIOCSTI is always allowed on this host "
                     "(each jail's seccomp filter refuses it)", "", required=False)
    if value == "0":
        return Check("tiocsti", True, "dev.tty.legacy_tiocsti = 0")
    return Check("tiocsti", False, "dev.tty.legacy_tiocsti = 1: programs may type into "
                 "their terminal (each jail's seccomp filter refuses it)",
                 "sysctl -w dev.tty.legacy_tiocsti=0 (and persist it in /etc/sysctl.d/)",
                 required=False)


def _shared_disk() -> Check:
    """M5: an agent filling its workspace must not fill the disk the store writes to."""
    from .jail.users import WORK_ROOT

    state = paths.db_path().parent
    work = WORK_ROOT if WORK_ROOT.exists() else WORK_ROOT.parent
    try:
        same = os.stat(state).st_dev == os.stat(work).st_dev
    except OSError as e:
        return Check("disk", False, f"cannot compare filesystems: {e}", "", required=False)
    if not same:
        return Check("disk", True, f"{work} and {state} are on different filesystems")
    return Check("disk", False, f"{work} (workspaces) and {state} (the store) share a "
                 "filesystem: a workspace without a quota could fill the store's disk",
                 "keep `disk_mib` set in your profiles (fresh workspaces get a size-limited "
                 "mount), or put /srv/sandbox on its own filesystem", required=False)


def _images() -> list[Check]:
    """What `--image` needs: the toolchain, a static shell, and firejail's chroot."""
    from .jail.images.attach import FIREJAIL_CONFIG, chroot_enabled
    from .jail.images.rootfs import BASH_STATIC

    why = "images (--image)"
    on = chroot_enabled()
    return [
        _which("skopeo", "skopeo", why, False), _which("umoci", "umoci", why, False),
        Check("bash-static", BASH_STATIC.is_file(), str(BASH_STATIC) if BASH_STATIC.is_file()
              else "missing: images without the agent's shell cannot start",
              "" if BASH_STATIC.is_file() else "apt-get install bash-static", False),
        Check("chroot", on, f"`chroot yes` in {FIREJAIL_CONFIG}" if on else
              f"firejail's chroot is off in {FIREJAIL_CONFIG}: --image cannot start",
              "" if on else "scripts/bootstrap.sh (sets `chroot yes` and says so), or set "
              f"`chroot yes` in {FIREJAIL_CONFIG}", False),
    ]


def run_checks() -> list[Check]:
    checks = [*_firejail(), *_kernel(), _state(), *_store(), _cgroups(), _tiocsti(),
              _shared_disk()]
    root = os.geteuid() == 0
    checks.append(_which("setfacl", "acl", "opens the workspace to the agent user", root))
    checks.append(_which("ip", "iproute2", "allowlist/guarded networking", False))
    checks.append(_which("nft", "nftables", "allowlist/guarded networking", False))
    checks.append(Check(
        "root", root, "running as root: allowlist/guarded networking and cgroups available"
        if root else "not root: `none` network mode only (allowlist and guarded need root)",
        required=False))
    checks.append(_gpu())
    checks += _compiled()
    checks += _images()
    return checks
