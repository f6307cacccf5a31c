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
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Generic, NotRequired, TypedDict, TypeVar

from deepagents.backends.protocol import (
    FILE_NOT_FOUND,
    INVALID_PATH,
    IS_DIRECTORY,
    PERMISSION_DENIED,
    ExecuteResponse,
    FileDownloadResponse,
    FileUploadResponse,
)
from deepagents.backends.sandbox import BaseSandbox

from .. import loop
from ..api import Sandbox
from ..errors import NotFound
from ..execute import ExecTimeout
from ..files import OutputLimitExceeded
from ..options import Network
from ..profile import Profile
from ..result import ExecResult

__all__ = [
    "DEFAULT_MAX_DOWNLOAD",
    "DEFAULT_TIMEOUT",
    "RingfenceSandbox",
    "SandboxInfo",
    "SandboxListResponse",
    "SandboxProvider",
]

DEFAULT_TIMEOUT = 30 * 60
"""Seconds an `execute` may run when the caller gives no timeout (as the hosted providers)."""

DEFAULT_MAX_OUTPUT = 1 << 20
"""Bytes of output kept per stream of one `execute` (head and tail; the middle is cut
and the response says `truncated`)."""

DEFAULT_MAX_DOWNLOAD = 64 << 20
"""The largest file `download_files` returns (larger ones answer an error). Not the
core's 10 MiB per exec stream: a download is one file the caller asked for whole (the
standard suite round-trips 10.5 MB), and the bound only caps what one holds in memory."""

TIMEOUT_EXIT_CODE = 124

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


# -- the backend ------------------------------------------------------------------------


def _merged(r: ExecResult) -> str:
    """stdout (stderr already folded in by the shell) then anything bash said on stderr
    before it ran the command (a syntax error on the first line)."""
    out, err = r.stdout, r.stderr
    if out and err and not out.endswith("\n"):
        out += "\n"
    return out + err


def _timeout_of(timeout: int | None, default: float | None) -> float | None:
    """The protocol's timeout: None is the backend's default, 0 is no timeout at all."""
    if timeout is None:
        return default
    if timeout < 0:
        raise ValueError(f"timeout must be non-negative, got {timeout}")
    return None if timeout == 0 else float(timeout)


def _upload_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return PERMISSION_DENIED
    if isinstance(exc, IsADirectoryError):
        return IS_DIRECTORY
    if isinstance(exc, (NotADirectoryError, FileNotFoundError)) or "File exists" in str(exc):
        return INVALID_PATH  # a parent is a file, or cannot exist
    return str(exc)


def _download_error(exc: OSError, max_download: int) -> str:
    if isinstance(exc, OutputLimitExceeded):
        return (f"the file is larger than this backend's max_download ({max_download} "
                "bytes): read it in parts with execute, or raise max_download")
    if isinstance(exc, PermissionError):
        return PERMISSION_DENIED
    if isinstance(exc, IsADirectoryError):
        return IS_DIRECTORY
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return FILE_NOT_FOUND
    return str(exc)


MAX_COMMAND_BYTES = 128 * 1024
"""The kernel's limit on one argument (MAX_ARG_STRLEN): `bash -c` gets the command as one."""


def command_argv(command: str) -> list[str]:
    """The argv `execute` runs: `bash -c` with stderr merged into stdout in order. The
    `exec 2>&1;` sits on the command's first line, so bash's line numbers hold; the
    record and the guard see this argv whole (`exec` carries one past firejail's
    argument limits on stdin, as deepagents' read and glob scripts are)."""
    if "\0" in command:
        raise ValueError("the command contains a NUL byte")
    script = "exec 2>&1; " + command
    if len(script.encode()) >= MAX_COMMAND_BYTES:
        raise ValueError(
            f"the command is {len(command.encode())} bytes; one argument holds at most "
            f"{MAX_COMMAND_BYTES} (write a script with write_file and run that)")
    return ["/bin/bash", "-c", script]


def _bad_path(path: str) -> bool:
    return not path.startswith("/") or "\0" in path


