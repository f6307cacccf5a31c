"""sandbox: a terminal sandbox runtime with built-in guardrails for AI agents.

Public API: `Sandbox(profile, workdir, env).run(cmd) -> CommandResult`, `AsyncSandbox`,
`WarmPool`, the exception tree rooted at `SandboxError`, profiles (`load_profile`) and
the event `Store`. The packages below say what they own: `doors` (the API), `jail`,
`record`, `monitor`, `network`, `guard`, `gpu`, `parts`, `ray`, `adapters`, `cli`.

Names are imported on first use (PEP 562): `sandbox kill` and other short CLI calls
should not pay for pexpect, psutil and the guard packs they never touch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .doors.aio import AsyncSandbox
    from .doors.api import Sandbox
    from .doors.execute import ExecTimeout
    from .doors.pool import WarmPool
    from .events import ListEmit
    from .jail.profile import Profile
    from .jail.profile import load as load_profile
    from .record import Store
    from .result import CommandResult, ExecResult

__version__ = "0.1.0"

_LAZY = {
    "Sandbox": ("doors.api", "Sandbox"),
    "AsyncSandbox": ("doors.aio", "AsyncSandbox"),
    "ListEmit": ("events", "ListEmit"),
    "ExecResult": ("result", "ExecResult"),
    "ExecTimeout": ("doors.execute", "ExecTimeout"),
    "Profile": ("jail.profile", "Profile"),
    "load_profile": ("jail.profile", "load"),
    "CommandResult": ("result", "CommandResult"),
    "Store": ("record", "Store"),
    "WarmPool": ("doors.pool", "WarmPool"),
}

__all__ = [
    "AsyncSandbox",
    "CommandBlocked",
    "CommandResult",
    "CommandTimeout",
    "DependencyMissing",
    "ExecResult",
    "ExecTimeout",
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
    "WarmPool",
    "__version__",
    "load_profile",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
