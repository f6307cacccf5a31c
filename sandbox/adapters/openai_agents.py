"""OpenAI Agents SDK backend: a `BaseSandboxClient` whose sessions run in a firejail jail.

    from agents import Runner, RunConfig
    from agents.sandbox import SandboxAgent, SandboxRunConfig
    from sandbox.adapters.openai_agents import FirejailSandboxClient, FirejailSandboxClientOptions

    agent = SandboxAgent(name="dev", instructions="...", model="gpt-5.4")
    result = await Runner.run(agent, "fix the tests", run_config=RunConfig(sandbox=SandboxRunConfig(
        client=FirejailSandboxClient(),
        options=FirejailSandboxClientOptions(profile="default", network="none"))))
    # in a stored image (`sandbox image ls`): FirejailSandboxClientOptions(image="python:3.12-slim")

Why this backend: on Linux the SDK's own `UnixLocalSandboxClient` adds no confinement
at all (its docstring says so; openai-agents-python issue #5064): the model's shell
commands run as you, on your filesystem, with your network. Here every command, every
file read and write, the SDK's own plumbing (path probes, `ls`, `mkdir`, `mv`, archive
extraction) and every PTY session is a process in one jail: a per-session agent user
(never root), a private workspace (created for the session, destroyed with it), `/`
read-only, a private /tmp, the profile's network policy, limits and guard rules, and
each of them is in the store's record (`sandbox.Store().commands(sandbox_id)`).

Mapping onto the SDK's contract (mirroring `UnixLocalSandboxSession` method by method):

- `create()` starts the jail at once, as UnixLocal creates its temp root there, and sets
  `manifest.root` to the jail's workspace (the same path inside the jail and on the
  host). A non-default `manifest.root` is used as the workspace directory itself (it must
  exist and belong to a non-root user; it is then kept at close, like UnixLocal's
  caller-chosen roots). In an image the root is a path inside it (see Images below).
- `exec()` runs argv (or `sh -c` for `shell=True`, as UnixLocal) in the jail with the
  manifest's environment; HOME is the workspace. `user` may only be the jail's own agent
  user: there is no root or sudo inside, so manifest users/groups are refused, as
  UnixLocal refuses them. Exit status is the shell's convention: signal N is 128+N
  (UnixLocal reports -N).
- `read`/`write` are `cat` in the jail (`AsyncSandbox.read_file`/`write_file`);
  `persist_workspace`/`hydrate_workspace` are `AsyncSandbox.export_tar`/`import_tar`
  with the SDK's own skip paths and tar validation.
- `shutdown()` ends the jail (its whole process tree; a session-owned workspace goes
  with it, after `stop()` persisted it to the snapshot); `resume()` re-attaches to a jail
  still alive in this process, or starts a fresh one that the SDK hydrates from the
  snapshot.
- PTY: `exec_command` gets long-running sessions that `write_stdin` polls. `tty=false`
  is plain pipes (stdin closed), exactly as UnixLocal. `tty=true` is a real terminal,
  allocated inside the jail from its private devpts by util-linux `script`: the line
  discipline is genuine (Ctrl-C is SIGINT to the foreground job, echo, isatty), so the
  capability is declared honestly. It needs `script` in the jail (Debian: bsdutils).

Images: `FirejailSandboxClientOptions(image=NAME)` runs the jail in a stored image
(`sudo sandbox image pull docker://python:3.12-slim python:3.12-slim` first; `sandbox
image ls` lists them) instead of the host's filesystem, as the SDK's `DockerSandboxClient`
takes `image`; without one (the default, or the profile's `[image] ref`) the jail sees the
host's filesystem read-only. As in the Docker client, `manifest.root` is then a path inside
the image: the SDK's default (`/workspace`) means the image's working directory (the
profile's `[image] workdir`, else the image's WorkingDir, else /workspace), another
absolute path is where the workspace goes (`[image] workdir`). The workspace is always a
fresh one, seeded with what the image holds there, and `manifest.root` is set to its path
inside (`AsyncSandbox.inside_workdir`).

Not supported: exposed ports, manifest users/groups, host_path path grants, and cloud
mounts (they need FUSE/rclone, which the jail does not grant).
"""

