"""Ending a session from outside its owner: its jail killed, its host resources removed,
its row closed.

The kill path (`control.kill_session`, when the owner does not answer) and the garbage
collector (`gc.collect`, when the owner died) both end a session this way, so it sits
below both of them. A session's owner records every host resource it makes in the
store before using it; each kind has a cleaner here (`register_cleaner`), and `reap`
runs the ones a session's record names.

`host_timeout()` is when a host counts as lost: the kill watcher beats well within it
(`control.beat_interval`), and gc marks the sessions of a host that did not
(`gc.mark_lost_hosts`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .record import Store

log = logging.getLogger("sandbox")
HOST_TIMEOUT_S = 30.0  # default SANDBOX_HOST_TIMEOUT: no heartbeat this long = host lost


def host_timeout() -> float:
    """Seconds without a heartbeat after which a host is lost (`SANDBOX_HOST_TIMEOUT`)."""
    try:
        value = float(os.environ.get("SANDBOX_HOST_TIMEOUT") or HOST_TIMEOUT_S)
    except ValueError:
        value = HOST_TIMEOUT_S
    return max(0.5, value)


def kill_jail(jail_pid: int | None, jail_name: str | None) -> bool:
    """SIGKILL firejail's first process: its PID namespace, and every process in it, dies."""
    if not jail_pid:
        return False
    try:
        with open(f"/proc/{jail_pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    # Only kill what is really that jail: the pid may have been reused. `--ignore=` marks
    # it since 2026-12-08; `--name=` a jail an older sandbox started.
    args = cmdline.split(b"\0")
    if jail_name and not {f"--ignore={jail_name}".encode(),
                          f"--name={jail_name}".encode()} & set(args):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(jail_pid, signal.SIGKILL)
        return True
    return False


# name -> cleanup(resources) for each kind of host resource; parts register here.
CLEANERS: dict[str, Callable[[Any], None]] = {}


def register_cleaner(name: str, fn: Callable[[Any], None]) -> None:
    CLEANERS[name] = fn


def _remove_workspace(path: str) -> None:
    # Only fresh workspaces are recorded as resources; never anything the user passed.
    if path.startswith("/srv/sandbox/work/"):
        from .jail.users import unmount_quota

        unmount_quota(Path(path))
        shutil.rmtree(path, ignore_errors=True)


def _remove_home(path: str) -> None:
    if "/sandbox/homes/" in path:
        shutil.rmtree(path, ignore_errors=True)


def _remove_include(path: str) -> None:
    if path.startswith("/run/sandbox/jail/"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


register_cleaner("workspace", _remove_workspace)
register_cleaner("include", _remove_include)
register_cleaner("home", _remove_home)


def _load_cleaners() -> None:
    # Imported here: gc runs in processes (`sandbox kill`, `sandbox gc`) that never
    # started a session, so the parts' own registrations have not happened there.
    from .jail import cgroups

    CLEANERS.setdefault("cgroup", cgroups.cleanup)
    from .jail.images import rootfs

    CLEANERS.setdefault("image_root", rootfs.cleanup)
    try:
        from . import network
    except ImportError:  # pragma: no cover - network part not built
        return
    cleanup = getattr(network, "cleanup", None)
    if cleanup is not None:
        CLEANERS.setdefault("network", cleanup)


def cleanup_resources(resources: dict[str, Any]) -> list[str]:
    """Run every registered cleaner on a session's resource record; returns errors."""
    _load_cleaners()
    errors = []
    for name, fn in CLEANERS.items():
        if name in resources:
            try:
                fn(resources[name])
            except Exception as e:  # keep going: one stuck part must not block the rest
                errors.append(f"{name}: {e}")
    return errors


def reap(store: Store, session: Mapping[str, Any], *, state: str, reason: str) -> None:
    """End a session's jail and host resources from outside its owner."""
    kill_jail(session.get("jail_pid"), session.get("jail_name"))
    errors = cleanup_resources(session.get("resources") or {})
    if store.finish_session(session["id"], state, reason):
        try:
            store.add_event(
                session["id"], "session.end",
                {"state": state, "reason": reason, "cleanup_errors": errors},
                severity="warning" if state == "failed" else "info",
            )
        except Exception as e:
            log.warning("sandbox gc: %s: recording its end failed: %s", session["id"], e)
    store.mark_controls_handled(session["id"])