class RingfenceSandbox(BaseSandbox):
    """A deepagents sandbox backend over a running `sandbox.Sandbox`.

    `execute` runs `bash -c` in the jail as the agent user, in the workspace, with
    stderr merged into stdout in order; a timeout kills the whole process tree and
    answers exit code 124 with the output so far. `timeout=0` means no timeout.
    The backend does not own the sandbox: close it (or `SandboxProvider.delete`).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        max_download: int = DEFAULT_MAX_DOWNLOAD,
    ) -> None:
        """`timeout`: seconds for an `execute` given none (None: no limit);
        `max_output`: bytes kept per stream of an `execute`; `max_download`: the
        largest file `download_files` returns (larger ones answer an error)."""
        if not isinstance(sandbox, Sandbox):
            raise TypeError(f"RingfenceSandbox wraps a sandbox.Sandbox, not {type(sandbox)!r}")
        self._sandbox = sandbox
        self._timeout = timeout
        self._max_output = max_output
        self._max_download = max_download

    @property
    def id(self) -> str:
        return self._sandbox.id

    @property
    def sandbox(self) -> Sandbox:
        """The underlying sandbox (its record: `sandbox.Store().commands(backend.id)`)."""
        return self._sandbox

    @property
    def workdir(self) -> str:
        """The workspace, writable by the agent, as the agent's commands see it (the same
        path on the host, unless the sandbox runs in an image)."""
        return self._sandbox.inside_workdir

    # One implementation: the async methods drive the sandbox from the caller's loop
    # (`Sandbox.aio`), the sync ones run them on the sync door's shared loop thread.
    def _argv(self, command: str) -> list[str]:
        return command_argv(command)

    @staticmethod
    def _response(r: ExecResult) -> ExecuteResponse:
        return ExecuteResponse(output=_merged(r), exit_code=r.returncode, truncated=r.truncated)

    @staticmethod
    def _timed_out(exc: ExecTimeout, limit: float | None) -> ExecuteResponse:
        partial = _merged(exc.result)
        if partial and not partial.endswith("\n"):
            partial += "\n"
        return ExecuteResponse(
            output=f"{partial}Error: command timed out after {limit:g} seconds; it was "
                   "killed (pass a larger timeout for long-running commands).",
            exit_code=TIMEOUT_EXIT_CODE, truncated=exc.result.truncated)

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        return loop.call(self.aexecute(command, timeout=timeout))

    async def aexecute(self, command: str, *, timeout: int | None = None
                       ) -> ExecuteResponse:
        limit = _timeout_of(timeout, self._timeout)
        try:
            r = await self._sandbox.aio.exec(self._argv(command), timeout=limit,
                                             max_output=self._max_output)
        except ExecTimeout as exc:
            return self._timed_out(exc, limit)
        return self._response(r)

    # -- files ------------------------------------------------------------------------

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        return loop.call(self.aupload_files(files))

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        out: list[FileUploadResponse] = []
        for path, content in files:
            if _bad_path(path):
                out.append(FileUploadResponse(path=path, error=INVALID_PATH))
                continue
            try:
                await self._sandbox.aio.write_file(path, content)
            except OSError as exc:
                out.append(FileUploadResponse(path=path, error=_upload_error(exc)))
            else:
                out.append(FileUploadResponse(path=path))
        return out

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        return loop.call(self.adownload_files(paths))

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        out: list[FileDownloadResponse] = []
        for path in paths:
            if _bad_path(path):
                out.append(FileDownloadResponse(path=path, error=INVALID_PATH))
                continue
            try:
                data = await self._sandbox.aio.read_file(path, text=False,
                                                         max_bytes=self._max_download)
            except OSError as exc:
                out.append(FileDownloadResponse(
                    path=path, error=_download_error(exc, self._max_download)))
            else:
                out.append(FileDownloadResponse(path=path, content=data))
        return out

    def __repr__(self) -> str:
        return f"RingfenceSandbox(id={self.id!r}, workdir={self.workdir!r})"


# -- the provider -----------------------------------------------------------------------

_CREATE_OPTIONS = ("profile", "workdir", "env", "network", "gpu", "limits", "image")


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
        network: Network = None,
        gpu: int | dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        image: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        max_download: int = DEFAULT_MAX_DOWNLOAD,
    ) -> None:
        """The arguments of `Sandbox` for the sandboxes it creates (`workdir=None`: a
        fresh private workspace for each, destroyed on delete; `image`: a stored image as
        their root filesystem, None: the profile's, else the host's), and the backend's
        `timeout`, `max_output` and `max_download` (see `RingfenceSandbox`)."""
        self._options: dict[str, Any] = {"profile": profile, "workdir": workdir, "env": env,
                                          "network": network, "gpu": gpu, "limits": limits,
                                          "image": image}
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
        """`sandbox_id=None`: start a new sandbox (keyword arguments `profile`,
        `workdir`, `env`, `network`, `gpu`, `limits`, `image` replace the provider's for this
        one). Otherwise the live sandbox with that id in this process; `NotFound` if
        there is none (a new one is never made in its place)."""
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
        sb = Sandbox(options.pop("profile"), options.pop("workdir"), options.pop("env"),
                     **options)
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
