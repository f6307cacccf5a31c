"""The Python API for agent frameworks.

    with Sandbox(profile="default", workdir=path) as sb:
        r = sb.run("pytest -q", timeout=600)
        r.exit_code, r.output, r.duration, r.timed_out, r.alerts

Many sandboxes may live in one process; each runs one command at a time and is safe to
share between threads (commands queue on a lock).
"""

from __future__ import annotations

import os
from typing import Any

from .execute import MAX_OUTPUT, read_file, run_exec, write_file
from .profile import Profile
from .result import CommandResult, ExecResult
from .session import Session
from .store import Store


class Sandbox:
    """A jailed, recorded shell. Start with `with` or `.start()`; end with `.close()`."""

    def __init__(
        self,
        profile: Profile | str = "default",
        workdir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        *,
        store: Store | None = None,
        gpu_backend: Any = None,
    ) -> None:
        """`gpu_backend` replaces NVML (e.g. `sandbox.gpu.FakeNvml` in your own tests)."""
        self._session = Session(profile, workdir=workdir, env=env, kind="api", store=store)
        self._session.gpu_backend = gpu_backend

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def state(self) -> str:
        return self._session.state

    @property
    def profile(self) -> Profile:
        return self._session.profile

    def start(self) -> Sandbox:
        self._session.start()
        return self

    def run(self, command: str, timeout: float | None = None, *, check: bool = False
            ) -> CommandResult:
        """Run `command` in the sandbox's bash (state such as `cd` and variables persist).

        Never raises for a non-zero exit or a timeout unless `check=True`; raises
        SessionClosed when the session has ended (killed, exited).
        """
        return self._session.run(command, timeout, check=check)

    def exec(
        self,
        cmd: list[str] | str,
        *,
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
        user: str | None = None,
    ) -> ExecResult:
        """Run a fresh process in the live jail: argv (or a `sh -c` string), stdin fed in
        full, stdout and stderr apart, the exit status as the supervisor saw it (128+N
        for signal N; 127 for a missing program). A relative `cwd` is under the
        workspace. Raises `ExecTimeout` (a `TimeoutError`) with the partial output when
        `timeout` passes; the whole process tree is killed first. A non-executable
        target raises PermissionError; `user` may only name the sandbox's agent user."""
        return run_exec(self._session, cmd, input=input, cwd=cwd, env=env, timeout=timeout,
                        max_output=max_output, user=user)

    def read_file(self, path: str, text: bool = True, *, max_bytes: int = MAX_OUTPUT
                  ) -> str | bytes:
        """A file as the agent sees it (hidden paths stay hidden). Raises
        FileNotFoundError, PermissionError, IsADirectoryError naming the path."""
        data = read_file(self._session, path, max_bytes=max_bytes)
        return data.decode("utf-8", errors="replace") if text else data

    def write_file(self, path: str, data: str | bytes) -> None:
        """Create or replace a file as the agent user (parents created, bytes exact)."""
        write_file(self._session, path, data)

    def kill(self, reason: str = "killed by API") -> None:
        self._session.kill(reason)

    def close(self) -> None:
        self._session.close()

    def head_hash(self) -> str:
        """The session's hash-chain head (send it off-box to make rewrites detectable)."""
        return self._session.head_hash()

    def report(self) -> dict[str, Any]:
        """The per-episode verdict (see `sandbox export --format report`)."""
        from .export import report

        return report(self._session.store, self.id)

    def __enter__(self) -> Sandbox:
        return self.start() if self._session.state == "new" else self

    def __exit__(self, *exc: object) -> None:
        self.close()