from __future__ import annotations

import asyncio
import io
import logging
import posixpath
import shlex
import tarfile
import time
import uuid
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from agents.sandbox.errors import (
    ExecTimeoutError,
    ExecTransportError,
    WorkspaceArchiveReadError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
    WorkspaceStartError,
)
from agents.sandbox.manifest import Manifest
from agents.sandbox.materialization import MaterializationResult
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
from agents.sandbox.session.dependencies import Dependencies
from agents.sandbox.session.manager import Instrumentation
from agents.sandbox.session.pty_output import collect_pty_output
from agents.sandbox.session.pty_types import (
    PTY_PROCESSES_MAX,
    PTY_PROCESSES_WARNING,
    PtyExecUpdate,
    allocate_pty_process_id,
    clamp_pty_yield_time_ms,
    process_id_to_prune_from_meta,
    resolve_pty_write_yield_time_ms,
)
from agents.sandbox.session.sandbox_client import BaseSandboxClient, BaseSandboxClientOptions
from agents.sandbox.session.sandbox_session import SandboxSession
from agents.sandbox.session.sandbox_session_state import SandboxSessionState
from agents.sandbox.session.workspace_payloads import coerce_write_payload
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot
from agents.sandbox.types import ExecResult, User
from agents.sandbox.util.tar_utils import (
    UnsafeTarMemberError,
    should_skip_tar_member,
    validate_tarfile,
)
from pydantic import Field

from .. import files as _files
from ..aio import AsyncSandbox
from ..errors import NotFound, SessionClosed
from ..execute import ExecTimeout, Process
from ..profile import Profile, load, override
from ..store import Store

__all__ = [
    "FirejailSandboxClient",
    "FirejailSandboxClientOptions",
    "FirejailSandboxSession",
    "FirejailSandboxSessionState",
]

logger = logging.getLogger(__name__)

BACKEND_ID = "firejail"
_DEFAULT_MANIFEST_ROOT = cast(str, Manifest.model_fields["root"].default)
_READ_LIMIT = _files.MAX_TRANSFER
_TERMINATE_GRACE_S = 5.0
# A terminal needs a size for full-screen programs; `script` gives its pty none.
_TTY_ROWS, _TTY_COLS = 24, 80


class FirejailSandboxClientOptions(BaseSandboxClientOptions):
    """How to build the jail (JSON round-trips with the session state).

    `profile`: a profile name ("default", "strict", "pypi", ...); `profile_overrides`:
    tables merged over it as in a profile file (`{"filesystem": {...}}`); `network`:
    "none" | "guarded" | a list of allowed "host:port" | a [network] table; `gpu`: a
    count or a [gpu] table; `limits`: a [limits] table; `env`: extra environment;
    `image`: a stored image's name or digest (`sandbox image ls`) as the root filesystem,
    as `DockerSandboxClientOptions.image` (None: the profile's `[image] ref`, else the
    host's filesystem, read-only)."""

    type: Literal["firejail"] = "firejail"
    profile: str = "default"
    profile_overrides: dict[str, Any] | None = None
    network: str | list[str] | dict[str, Any] | None = None
    gpu: int | dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    image: str | None = None

    def resolved_profile(self) -> Profile | str:
        if not self.profile_overrides:
            return self.profile
        return override(load(self.profile), self.profile_overrides, where="client options")


class FirejailSandboxSessionState(SandboxSessionState):
    type: Literal["firejail"] = "firejail"
    sandbox_id: str | None = None
    """The jail's id: its record is `sandbox.Store().commands(sandbox_id)`."""
    workspace_root_owned: bool = True
    """The workspace was created for the jail (and dies with it)."""
    options: FirejailSandboxClientOptions = Field(default_factory=FirejailSandboxClientOptions)


