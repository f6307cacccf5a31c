"""The manifest and the workspace archive of the OpenAI Agents backend
(`openai_session`): what a manifest may ask of a jail, and `persist_workspace` /
`hydrate_workspace` as the SDK's `UnixLocalSandboxSession` archives a workspace (its skip
paths, its tar validation), on the jail's `export_tar` / `import_tar`.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import tarfile
from pathlib import Path

from agents.sandbox.errors import WorkspaceArchiveReadError, WorkspaceArchiveWriteError
from agents.sandbox.manifest import Manifest
from agents.sandbox.util.tar_utils import (
    UnsafeTarMemberError,
    should_skip_tar_member,
    validate_tarfile,
)

from ..doors.aio import AsyncSandbox
from ..errors import SessionClosed


def refuse_unsupported(manifest: Manifest) -> None:
    """ValueError for what the jail cannot give: manifest users and groups (no root to
    create them) and host_path grants (the jail sees only its own filesystem view)."""
    if manifest.users or manifest.groups:
        raise ValueError(
            "FirejailSandboxSession does not support manifest users or groups: the jail has "
            "no root to create them; every command runs as the jail's one agent user")
    grant = next((g for g in manifest.extra_path_grants if g.host_path is not None), None)
    if grant is not None:
        raise ValueError(
            f"FirejailSandboxClient does not support sandbox path grant host_path for "
            f"{grant.path!r}: the jail sees only its own filesystem view")


async def persist(sandbox: AsyncSandbox, root: str, skip: set[Path]) -> io.IOBase:
    """The workspace at `root` as the SDK's archive (see `filter_workspace_tar`)."""
    try:
        data = await sandbox.export_tar(root)
    except (OSError, SessionClosed) as e:
        raise WorkspaceArchiveReadError(path=Path(root), cause=e) from e
    try:
        return io.BytesIO(await asyncio.to_thread(filter_workspace_tar, data, root, skip))
    except (tarfile.TarError, OSError) as e:
        raise WorkspaceArchiveReadError(path=Path(root), cause=e) from e


async def hydrate(sandbox: AsyncSandbox, root: Path, data: io.IOBase) -> None:
    """Unpack the SDK's archive into the workspace at `root`, after the SDK's own check
    (no member outside it, no link pointing out)."""
    raw = data.read()
    payload = raw.encode() if isinstance(raw, str) else bytes(raw)

    def validate() -> None:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:
            validate_tarfile(tar, allow_external_symlink_targets=False)

    try:
        await asyncio.to_thread(validate)
    except UnsafeTarMemberError as e:
        raise WorkspaceArchiveWriteError(
            path=root, context={"reason": e.reason, "member": e.member}, cause=e) from e
    except (tarfile.TarError, OSError) as e:
        raise WorkspaceArchiveWriteError(path=root, cause=e) from e
    try:
        await sandbox.import_tar(payload, str(root))
    except (OSError, SessionClosed) as e:
        raise WorkspaceArchiveWriteError(path=root, cause=e) from e


def filter_workspace_tar(data: bytes, root: str, skip: set[Path]) -> bytes:
    """The jail's tar of the workspace, as UnixLocal archives it: workspace-relative
    names, the SDK's skip paths out, no devices or fifos, and absolute symlinks that
    point inside the workspace made relative (others are kept: hydrate refuses them)."""
    out = io.BytesIO()
    root = root.rstrip("/")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as src, \
            tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            if should_skip_tar_member(member.name, skip_rel_paths=skip, root_name=None):
                continue
            if member.isfifo() or member.ischr() or member.isblk():
                continue
            if member.issym() and (member.linkname == root
                                   or member.linkname.startswith(root + "/")):
                link_dir = posixpath.dirname(posixpath.join(root, posixpath.normpath(
                    member.name)))
                member.linkname = posixpath.relpath(member.linkname, link_dir)
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return out.getvalue()
