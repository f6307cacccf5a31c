"""What both API doors share: per-sandbox settings over a profile, and lookup by id."""

from __future__ import annotations

import os
import weakref
from typing import Any

from .profile import Profile, load, override
from .session import Session
from .store import Store

# `network=`: a mode name, an allowlist, or a [network] table.
Network = str | list[str] | dict[str, Any] | None


def settings(profile: Profile | str, *, network: Network = None,
             gpu: int | dict[str, Any] | None = None,
             limits: dict[str, Any] | None = None) -> Profile:
    """The profile with this sandbox's own network policy, GPU grant and limits, checked
    like a profile file (a bad value raises ProfileError naming it)."""
    base = load(profile) if isinstance(profile, str) else profile
    changes: dict[str, Any] = {}
    if isinstance(network, str):
        changes["network"] = {"mode": network}
    elif isinstance(network, list):
        changes["network"] = {"mode": "allowlist", "allow": network}
    elif network is not None:
        changes["network"] = network
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        changes["gpu"] = {"count": gpu}
    elif gpu is not None:
        changes["gpu"] = gpu
    if limits is not None:
        changes["limits"] = limits
    return override(base, changes, "Sandbox(...)") if changes else base


def new_session(profile: Profile | str, workdir: str | os.PathLike[str] | None,
                env: dict[str, str] | None, store: Store | None, gpu_backend: Any,
                **kw: Any) -> Session:
    session = Session(settings(profile, **kw), workdir=workdir, env=env, kind="api",
                      store=store)
    session.gpu_backend = gpu_backend
    return session


class Registry:
    """Live handles of this process by session id (weak: a dropped handle is gone)."""

    def __init__(self) -> None:
        self._by_id: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def add(self, sid: str, handle: Any) -> None:
        self._by_id[sid] = handle

    def get(self, sid: str) -> Any:
        from .errors import NotFound

        handle = self._by_id.get(sid)
        if handle is None:
            raise NotFound(f"no live sandbox {sid!r} in this process (`sandbox ls` lists "
                           "every session; `sandbox kill ID` ends one from anywhere)")
        return handle


def alive(session: Session) -> bool:
    if session.state != "running" or session.jail_pid is None:
        return False
    try:
        os.kill(session.jail_pid, 0)
    except ProcessLookupError:
        return False
    return True
