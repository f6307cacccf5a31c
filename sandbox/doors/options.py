"""What both API doors share: the settings a sandbox is made with (`SandboxSpec`, the
one list of them), per-sandbox settings over a profile, the handle's constructor and
read-only surface, and lookup by id.

Everything that makes sandboxes for someone else (the adapters, the warm pool, the Ray
pool) builds a `SandboxSpec` and passes it on as `Sandbox(profile, **spec)`, so an option
added to `SandboxOptions` reaches all of them without touching each.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any, TypedDict, TypeVar, Unpack, cast

from ..jail.profile import Profile, load, override
from ..record import Store
from ..session import Session

# `network=`: a mode name, an allowlist, or a [network] table.
Network = str | list[str] | dict[str, Any] | None
# `gpu=`: a device count or a [gpu] table.
Gpu = int | dict[str, Any] | None


class SandboxOptions(TypedDict, total=False):
    """The keyword-only settings of `Sandbox(...)` and `AsyncSandbox(...)` (see `Handle`
    for each); a key left out is its default (None; `keep`: False)."""

    network: Network
    gpu: Gpu
    limits: dict[str, Any] | None
    store: Store | None
    gpu_backend: Any
    image: str | None
    keep: bool


class SandboxSpec(SandboxOptions, total=False):
    """Everything a sandbox is made with but its profile, by name:
    `Sandbox(profile, **spec)`. A plain dict at run time (it pickles, compares and
    travels to a Ray node as one)."""

    workdir: str | os.PathLike[str] | None
    env: dict[str, str] | None


SPEC_NAMES: frozenset[str] = SandboxSpec.__optional_keys__


def spec_of(source: object, **given: Any) -> SandboxSpec:
    """The spec an adapter's config sets: each spec field `source` has an attribute of
    that name for, then `given` over them; None values are left out (None is every
    field's default). A config field of the same name but another meaning must be
    overridden in `given` (None drops it)."""
    found = {k: getattr(source, k) for k in SPEC_NAMES if hasattr(source, k)}
    merged = {k: v for k, v in {**found, **given}.items() if v is not None}
    check_names(merged)
    return cast(SandboxSpec, merged)


def check_names(options: Mapping[str, object]) -> None:
    """TypeError naming what a spec does not know (a typo, or an option this version
    lacks)."""
    bad = set(options) - SPEC_NAMES
    if bad:
        raise TypeError(f"unknown sandbox option(s) {sorted(bad)}; "
                        f"accepted: {sorted(SPEC_NAMES)}")


def settings(profile: Profile | str, *, network: Network = None, gpu: Gpu = None,
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


def new_session(profile: Profile | str, spec: SandboxSpec) -> Session:
    """The session a handle of this spec drives (not started)."""
    check_names(spec)
    session = Session(settings(profile, network=spec.get("network"), gpu=spec.get("gpu"),
                               limits=spec.get("limits")),
                      workdir=spec.get("workdir"), env=spec.get("env"), kind="api",
                      store=spec.get("store"), image=spec.get("image"),
                      keep=spec.get("keep", False))
    session.gpu_backend = spec.get("gpu_backend")
    return session


class Registry:
    """Live handles of this process by session id (weak: a dropped handle is gone)."""

    def __init__(self) -> None:
        self._by_id: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def add(self, sid: str, handle: Any) -> None:
        self._by_id[sid] = handle

    def get(self, sid: str) -> Any:
        from ..errors import NotFound

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
        **options: Unpack[SandboxOptions],
    ) -> None:
        self._session = new_session(profile, SandboxSpec(workdir=workdir, env=env, **options))

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
