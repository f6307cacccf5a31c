"""One jail as an OpenAI Agents SDK session (`FirejailSandboxSession`), mirroring
`UnixLocalSandboxSession` method by method: lifecycle, exec, file operations and PTY
processes, each a process in the jail and a line in its record. See `openai_agents` for
the mapping onto the SDK's contract.

Below `openai_agents` (the client); the options and state, the manifest and workspace
archive, and the PTY bookkeeping live in `openai_options`, `openai_workspace` and
`openai_pty`.
"""

from __future__ import annotations

import asyncio
import io
from contextlib import suppress
from pathlib import Path

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
from agents.sandbox.session.pty_types import (
    PtyExecUpdate,
    clamp_pty_yield_time_ms,
    resolve_pty_write_yield_time_ms,
)
from agents.sandbox.session.workspace_payloads import coerce_write_payload
from agents.sandbox.types import ExecResult, User

from ..doors import files as _files
from ..doors.aio import AsyncSandbox
from ..doors.execute import ExecTimeout
from ..errors import NotFound, SessionClosed
from ..record import Store
from .openai_options import BACKEND_ID, FirejailSandboxSessionState, new_jail
from .openai_pty import PtyTable, tty_argv, watch
from .openai_workspace import hydrate, persist, refuse_unsupported

_READ_LIMIT = _files.MAX_TRANSFER


def _user_name(user: str | User | None) -> str | None:
    return user.name if isinstance(user, User) else user


class FirejailSandboxSession(BaseSandboxSession):
    """One jail as an SDK session: every exec, file op and PTY is a process in it and a
    line in its record. Unlike UnixLocal on Linux, this session is confined (see the
    docstring of `sandbox.adapters.openai_agents`)."""

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
        self._ptys = PtyTable()
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
        sb = new_jail(self.state, self._store)
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
        refuse_unsupported(self.state.manifest)
        return await super()._apply_manifest(
            only_ephemeral=only_ephemeral, provision_accounts=provision_accounts)

    async def provision_manifest_accounts(self) -> None:
        refuse_unsupported(self.state.manifest)

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
        return await persist(self.sandbox, self.state.manifest.root,
                             self._persist_workspace_skip_relpaths())

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        await hydrate(self.sandbox, Path(self.state.manifest.root), data)

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
            argv = tty_argv(argv)
        try:
            process = await self.sandbox.spawn(argv, env=await self._env(), user=name)
        except PermissionError as e:
            # The guard blocked it (recorded already), or argv[0] is not executable: a
            # finished command with exit 126, as exec() reports it, not a broken transport.
            return PtyExecUpdate(process_id=None, output=str(e).encode(), exit_code=126,
                                 original_token_count=None)
        except Exception as e:
            raise ExecTransportError(command=argv, cause=e) from e
        entry = watch(process, tty)
        process_id = await self._ptys.add(entry)
        yield_time_ms = 10_000 if yield_time_s is None else int(yield_time_s * 1000)
        return await self._ptys.update(process_id, entry, clamp_pty_yield_time_ms(yield_time_ms),
                                       max_output_tokens)

    async def pty_write_stdin(
        self,
        *,
        session_id: int,
        chars: str,
        yield_time_s: float | None = None,
        max_output_tokens: int | None = None,
    ) -> PtyExecUpdate:
        entry = await self._ptys.get(session_id, self._resolve_pty_session_entry)
        if chars:
            if not entry.tty:
                raise RuntimeError("stdin is not available for this process")
            with suppress(BrokenPipeError, ConnectionResetError, OSError):
                await entry.process.write(chars.encode("utf-8"))
            await asyncio.sleep(0.1)
        yield_time_ms = 250 if yield_time_s is None else int(yield_time_s * 1000)
        return await self._ptys.update(
            session_id, entry,
            resolve_pty_write_yield_time_ms(yield_time_ms=yield_time_ms, input_empty=chars == ""),
            max_output_tokens, touch=True)

    async def pty_terminate_all(self) -> None:
        await self._ptys.terminate_all()
