"""The Deep Agents backend over one jail (`RingfenceSandbox`, a deepagents
`BaseSandbox`): `execute`, `upload_files` and `download_files` in the sandbox, on which
deepagents builds its file tools. See `deepagents` for the provider and the whole story.

Below `deepagents` (the provider).
"""

from __future__ import annotations

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

from ..doors import loop
from ..doors.api import Sandbox
from ..doors.execute import ExecTimeout
from ..doors.files import OutputLimitExceeded
from ..result import ExecResult

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