@dataclass
class _PtyEntry:
    process: Process
    tty: bool
    last_used: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    output_chunks: deque[bytes] = field(default_factory=deque)
    output_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    output_notify: asyncio.Event = field(default_factory=asyncio.Event)
    output_closed: asyncio.Event = field(default_factory=asyncio.Event)
    pump_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    wait_task: asyncio.Task[None] | None = None


def _user_name(user: str | User | None) -> str | None:
    return user.name if isinstance(user, User) else user


class FirejailSandboxSession(BaseSandboxSession):
    """One jail as an SDK session: every exec, file op and PTY is a process in it and a
    line in its record. Unlike UnixLocal on Linux, this session is confined (see the
    module docstring)."""

    state: FirejailSandboxSessionState

    def __init__(
        self,
        *,
        state: FirejailSandboxSessionState,
        sandbox: AsyncSandbox | None = None,
        store: Store | None = None,
        started: list[str] | None = None,
    ) -> None:
        self.state = state
        self._sandbox = sandbox
        self._store = store
        self._started = started if started is not None else []
        self._running = False
        self._pty_lock = asyncio.Lock()
        self._pty_processes: dict[int, _PtyEntry] = {}
        self._reserved_pty_process_ids: set[int] = set()
        self._has_script: bool | None = None

    @classmethod
    def from_state(
        cls, state: FirejailSandboxSessionState, *, store: Store | None = None,
        started: list[str] | None = None,
    ) -> FirejailSandboxSession:
        sandbox: AsyncSandbox | None = None
        if state.sandbox_id is not None:
            with suppress(NotFound):
                sandbox = AsyncSandbox.lookup(state.sandbox_id)
        return cls(state=state, sandbox=sandbox if sandbox and sandbox.is_alive() else None,
                   store=store, started=started)

    @property
    def sandbox(self) -> AsyncSandbox:
        """The live jail (raises SessionClosed when there is none)."""
        if self._sandbox is None:
            raise SessionClosed("the firejail sandbox session has no running jail")
        return self._sandbox

    # -- lifecycle -----------------------------------------------------------------------

    async def _start_jail(self) -> None:
        opts = self.state.options
        root = self.state.manifest.root
        profile = opts.resolved_profile()
        workdir = None
        if opts.image is not None:
            # In an image the root is a path inside it, as in the Docker client: the
            # default is the image's working directory, another one is `[image] workdir`
            # (also what a resumed session's root, set below, says).
            if root != _DEFAULT_MANIFEST_ROOT:
                base = load(profile) if isinstance(profile, str) else profile
                profile = override(base, {"image": {"workdir": root}},
                                   where="client options (manifest.root in an image)")
        elif not self.state.workspace_root_owned:
            # A caller-chosen root is used as is: it must exist, owned by a non-root user.
            workdir = root
        sb = AsyncSandbox(profile, workdir, opts.env, network=opts.network, gpu=opts.gpu,
                          limits=opts.limits, store=self._store, image=opts.image)
        try:
            await sb.start()
        except BaseException:
            await sb.close()
            raise
        self._sandbox = sb
        self._started.append(sb.id)
        self.state.sandbox_id = sb.id
        self.state.manifest.root = sb.inside_workdir  # in an image, its path inside

    async def _ensure_backend_started(self) -> None:
        if self._sandbox is not None and self._sandbox.is_alive():
            # Re-attached to a live jail: its workspace still holds the files.
            self._set_start_state_preserved(self.state.workspace_root_ready)
            return
        self._sandbox = None
        try:
            await self._start_jail()
        except Exception as e:
            raise WorkspaceStartError(path=Path(self.state.manifest.root), cause=e) from e
        self._set_start_state_preserved(not self.state.workspace_root_owned)

    async def _after_start(self) -> None:
        self._running = True

    async def _after_start_failed(self) -> None:
        self._running = False

    async def _shutdown_backend(self) -> None:
        sb, self._sandbox = self._sandbox, None
        self._running = False
        if sb is not None:
            await sb.close()

    async def _after_shutdown(self) -> None:
        self._running = False

    async def running(self) -> bool:
        return self._running and self._sandbox is not None and self._sandbox.is_alive()

    async def _validate_manifest_application(
        self,
        *,
        only_ephemeral: bool = False,
        manifest: Manifest | None = None,
        session_running: bool | None = None,
    ) -> None:
        from agents.sandbox._mount_security import validate_manifest_mount_credential_boundaries

        _ = (only_ephemeral, session_running)
        validate_manifest_mount_credential_boundaries(
            manifest or self.state.manifest, provider_backend_id=BACKEND_ID)

    async def _apply_manifest(
        self, *, only_ephemeral: bool = False, provision_accounts: bool = True
    ) -> MaterializationResult:
        _refuse_unsupported(self.state.manifest)
        return await super()._apply_manifest(
            only_ephemeral=only_ephemeral, provision_accounts=provision_accounts)

    async def provision_manifest_accounts(self) -> None:
        _refuse_unsupported(self.state.manifest)

    # -- exec ----------------------------------------------------------------------------

    def _prepare_exec_command(
        self, *command: str | Path, shell: bool | list[str], user: str | User | None
    ) -> list[str]:
        # As UnixLocal: a plain `sh -c` (a login shell would reset PATH from /etc/profile);
        # and never a `sudo -u` prefix: the user is checked and passed to the jail apart.
        if shell is True:
            shell = ["sh", "-c"]
        return super()._prepare_exec_command(*command, shell=shell, user=None)

    def _check_user(self, user: str | User | None) -> str | None:
        name = _user_name(user)
        if name is not None and name != self.sandbox.agent_user:
            raise PermissionError(f"run as {name!r}: only the sandbox's agent user "
                                  f"({self.sandbox.agent_user}) runs in it; there is no root")
        return name

    async def _env(self) -> dict[str, str]:
        env = dict(await self.state.manifest.environment.resolve())
        env.setdefault("HOME", self.state.manifest.root)
        return env

    async def exec(
        self,
        *command: str | Path,
        timeout: float | None = None,
        shell: bool | list[str] = True,
        user: str | User | None = None,
    ) -> ExecResult:
        argv = self._prepare_exec_command(*command, shell=shell, user=None)
        return await self._exec_in_jail(argv, timeout=timeout, user=self._check_user(user))

    async def _exec_internal(
        self, *command: str | Path, timeout: float | None = None
    ) -> ExecResult:
        return await self._exec_in_jail([str(c) for c in command], timeout=timeout, user=None)

    async def _exec_in_jail(
        self, argv: list[str], *, timeout: float | None, user: str | None
    ) -> ExecResult:
        try:
            r = await self.sandbox.exec(argv, env=await self._env(), timeout=timeout, user=user)
        except ExecTimeout as e:
            raise ExecTimeoutError(command=argv, timeout_s=timeout, cause=e) from e
        except PermissionError as e:  # argv[0] not executable: what a shell says
            return ExecResult(stdout=b"", stderr=str(e).encode(), exit_code=126)
        except Exception as e:
            raise ExecTransportError(command=argv, cause=e) from e
        return ExecResult(stdout=r.stdout_bytes, stderr=r.stderr_bytes, exit_code=r.returncode)

    # -- files ---------------------------------------------------------------------------

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        self._check_user(user)
        workspace_path = await self._validate_path_access(path)
        try:
            data = await self.sandbox.read_file(str(workspace_path), text=False,
                                                max_bytes=_READ_LIMIT)
        except FileNotFoundError as e:
            raise WorkspaceReadNotFoundError(path=path, cause=e) from e
        except OSError as e:
            raise WorkspaceArchiveReadError(path=path, cause=e) from e
        return io.BytesIO(data)

    async def _read_bounded(self, path: Path, *, max_bytes: int) -> bytes:
        workspace_path = await self._validate_path_access(path)
        r = await self.sandbox.exec(
            ["/bin/sh", "-c",
             '[ -e "$1" ] || exit 44; [ -f "$1" ] || exit 45; head -c "$2" < "$1"',
             "sh", str(workspace_path), str(max_bytes)],
            max_output=max_bytes + 1)
        if r.returncode == 44:
            raise WorkspaceReadNotFoundError(path=path)
        if r.returncode != 0:
            raise WorkspaceArchiveReadError(path=path)
        return r.stdout_bytes[:max_bytes]

    async def write(
        self, path: Path, data: io.IOBase, *, user: str | User | None = None
    ) -> None:
        self._check_user(user)
        payload = coerce_write_payload(path=path, data=data)
        workspace_path = await self._validate_path_access(path, for_write=True)
        raw = payload.stream.read()
        try:
            await self.sandbox.write_file(str(workspace_path), bytes(raw))
        except OSError as e:
            raise WorkspaceArchiveWriteError(path=workspace_path, cause=e) from e

    async def persist_workspace(self) -> io.IOBase:
        root = self.state.manifest.root
        try:
            data = await self.sandbox.export_tar(root)
        except (OSError, SessionClosed) as e:
            raise WorkspaceArchiveReadError(path=Path(root), cause=e) from e
        skip = self._persist_workspace_skip_relpaths()
        try:
            return io.BytesIO(await asyncio.to_thread(_filter_workspace_tar, data, root, skip))
        except (tarfile.TarError, OSError) as e:
            raise WorkspaceArchiveReadError(path=Path(root), cause=e) from e

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        root = Path(self.state.manifest.root)
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
            await self.sandbox.import_tar(payload, str(root))
        except (OSError, SessionClosed) as e:
            raise WorkspaceArchiveWriteError(path=root, cause=e) from e

    # -- PTY -----------------------------------------------------------------------------

    def supports_pty(self) -> bool:
        return True

    async def _script_available(self) -> bool:
        if self._has_script is None:
            r = await self.sandbox.exec(["sh", "-c", "command -v script"])
            self._has_script = r.returncode == 0
        return self._has_script

    async def pty_exec_start(
        self,
        *command: str | Path,
        timeout: float | None = None,
        shell: bool | list[str] = True,
        user: str | User | None = None,
        tty: bool = False,
        yield_time_s: float | None = None,
        max_output_tokens: int | None = None,
    ) -> PtyExecUpdate:
        _ = timeout  # as UnixLocal: a PTY session lives until it exits or is terminated
        name = self._check_user(user)
        argv = self._prepare_exec_command(*command, shell=shell, user=None)
        if tty:
            if not await self._script_available():
                raise ExecTransportError(
                    command=argv,
                    context={"reason": "tty_unavailable",
                             "detail": "util-linux `script` is not in the jail"})
            # The guard unwraps `script -c` like `sh -c`: a blocked command comes back from
            # spawn as PermissionError (exit 126 below).
            inner = f"stty rows {_TTY_ROWS} cols {_TTY_COLS} 2>/dev/null; exec {shlex.join(argv)}"
            argv = ["script", "-qfec", inner, "/dev/null"]
        try:
            process = await self.sandbox.spawn(argv, env=await self._env(), user=name)
        except PermissionError as e:
            # The guard blocked it (recorded already), or argv[0] is not executable: a
            # finished command with exit 126, as exec() reports it, not a broken transport.
            return PtyExecUpdate(process_id=None, output=str(e).encode(), exit_code=126,
                                 original_token_count=None)
        except Exception as e:
            raise ExecTransportError(command=argv, cause=e) from e
        if not tty:
            process.close_stdin()
        entry = _PtyEntry(process=process, tty=tty)
        entry.pump_tasks = [asyncio.create_task(_pump(entry, process.stdout)),
                            asyncio.create_task(_pump(entry, process.stderr))]
        entry.wait_task = asyncio.create_task(_watch_exit(entry))

        async with self._pty_lock:
            process_id = allocate_pty_process_id(self._reserved_pty_process_ids)
            self._reserved_pty_process_ids.add(process_id)
            pruned = self._prune_pty_processes_if_needed()
            self._pty_processes[process_id] = entry
            count = len(self._pty_processes)
        if pruned is not None:
            await _terminate(pruned)
        if count >= PTY_PROCESSES_WARNING:
            logger.warning("PTY process count reached warning threshold: %s active", count)

        yield_time_ms = 10_000 if yield_time_s is None else int(yield_time_s * 1000)
        output, tokens, closed = await _collect(
            entry, clamp_pty_yield_time_ms(yield_time_ms), max_output_tokens)
        return await self._finalize_pty_update(process_id, entry, output, tokens, closed)

    async def pty_write_stdin(
        self,
        *,
        session_id: int,
        chars: str,
        yield_time_s: float | None = None,
        max_output_tokens: int | None = None,
    ) -> PtyExecUpdate:
        async with self._pty_lock:
            entry = self._resolve_pty_session_entry(
                pty_processes=self._pty_processes, session_id=session_id)
        if chars:
            if not entry.tty:
                raise RuntimeError("stdin is not available for this process")
            with suppress(BrokenPipeError, ConnectionResetError, OSError):
                await entry.process.write(chars.encode("utf-8"))
            await asyncio.sleep(0.1)
        yield_time_ms = 250 if yield_time_s is None else int(yield_time_s * 1000)
        output, tokens, closed = await _collect(
            entry,
            resolve_pty_write_yield_time_ms(yield_time_ms=yield_time_ms, input_empty=chars == ""),
            max_output_tokens)
        entry.last_used = time.monotonic()
        return await self._finalize_pty_update(session_id, entry, output, tokens, closed)

    async def pty_terminate_all(self) -> None:
        async with self._pty_lock:
            entries = list(self._pty_processes.values())
            self._pty_processes.clear()
            self._reserved_pty_process_ids.clear()
        for entry in entries:
            await _terminate(entry)

    async def _finalize_pty_update(
        self, process_id: int, entry: _PtyEntry, output: bytes, tokens: int | None,
        closed: bool,
    ) -> PtyExecUpdate:
        exit_code = entry.exit_code if closed else None
        live_id: int | None = process_id
        if exit_code is not None:
            async with self._pty_lock:
                removed = self._pty_processes.pop(process_id, None)
                self._reserved_pty_process_ids.discard(process_id)
            if removed is not None:
                await _terminate(removed)
            live_id = None
        return PtyExecUpdate(process_id=live_id, output=output, exit_code=exit_code,
                             original_token_count=tokens)

    def _prune_pty_processes_if_needed(self) -> _PtyEntry | None:
        if len(self._pty_processes) < PTY_PROCESSES_MAX:
            return None
        meta = [(pid, e.last_used, e.output_closed.is_set())
                for pid, e in self._pty_processes.items()]
        process_id = process_id_to_prune_from_meta(meta)
        if process_id is None:
            return None
        self._reserved_pty_process_ids.discard(process_id)
        return self._pty_processes.pop(process_id, None)


