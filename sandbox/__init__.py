"""sandbox: a terminal sandbox runtime with built-in guardrails for AI agents.

Public API: `Sandbox(profile, workdir, env).run(cmd) -> CommandResult`, the exception
tree rooted at `SandboxError`, profiles (`load_profile`) and the event `Store`.
"""

from __future__ import annotations

from .api import Sandbox
from .errors import (
    CommandBlocked,
    CommandTimeout,
    DependencyMissing,
    NotFound,
    ProfileError,
    SandboxError,
    SessionClosed,
    SetupError,
    StoreError,
)
from .events import ListEmit
from .profile import Profile
from .profile import load as load_profile
from .result import CommandResult
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "CommandBlocked",
    "CommandResult",
    "CommandTimeout",
    "DependencyMissing",
    "ListEmit",
    "NotFound",
    "Profile",
    "ProfileError",
    "Sandbox",
    "SandboxError",
    "SessionClosed",
    "SetupError",
    "Store",
    "StoreError",
    "__version__",
    "load_profile",
]
