"""LangChain Deep Agents: a jailed, recorded sandbox as a deepagents backend.

    from deepagents import create_deep_agent
    from sandbox.adapters.deepagents import SandboxProvider

    with SandboxProvider(network="none") as provider:
        backend = provider.get_or_create()
        agent = create_deep_agent(model=model, backend=backend,
                                  system_prompt=f"Work in {backend.workdir}.")
        agent.invoke({"messages": [{"role": "user", "content": "run the tests"}]})

    SandboxProvider(network="none", image="python:3.12-slim")  # in a stored image

`SandboxProvider` has the shape of the Deep Agents sandbox providers (`list`,
`get_or_create`, `delete`, each keyword-only, and their async twins);
`RingfenceSandbox` is a `BaseSandbox`: it implements `execute`, `upload_files`,
`download_files` and `id`, and deepagents builds `ls`, `read`, `write`, `edit`, `grep`
and `glob` on them (python3 and coreutils run inside the jail, as the agent user). The
sync methods go through `Sandbox`; the async ones (`aexecute`, `aupload_files`,
`adownload_files`) drive the same session from the caller's loop, with no thread per call.

Every command and file transfer is in the sandbox's record (`sandbox.Store()`).
Paths must be absolute (the protocol's rule): only the workspace (`backend.workdir`),
a private /tmp and /var/tmp are writable in the jail, so tell the model where to work.
deepagents offloads large tool results under `/large_tool_results`, read-only here:
route them into the workspace with
`CompositeBackend(default=backend, routes={}, artifacts_root=backend.workdir)`
(without it a large result stays inline in the conversation).

The file tools keep Deep Agents' own protocol (`deepagents.backends.protocol`): `glob`
answers absolute paths of regular files (deepagents' permission rules match absolute
paths only) and `write` creates or overwrites, as every backend deepagents ships. The
standard suite in `langchain-tests` still expects relative glob paths and a write that
refuses an existing file; tests/adapters/test_deepagents_standard.py marks those.
The jail has `python3`, not `python` (unless an image brings one).

Images: `SandboxProvider(image=NAME)` (or `get_or_create(image=NAME)` for one sandbox)
runs each sandbox in that stored image (`sandbox image ls`; `sudo sandbox image pull
docker://python:3.12-slim python:3.12-slim` first) instead of the host's filesystem; None
(the default) is the profile's `[image] ref`, else the host's, read-only. deepagents' file
tools need `python3` in the image. There `backend.workdir` is the workspace's path inside
the image (the profile's `[image] workdir`, else the image's WorkingDir, else /workspace),
seeded with what the image holds there; `backend.sandbox.workdir` stays its host path.

This module is the provider; the backend is `deepagents_backend`.
"""


from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Generic, NotRequired, TypedDict, TypeVar, Unpack

from ..doors.api import Sandbox
from ..doors.options import SPEC_NAMES, SandboxOptions, check_names
from ..errors import NotFound
from ..jail.profile import Profile
from .deepagents_backend import (
    DEFAULT_MAX_DOWNLOAD,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_TIMEOUT,
    RingfenceSandbox,
)

__all__ = [
    "DEFAULT_MAX_DOWNLOAD",
    "DEFAULT_TIMEOUT",
    "RingfenceSandbox",
    "SandboxInfo",
    "SandboxListResponse",
    "SandboxProvider",
]


MetadataT = TypeVar("MetadataT")
T = TypeVar("T")


class SandboxInfo(TypedDict, Generic[MetadataT]):
    """One sandbox in `SandboxProvider.list` (the Deep Agents provider shape)."""

    sandbox_id: str
    metadata: NotRequired[MetadataT]


class SandboxListResponse(TypedDict, Generic[MetadataT]):
    """A page of `SandboxProvider.list`; `cursor` is None on the last page."""

    items: list[SandboxInfo[MetadataT]]
    cursor: str | None


class RingfenceMetadata(TypedDict):
    workdir: str
    profile: str
    state: str


# -- the provider -----------------------------------------------------------------------

# What get_or_create may replace: the profile and every Sandbox option.
_CREATE_OPTIONS = frozenset({"profile"}) | SPEC_NAMES