async def _pump(entry: _PtyEntry, stream: Any) -> None:
    async for chunk in stream:
        async with entry.output_lock:
            entry.output_chunks.append(chunk)
        entry.output_notify.set()


async def _watch_exit(entry: _PtyEntry) -> None:
    try:
        result = await entry.process.wait()
        entry.exit_code = result.returncode
    except ExecTimeout as e:
        entry.exit_code = e.result.returncode
    except PermissionError:
        entry.exit_code = 126
    except Exception:
        logger.exception("PTY process wait failed")
        entry.exit_code = -1
    finally:
        if entry.pump_tasks:
            await asyncio.gather(*entry.pump_tasks, return_exceptions=True)
        if entry.exit_code is None:
            entry.exit_code = -1
        entry.output_closed.set()
        entry.output_notify.set()


async def _collect(entry: _PtyEntry, yield_time_ms: int, max_output_tokens: int | None
                   ) -> tuple[bytes, int | None, bool]:
    return await collect_pty_output(
        output_chunks=entry.output_chunks, output_lock=entry.output_lock,
        output_notify=entry.output_notify, is_done=entry.output_closed.is_set,
        yield_time_ms=yield_time_ms, max_output_tokens=max_output_tokens)


async def _terminate(entry: _PtyEntry) -> None:
    """Kill the process tree and let its wait record the exec (bounded)."""
    if not entry.output_closed.is_set():
        with suppress(ProcessLookupError, OSError):
            entry.process.kill()
    if entry.wait_task is not None:
        with suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(entry.wait_task), _TERMINATE_GRACE_S)
    for task in entry.pump_tasks:
        task.cancel()
    entry.output_closed.set()
    entry.output_notify.set()


