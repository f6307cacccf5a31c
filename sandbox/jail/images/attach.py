"""Put a starting session's jail in an image: the one place the session asks for one.

Fail closed: an image the profile names but this host cannot run (no root, firejail's
chroot switched off, no bash where a shell is wanted) stops the start with the fix.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import DependencyMissing, SetupError
from .. import launch
from ..firejail import JailSpec, program_started
from ..profile import Profile
from . import config, rootfs
from .store import Image, ImageStore

FIREJAIL_CONFIG = Path("/etc/firejail/firejail.config")


def chroot_enabled(path: Path = FIREJAIL_CONFIG) -> bool:
    """Whether firejail's configuration allows `--chroot` (Debian ships `# chroot no`)."""
    try:
        text = path.read_text()
    except OSError:
        return False
    lines = [ln.strip() for ln in text.splitlines()]
    return any(re.fullmatch(r"chroot\s+yes", ln) for ln in lines)


def check_host() -> None:
    if os.geteuid() != 0:
        raise SetupError("images need a root supervisor (the overlay and the workspace are "
                         "mounted as root, then the agent runs unprivileged): sudo sandbox ...")
    if not chroot_enabled():
        raise DependencyMissing(
            f"firejail's chroot is switched off in {FIREJAIL_CONFIG}, and a sandbox in an "
            "image needs it. Fix: scripts/bootstrap.sh --images (sets `chroot yes` and says "
            f"so), or set `chroot yes` in {FIREJAIL_CONFIG} yourself")


@dataclasses.dataclass
class Attached:
    """A session's image root while it lives."""

    image: Image
    root: rootfs.ImageRoot
    hold_fd: int
    # exec's `cwd=` goes through `env -C` where the image has it (a missing directory is
    # then the same exit 125 as on the host), else through firejail's --private-cwd.
    has_env: bool = False
    has_bash: bool = True  # else the API's jail is held by `holder` and only exec works
    shell: str = "/bin/sh"  # the agent's login shell, present inside (see rootfs.prepare)
    workspace_at: str = ""  # where the workspace is bound, as found in the image
    exec_helper: str = ""  # the compiled exec helper, bound in read-only (fast exec)

    def holder(self) -> list[str]:
        """The program that keeps a bash-less image's jail alive for exec: the login
        shell blocked on a read of a pipe the session holds (no process of the image's)."""
        return [self.shell, "-c", "read -r _"]

    def release(self, workspace: Path) -> None:
        """Remove the upper and mount point; a kept one first takes in the workspace, so
        `image commit` has the agent's work at the working directory too."""
        try:
            if self.root.keep:
                rootfs.keep_workspace(self.root, workspace, self.workspace_at)
        finally:
            rootfs.cleanup(self.root.resource())
            os.close(self.hold_fd)


def attach(ref: str, *, profile: Profile, spec: JailSpec, state_dir: Path, fresh: bool,
           kind: str, keep: bool, add_resource: Callable[[str, Any], None],
           gpu_files: tuple[str, ...] = (), exec_helper: bool = False
           ) -> tuple[JailSpec, Attached]:
    """The spec with its image root, made and recorded (as `image_root`) for this session;
    `gpu_files`: the host driver's, bound in read-only (the image brings no driver);
    `exec_helper`: the compiled exec helper too (static: it needs nothing of the image's)."""
    helper = _helper_file() if exec_helper else ""
    files_ro = gpu_files + ((helper,) if helper else ())
    check_host()
    store = ImageStore()
    image = store.resolve(ref)
    has_bash = rootfs.has_program(image.rootfs, "bash")
    if kind == "shell" and not has_bash:
        raise SetupError(no_bash(image.name))
    workdir = config.jail_workdir(image.config, profile.image.workdir)
    hold = store.hold(image)  # before anything relies on it: `image rm` now refuses
    try:
        netns_dir = launch.ETC_NETNS / spec.netns if spec.netns else None
        netns_files = ([(str(p), p.name) for p in sorted(netns_dir.iterdir())]
                       if netns_dir is not None and netns_dir.is_dir() else [])
        agent = (spec.agent.uid, spec.agent.gid, spec.agent.name) if spec.agent else None
        base = state_dir / "uppers" / spec.session_id
        add_resource("image_root", {"base": str(base), "keep": keep,
                                    "mountpoint": str(rootfs.MOUNT_BASE / spec.session_id)})
        shell = pwd.getpwuid(spec.agent.uid).pw_shell if spec.agent else None
        root, binds, injected = rootfs.prepare(
            image, session_id=spec.session_id, state_dir=state_dir, workdir=workdir,
            disk_mib=profile.limits.disk_mib, agent=agent, netns_files=netns_files,
            workspace=spec.workdir, login_shell=shell or "/bin/sh", keep=keep,
            dirs=(spec.home,) if spec.home is not None else (), files_ro=files_ro)
        add_resource("image_root", {**root.resource(), "injected": injected})
        if fresh and profile.image.seed:
            rootfs.seed_workspace(root, spec.workdir, agent[:2] if agent else None)
    except BaseException:
        os.close(hold)
        raise
    mount = launch.ImageMount(
        lower=str(image.rootfs), upper=str(root.upper), work=str(root.work),
        target=str(root.mountpoint), workdir=workdir, binds=tuple(binds),
        readonly=tuple(dst for src, dst in binds if src in files_ro))
    spec = dataclasses.replace(spec, image=mount, image_env=image.config.env)
    has_env = rootfs.lower_kind(image.rootfs, rootfs.inside(image.rootfs, "usr/bin/env")) \
        == "file"
    return spec, Attached(image=image, root=root, hold_fd=hold, has_env=has_env,
                          has_bash=has_bash, shell=shell or "/bin/sh",
                          workspace_at=binds[0][1],
                          exec_helper=next((d for s, d in binds if helper and s == helper), ""))


def _helper_file() -> str:
    """The compiled exec helper's host path, "" where it cannot be built (the exec part
    records why: `build.binary`)."""
    from ..fastexec import build

    try:
        return str(build.build())
    except (build.BuildError, OSError):
        return ""


def no_bash(name: str) -> str:
    return (f"image {name} has no bash, which `run()` and `sandbox shell` use for the "
            f"recorded shell. exec() and `sandbox run --image {name} -- PROGRAM` work "
            "without it; or use an image with bash")


def wait_joinable(holder: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until a bash-less image's holder runs its program (then exec can join its jail);
    SetupError with firejail's words if it ends or stalls first."""
    deadline = time.monotonic() + timeout
    while not program_started(holder.pid):
        if holder.poll() is not None or time.monotonic() > deadline:
            err = holder.stderr.read() if holder.stderr else b""
            raise SetupError("the image's jail did not start: "
                             + (err.decode(errors="replace").strip() or "timed out"))
        time.sleep(0.005)
