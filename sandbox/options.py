"""What both API doors share: per-sandbox settings over a profile, the handle's
constructor and read-only surface, and lookup by id."""

from __future__ import annotations

import os
import weakref
from typing import Any, TypeVar

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
                image: str | None = None, keep: bool = False, **kw: Any) -> Session:
    session = Session(settings(profile, **kw), workdir=workdir, env=env, kind="api",
                      store=store, image=image, keep=keep)
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


H = TypeVar("H", bound="Handle")


class Handle:
    """The part of `Sandbox` and `AsyncSandbox` that does not wait on anything.

    `network`: "none", "guarded", a list of allowed `host:port` patterns
    ("*.pypi.org:443"), or a [network] table; `gpu`: a count or a [gpu] table; `limits`: a
    [limits] table. Each is checked like a profile file and replaces that part of the
    profile for this sandbox only. `gpu_backend` replaces NVML (e.g.
    `sandbox.gpu.FakeNvml` in your own tests). `image`: a stored image's name or digest
    (`sandbox image ls`) as the root filesystem, instead of the host's; `keep` leaves its
    upper layer behind for `sandbox image commit`."""

    _registry: Registry  # one per door: a Sandbox id never looks up an AsyncSandbox

    def __init_subclass__(cls) -> None:
        cls._registry = Registry()

    def __init__(
        self,
        profile: Profile | str = "default",
        workdir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        *,
        network: Network = None,
        gpu: int | dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        store: Store | None = None,
        gpu_backend: Any = None,
        image: str | None = None,
        keep: bool = False,
    ) -> None:
        self._session = new_session(profile, workdir, env, store, gpu_backend, image, keep,
                                    network=network, gpu=gpu, limits=limits)

    @classmethod
    def over(cls: type[H], session: Session) -> H:
        """A handle of this door over an existing session (no start, no registry)."""
        handle = cls.__new__(cls)
        handle._session = session
        return handle

    @classmethod
    def lookup(cls: type[H], sandbox_id: str) -> H:
        """The live handle with this id in this process; NotFound otherwise."""
        return cls._registry.get(sandbox_id)  # type: ignore[no-any-return]

    def _started(self) -> None:
        type(self)._registry.add(self.id, self)

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def state(self) -> str:
        return self._session.state

    @property
    def profile(self) -> Profile:
        return self._session.profile

    @property
    def workdir(self) -> str:
        """The workspace's path on the host (the same inside the jail, unless the sandbox
        runs in an image: see `inside_workdir`)."""
        return str(self._session.workdir)

    @property
    def inside_workdir(self) -> str:
        """The workspace's path as commands in the sandbox see it (where they start): in
        an image, the image's working directory (`[image] workdir`, else its WorkingDir,
        else /workspace), known once started; otherwise `workdir`."""
        if self._session.image is None:
            return self.workdir
        return self._session.spec().inside_workdir

    @property
    def agent_user(self) -> str:
        """The one user that runs in the sandbox (the only `user=` exec accepts)."""
        placement = self._session.placement
        if placement is not None and placement.agent is not None:
            return placement.agent.name
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name

    def is_alive(self) -> bool:
        return alive(self._session)

    def head_hash(self) -> str:
        """The session's hash-chain head (send it off-box to make rewrites detectable)."""
        return self._session.head_hash()
