"""Where a session works: its workspace placed (the agent user, a fresh directory or the
caller's, the disk quota on a fresh one) and the `JailSpec` that describes it to the
jail. Pure of the session: it is handed what it needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SetupError
from . import firejail, users


def place(requested: Path | None, session_id: str, kind: str, disk_mib: int,
          add_resource: Callable[[str, Any], None]) -> users.Placement:
    """The agent user and workspace; a fresh one is recorded as a resource (so a crash
    leaves gc its path) before its quota is mounted."""
    flag = "--workdir" if kind in ("run", "shell") else "workdir="  # the door's word
    if requested is not None and not requested.is_dir():
        raise SetupError(
            f"workspace {requested} is not a directory: create it first "
            f"(mkdir -p {requested}), or leave out {flag}")
    placement = users.place(requested, session_id, flag)
    if placement.fresh:
        add_resource("workspace", str(placement.workdir))
        if disk_mib and placement.agent is not None:
            users.mount_quota(placement.workdir, placement.agent, disk_mib)
    return placement


def spec(session_id: str, placement: users.Placement, state_dir: Path) -> firejail.JailSpec:
    """The jail's description of this workspace: who runs in it, what stays hidden.
    `state_dir` is the store's own directory (SANDBOX_DB may put it outside the default
    state dir): that is what must stay hidden."""
    agent = placement.agent
    workdir = placement.workdir
    return firejail.JailSpec(
        session_id=session_id, workdir=workdir, state_dir=state_dir,
        host_home=Path(os.environ.get("HOME") or Path.home()), agent=agent,
        other_homes=tuple(users.homes_of(
            agent.uid if agent else None, _sudo_uid(), workdir.stat().st_uid)),
        # The image store, where $SANDBOX_IMAGE_DIR puts it outside the state dir:
        # other tasks' images are not this agent's to read.
        extra_hide=(os.environ["SANDBOX_IMAGE_DIR"],)
        if os.environ.get("SANDBOX_IMAGE_DIR") else (),
    )


def _sudo_uid() -> int | None:
    uid = os.environ.get("SUDO_UID", "")
    return int(uid) if uid.isdigit() else None