class SandboxProvider:
    """Creates, finds and deletes ringfence sandboxes for Deep Agents.

    The Deep Agents provider shape: `list(*, cursor)`, `get_or_create(*, sandbox_id)`,
    `delete(*, sandbox_id)` and `alist`/`aget_or_create`/`adelete`. Sandboxes live in
    this process (`Sandbox.lookup`); the provider holds the ones it created until
    `delete` or `close` (also on leaving `with`).
    """

    def __init__(
        self,
        profile: Profile | str = "default",
        *,
        workdir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        max_download: int = DEFAULT_MAX_DOWNLOAD,
        **options: Unpack[SandboxOptions],
    ) -> None:
        """The arguments of `Sandbox` for the sandboxes it creates (`workdir=None`: a
        fresh private workspace for each, destroyed on delete; `image`: a stored image as
        their root filesystem, None: the profile's, else the host's; `network`, `gpu`,
        `limits`, ...: as `Sandbox`'s), and the backend's `timeout`, `max_output` and
        `max_download` (see `RingfenceSandbox`)."""
        check_names(options)  # a typo fails here, not at the first get_or_create
        self._options: dict[str, Any] = {"profile": profile, "workdir": workdir, "env": env,
                                          **options}
        self._timeout = timeout
        self._max_output = max_output
        self._max_download = max_download
        self._owned: dict[str, Sandbox] = {}

    def _backend(self, sb: Sandbox) -> RingfenceSandbox:
        return RingfenceSandbox(sb, timeout=self._timeout, max_output=self._max_output,
                                max_download=self._max_download)

    def list(self, *, cursor: str | None = None, **kwargs: Any
             ) -> SandboxListResponse[RingfenceMetadata]:
        """The live sandboxes this provider created (one page: `cursor` is None)."""
        if kwargs:
            raise ValueError(f"SandboxProvider.list() got unsupported kwargs: {sorted(kwargs)}")
        if cursor is not None:
            raise ValueError("SandboxProvider.list(): no further pages (cursor must be None)")
        items: list[SandboxInfo[RingfenceMetadata]] = []
        for sid, sb in list(self._owned.items()):
            if not sb.is_alive():
                continue
            items.append({"sandbox_id": sid, "metadata": {
                "workdir": sb.inside_workdir, "profile": sb.profile.name, "state": sb.state}})
        return {"items": items, "cursor": None}

    def get_or_create(self, *, sandbox_id: str | None = None, **kwargs: Any
                      ) -> RingfenceSandbox:
        """`sandbox_id=None`: start a new sandbox (keyword arguments `profile` and
        `Sandbox`'s own, `workdir`, `env`, `network`, `gpu`, `limits`, `image`, ...,
        replace the provider's for this one). Otherwise the live sandbox with that id in
        this process; `NotFound` if there is none (a new one is never made in its place)."""
        unknown = sorted(k for k, v in kwargs.items()
                         if k not in _CREATE_OPTIONS and v is not None)
        if unknown:
            raise ValueError(f"SandboxProvider.get_or_create() got unsupported kwargs: {unknown}")
        if sandbox_id is not None:
            sb = self._owned.get(sandbox_id) or Sandbox.lookup(sandbox_id)
            if not sb.is_alive():
                raise NotFound(f"sandbox {sandbox_id!r} has ended ({sb.state})")
            return self._backend(sb)
        options = dict(self._options)
        options.update({k: v for k, v in kwargs.items() if k in _CREATE_OPTIONS and v is not None})
        sb = Sandbox(options.pop("profile"), **options)
        sb.start()
        self._owned[sb.id] = sb
        return self._backend(sb)

    def delete(self, *, sandbox_id: str, **kwargs: Any) -> None:
        """Close the sandbox: its processes die, a fresh workspace is removed, its
        record stays. Idempotent: an unknown or already closed id is not an error."""
        if kwargs:
            raise ValueError(f"SandboxProvider.delete() got unsupported kwargs: {sorted(kwargs)}")
        sb = self._owned.pop(sandbox_id, None)
        if sb is None:
            try:
                sb = Sandbox.lookup(sandbox_id)
            except NotFound:
                return
        sb.close()

    async def alist(self, *, cursor: str | None = None, **kwargs: Any
                    ) -> SandboxListResponse[RingfenceMetadata]:
        return self.list(cursor=cursor, **kwargs)

    async def aget_or_create(self, *, sandbox_id: str | None = None, **kwargs: Any
                             ) -> RingfenceSandbox:
        """As `get_or_create`; starting a jail blocks, so it runs in the executor."""
        return await _in_executor(lambda: self.get_or_create(sandbox_id=sandbox_id, **kwargs))

    async def adelete(self, *, sandbox_id: str, **kwargs: Any) -> None:
        await _in_executor(lambda: self.delete(sandbox_id=sandbox_id, **kwargs))

    def close(self) -> None:
        """Delete every sandbox this provider created and has not deleted yet."""
        while self._owned:
            _, sb = self._owned.popitem()
            sb.close()

    def __enter__(self) -> SandboxProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _in_executor(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn)
