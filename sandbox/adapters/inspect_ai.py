"""inspect-ai sandbox provider `firejail`: every sample gets its own ringfence sandbox.

    Task(dataset=..., solver=..., sandbox="firejail")                  # the default profile
    Task(..., sandbox=("firejail", "strict"))                          # a profile name
    Task(..., sandbox=("firejail", "my-profile.toml"))                 # a profile file
    Task(..., sandbox=("firejail", "compose.yaml"))                    # the task's image
    Task(..., sandbox=SandboxEnvironmentSpec("firejail", FirejailSandboxConfig(
        profile="default", network="guarded", limits={"memory_mib": 2048})))
    Task(..., sandbox=SandboxEnvironmentSpec("firejail", FirejailSandboxConfig(
        image="python:3.12", workdir="/testbed")))

The provider is registered through the `inspect_ai` entry point group (pyproject:
`firejail = "sandbox.adapters.inspect_ai"`), so installing the package is enough:
inspect imports this module the first time it looks up a sandbox type.

Per sample (`sample_init`) a fresh `AsyncSandbox` starts with a fresh private workspace
(owned by the sandbox's agent user, destroyed at `sample_cleanup`); `exec`, `read_file`
and `write_file` run in that jail as the agent user, each one text-checked by the guard
and recorded in the store (`sandbox ls`, `sandbox show ID`, `Store().commands(ID)`).
The profile gets `[filesystem] exec_var_tmp = true`: inspect's injected tool helpers
(`bash_session`, `text_editor`, `exec_remote`) live in /var/tmp and must run there.

Images: a sample's root filesystem is a stored image (`sandbox image ls`) instead of the
host's when the config names one (`image=`), its compose file does, or the profile does
(`[image] ref`), in that order. The provider is docker-compatible: a `compose.yaml`
(also found by itself next to the task, as docker finds it, and forwarded when
`--sandbox firejail` replaces a task's docker sandbox) is read for its default service
(`x-default: true`, else the one named `default`, else the only one): its `image`
(which must already be in the image store: `sudo sandbox image pull ...`; nothing is
pulled or built here), `working_dir` (the profile's `[image] workdir`), `environment` (a
bare `KEY` takes the host's value, as compose does) and `network_mode: none`. Any other
network mode keeps the profile's network (the jail never opens full egress because a
compose file asked), and the file's other services are not started (a warning names them).

The contract of `SandboxEnvironment` as inspect's `self_check` tests it, with these
mappings: a timeout raises `TimeoutError` (partial output on `.truncated_output`, the
whole process tree killed); an exec stream or a file over inspect's limits raises
`OutputLimitExceededError`; file errors are `FileNotFoundError`, `PermissionError`,
`IsADirectoryError`, `NotADirectoryError` carrying the path; a text read of bytes that
are not UTF-8 raises `UnicodeDecodeError`; a sandbox that has ended (closed, or killed by
an operator's `sandbox kill ID` or a guard rule) raises `SandboxUnavailableError`.

What differs from docker, on purpose: there is no root in the jail. `user=` accepts only
the sandbox's agent user (by name or uid); any other user, root included, raises
`SandboxUserUnsupportedError` (inspect's tools then run as the agent user). `timeout_retry`
is ignored (the exec is a local process, there is no daemon round trip to retry; a retry
would run the command's side effects twice). Requires inspect's asyncio backend (not trio).

This module is the provider (registered on import); the config, the compose file and the
profile it names are `inspect_config`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import sys
from collections.abc import AsyncIterator
from typing import Any, Literal, overload

import anyio
import sniffio
from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUnavailableError,
    SandboxUserUnsupportedError,
    concurrency,
    sandboxenv,
)
from inspect_ai.util._sandbox.compose import COMPOSE_FILES
from pydantic import BaseModel

from ..doors.aio import AsyncSandbox
from ..doors.execute import ExecTimeout
from ..doors.files import OutputLimitExceeded
from ..errors import SessionClosed
from .inspect_config import (
    FirejailSandboxConfig,
    check_image,
    new_sandbox,
    parse_config,
    profile_for,
    remember_paths,
)

__all__ = ["FirejailSandboxConfig", "FirejailSandboxEnvironment"]

log = logging.getLogger("sandbox.inspect_ai")

NAME = "firejail"
_ROOTS = frozenset({"root", "0"})



class _Live:
    """The sandboxes this eval batch started and has not cleaned up yet (by id)."""

    def __init__(self) -> None:
        self.boxes: dict[str, AsyncSandbox] = {}


def _process_live() -> _Live:
    """Outside an inspect lifecycle scope: the process's (the supervisor's)."""
    from .. import supervisor

    return supervisor.current().shared("inspect live sandboxes", _Live)


def _live() -> dict[str, AsyncSandbox]:
    # inspect keeps per-batch provider state on its lifecycle scope, so concurrent
    # eval batches in one process each clean up only their own sandboxes.
    try:
        from inspect_ai.util._sandbox.lifecycle import sandbox_lifecycle_state
    except ImportError:  # an inspect without lifecycle scopes
        return _process_live().boxes
    state = sandbox_lifecycle_state()
    return (state.get(_Live) if state is not None else _process_live()).boxes


def _max_subprocesses() -> int:
    try:
        from inspect_ai.util._subprocess import max_subprocesses_context_var
    except ImportError:
        return os.cpu_count() or 1
    return max_subprocesses_context_var.get()


@contextlib.asynccontextmanager
async def _subprocess_slot(throttle: bool) -> AsyncIterator[None]:
    """inspect's `subprocesses` concurrency limit, as its local provider applies it: an
    exec is a process on this host (the `firejail --join` that runs it)."""
    if not throttle:
        yield
        return
    async with concurrency("subprocesses", _max_subprocesses(), resizable=True):
        yield


_ERRNO: tuple[tuple[type[OSError], int], ...] = (
    (FileNotFoundError, errno.ENOENT),
    (IsADirectoryError, errno.EISDIR),
    (NotADirectoryError, errno.ENOTDIR),
    (PermissionError, errno.EACCES),
)


def _os_error(e: OSError, file: str) -> OSError:
    """The core's error as inspect's tools expect it: errno, strerror and filename set
    (`str()` names the path)."""
    for cls, code in _ERRNO:
        if isinstance(e, cls):
            return cls(code, os.strerror(code), file)
    return e


def _unavailable(sb: AsyncSandbox, e: BaseException | None = None) -> SandboxUnavailableError:
    return SandboxUnavailableError(
        f"the firejail sandbox {sb.id} is {sb.state}: it cannot run commands "
        f"(`sandbox show {sb.id}` says why)" + (f" [{e}]" if e else ""))


@sandboxenv(name=NAME)
class FirejailSandboxEnvironment(SandboxEnvironment):
    """One sample's ringfence sandbox (`self.sandbox`, an `AsyncSandbox`)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        super().__init__()
        self.sandbox = sandbox
        self._agent: tuple[str, str] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def config_files(cls) -> list[str]:
        """A compose file next to the task is its sandbox's config (as for docker), and
        makes the provider docker-compatible: inspect then forwards a docker task's
        compose file when `--sandbox firejail` replaces its sandbox."""
        return list(COMPOSE_FILES)

    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return FirejailSandboxConfig(**config)

    @classmethod
    def default_concurrency(cls) -> int | None:
        """Default max_sandboxes: one agent user per live sandbox, from a fixed pool
        (SANDBOX_AGENT_POOL); past it a sample would fail to start."""
        from ..jail.users import POOL_SIZE

        return POOL_SIZE

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None
                        ) -> None:
        """Check the config, the profile and the image before any sample starts (a bad
        profile or an image not in the store fails the eval at startup); resolve a
        relative profile or compose path in the task's directory."""
        _require_asyncio()
        cfg = remember_paths(config)
        check_image(cfg, profile_for(cfg))

    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        _require_asyncio()
        sb = new_sandbox(parse_config(config))
        live = _live()
        with anyio.CancelScope(shield=True):  # a started jail is always registered
            await sb.start()
            live[sb.id] = sb
        log.debug("firejail sandbox %s started for %s", sb.id, task_name)
        return {"default": cls(sb)}

    @classmethod
    async def sample_cleanup(cls, task_name: str,
                             config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment],
                             interrupted: bool) -> None:
        live = _live()
        for env in environments.values():
            sb = env.as_type(FirejailSandboxEnvironment).sandbox
            with anyio.CancelScope(shield=True):
                await sb.close()
            live.pop(sb.id, None)

    @classmethod
    async def task_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                           cleanup: bool) -> None:
        """The last chance: sandboxes whose sample cleanup never ran (an interrupted
        eval) end here. With `--no-sandbox-cleanup` they are left running until this
        process exits (the jails cannot outlive their owner); their ids are printed."""
        live = _live()
        if not live:
            return
        if not cleanup:
            for sid in live:
                print(f"firejail sandbox {sid} left running (until this process exits): "
                      f"`sandbox show {sid}`, `sandbox kill {sid}`", file=sys.stderr)
            return
        boxes = list(live.values())
        live.clear()
        with anyio.CancelScope(shield=True):
            for sb in boxes:
                try:
                    await sb.close()
                except Exception as e:  # one failed close must not keep the others alive
                    log.warning("firejail sandbox %s: close failed: %s", sb.id, e)

    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        """`inspect sandbox cleanup firejail ID` kills that session from any process
        (as `sandbox kill ID`); without an ID, sessions whose owner process died are
        reaped (as `sandbox gc`): a live owner's sessions belong to a running eval."""
        await anyio.to_thread.run_sync(_cli_cleanup, id)

    # -- the contract -------------------------------------------------------------------

    async def exec(
        self,
        cmd: list[str],
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: int | None = None,
        timeout_retry: bool = True,
        concurrency: bool = True,
    ) -> ExecResult[str]:
        run_as = self._user(user)
        sb = self.sandbox
        async with _subprocess_slot(concurrency):
            try:
                r = await sb.exec(list(cmd), input=input, cwd=cwd, env=env, timeout=timeout,
                                  max_output=SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE,
                                  user=run_as)
            except ExecTimeout as e:
                err = TimeoutError(f"Command timed out after {timeout} seconds")
                partial = e.result.stdout + e.result.stderr
                if partial:
                    err.truncated_output = partial  # type: ignore[attr-defined]
                raise err from e
            except SessionClosed as e:
                raise _unavailable(sb, e) from e
        if r.truncated:
            raise OutputLimitExceededError(
                SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR, r.stdout + r.stderr)
        if r.returncode > 128 and not sb.is_alive():
            raise _unavailable(sb)  # killed under the command: not the command's output
        return ExecResult(success=r.returncode == 0, returncode=r.returncode,
                          stdout=r.stdout, stderr=r.stderr)

    async def write_file(self, file: str, contents: str | bytes) -> None:
        try:
            await self.sandbox.write_file(file, contents)
        except SessionClosed as e:
            raise _unavailable(self.sandbox, e) from e
        except OSError as e:
            raise _os_error(e, file) from e

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> str | bytes:
        try:
            data = await self.sandbox.read_file(
                file, text=False, max_bytes=SandboxEnvironmentLimits.MAX_READ_FILE_SIZE)
        except OutputLimitExceeded as e:
            raise OutputLimitExceededError(
                SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, None) from e
        except SessionClosed as e:
            raise _unavailable(self.sandbox, e) from e
        except OSError as e:
            raise _os_error(e, file) from e
        assert isinstance(data, bytes)
        return data.decode("utf-8") if text else data  # strict: UnicodeDecodeError

    def default_polling_interval(self) -> float:
        return 0.2  # an exec is a local process: polling is cheap

    # connection(): not provided. A shell joined from outside would be neither the agent
    # user nor recorded; watch a sample's sandbox with `sandbox logs ID` instead.

    # -- users --------------------------------------------------------------------------

    def _user(self, user: str | None) -> str | None:
        """Only the sandbox's agent user runs in the jail (by name or uid); never root."""
        if user is None:
            return None
        if user in _ROOTS:
            raise SandboxUserUnsupportedError(
                "the firejail sandbox has no root: commands run as its agent user only "
                "(exec with user=None)")
        name, uid = self._agent_user()
        if user in (name, uid):
            return name
        raise SandboxUserUnsupportedError(
            f"the firejail sandbox cannot exec as {user!r}: only its agent user "
            f"({name}, uid {uid}) exists in it")

    def _agent_user(self) -> tuple[str, str]:
        if self._agent is None:
            uid = os.stat(self.sandbox.workdir).st_uid  # the fresh workspace is the agent's
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._agent = (name, str(uid))
        return self._agent


def _require_asyncio() -> None:
    try:
        backend = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return
    if backend != "asyncio":
        raise RuntimeError(f"the firejail sandbox runs on asyncio; inspect is on {backend} "
                           "(unset INSPECT_ASYNC_BACKEND or set it to asyncio)")


def _cli_cleanup(id: str | None) -> None:
    import getpass

    from .. import gc
    from ..control import kill_session
    from ..record import Store

    store = Store()
    try:
        if id:
            sid = store.get_session(id)["id"]
            who = f"inspect sandbox cleanup ({getpass.getuser()}, pid {os.getpid()})"
            print(f"{sid} {kill_session(store, sid, who)}")
            return
        reaped = gc.collect(store, deep=True)
        print(f"reaped {len(reaped)} firejail sandbox session(s) whose owner died"
              + (": " + " ".join(reaped) if reaped else ""))
        live = store.list_sessions(live_only=True, limit=10_000)
        if live:
            print("still running (their owner is alive): "
                  + " ".join(s["id"] for s in live)
                  + "; end one with `inspect sandbox cleanup firejail ID`")
    finally:
        store.close()