def _filter_workspace_tar(data: bytes, root: str, skip: set[Path]) -> bytes:
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


def _refuse_unsupported(manifest: Manifest) -> None:
    if manifest.users or manifest.groups:
        raise ValueError(
            "FirejailSandboxSession does not support manifest users or groups: the jail has "
            "no root to create them; every command runs as the jail's one agent user")
    grant = next((g for g in manifest.extra_path_grants if g.host_path is not None), None)
    if grant is not None:
        raise ValueError(
            f"FirejailSandboxClient does not support sandbox path grant host_path for "
            f"{grant.path!r}: the jail sees only its own filesystem view")


class FirejailSandboxClient(BaseSandboxClient[FirejailSandboxClientOptions | None]):
    """Sessions confined in a firejail jail (see the module docstring): the confined
    counterpart of the SDK's `UnixLocalSandboxClient`, which on Linux adds none."""

    backend_id = BACKEND_ID
    supports_default_options = True

    def __init__(
        self,
        *,
        instrumentation: Instrumentation | None = None,
        dependencies: Dependencies | None = None,
        store: Store | None = None,
    ) -> None:
        self._instrumentation = instrumentation if instrumentation is not None else (
            Instrumentation())
        self._dependencies = dependencies
        self._store = store
        self.sandbox_ids: list[str] = []
        """The ids of the jails this client started, in order: each one's record is
        `sandbox.Store().commands(id)`."""

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: FirejailSandboxClientOptions | None = None,
    ) -> SandboxSession:
        resolved = options if options is not None else FirejailSandboxClientOptions()
        manifest = manifest if manifest is not None else Manifest()
        _refuse_unsupported(manifest)
        self._validate_manifest_for_create(manifest)
        # In an image the workspace is always a fresh one (the root is a path inside).
        owned = manifest.root == _DEFAULT_MANIFEST_ROOT or resolved.image is not None
        manifest = manifest.model_copy(deep=True)
        session_id = uuid.uuid4()
        state = FirejailSandboxSessionState(
            session_id=session_id,
            manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            workspace_root_owned=owned,
            options=resolved,
        )
        inner = FirejailSandboxSession(state=state, store=self._store, started=self.sandbox_ids)
        await inner._start_jail()  # as UnixLocal makes its root here: the path is known now
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """End the jail (idempotent): its processes die, an owned workspace is removed."""
        inner = session._inner
        if not isinstance(inner, FirejailSandboxSession):
            raise TypeError("FirejailSandboxClient.delete expects a FirejailSandboxSession")
        await inner.pty_terminate_all()
        await inner._shutdown_backend()
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        if not isinstance(state, FirejailSandboxSessionState):
            raise TypeError("FirejailSandboxClient.resume expects a FirejailSandboxSessionState")
        state.assert_path_grants_rebound()
        _refuse_unsupported(state.manifest)
        inner = FirejailSandboxSession.from_state(state, store=self._store,
                                                  started=self.sandbox_ids)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, FirejailSandboxSessionState)
