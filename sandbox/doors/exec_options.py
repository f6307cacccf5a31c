"""The options of `exec` and `spawn`, written once for every door that takes them
(`Sandbox`, `AsyncSandbox`, `execute.prepare`): a keyword added here is accepted, typed
and documented everywhere at once."""

from __future__ import annotations

from typing import TypedDict


class ExecOptions(TypedDict, total=False):
    """Keyword options of `exec(cmd, **options)` and `spawn(cmd, **options)`.

    input: fed to stdin in full (str is UTF-8); none: an empty stdin.
    cwd: where it runs; a relative path is under the workspace.
    env: added to (or overriding) the jail's environment; checked like the profile's.
    timeout: seconds; then the whole process tree is killed and `ExecTimeout` (a
        `TimeoutError`) is raised with the partial output.
    max_output: bytes of stdout and of stderr kept in the result (head and tail); the
        record keeps the profile's `max_output_bytes`.
    user: only the sandbox's agent user may be named (root never).
    """

    input: str | bytes | None
    cwd: str | None
    env: dict[str, str] | None
    timeout: float | None
    max_output: int
    user: str | None
