"""The one exception tree of the runtime.

    SandboxError
    ├── ProfileError(SandboxError, ValueError)      bad TOML, unknown key, wrong type
    ├── SetupError(SandboxError, RuntimeError)      firejail/nftables/user cannot be set up
    │   └── DependencyMissing(SetupError)           a program or package is not installed
    ├── SessionClosed(SandboxError, RuntimeError)   the session ended (killed, exited, failed)
    ├── CommandTimeout(SandboxError, TimeoutError)  raised only when asked (check=True)
    ├── CommandBlocked(SandboxError, PermissionError) raised only when asked (check=True)
    ├── StoreError(SandboxError, RuntimeError)      the event store cannot be opened/written
    └── NotFound(SandboxError, LookupError)         unknown session id or profile name

Every message says what to do next, because the person reading it is usually an
operator in the middle of an agent run.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error this package raises on purpose."""


class ProfileError(SandboxError, ValueError):
    """A profile file cannot be read, parsed or validated."""


class SetupError(SandboxError, RuntimeError):
    """The session cannot be set up as the profile asks; it does not start (fail closed)."""


class DependencyMissing(SetupError):
    """A required program or library is missing; the message names the install command."""


class SessionClosed(SandboxError, RuntimeError):
    """The session is no longer running."""


class CommandTimeout(SandboxError, TimeoutError):
    """A command ran past its timeout (raised only when the caller asks for it)."""


class CommandBlocked(SandboxError, PermissionError):
    """A guard rule refused to run a command (raised only when the caller asks for it)."""


class StoreError(SandboxError, RuntimeError):
    """The event store cannot be opened or written."""


class NotFound(SandboxError, LookupError):
    """An unknown session id or profile name."""
