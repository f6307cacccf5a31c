"""Is allowlist networking available here? Rows that need it ask, and print the reason if not.

The check is strict on purpose: an allowlist session that starts without its own network
namespace would share the host's network (the jail gets no `--net` flag in allowlist mode),
so a number from it would measure the wrong thing.
"""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path

from sandbox import Sandbox

from .boxes import profile_file
from .core import Ctx

# Local-only allowlist: a reserved .test name (never resolved outside) and the bench's own
# TEST-NET server; no DNS upstream is ever asked.
ALLOWLIST_PROFILE = """\
description = "bench: allowlist mode with a local-only allowlist"
extends = "default"

[network]
mode = "allowlist"
allow = ["bench.test:443", "{server}"]
dns = false
"""


def network_problem() -> str | None:
    """None when sandbox.network has code in it and we are root; else why not."""
    if os.geteuid() != 0:
        return "allowlist mode needs root"
    try:
        import sandbox.network as net
    except ImportError as e:
        return f"sandbox.network does not import: {e}"
    if not list(pkgutil.iter_modules(list(net.__path__))):
        return "allowlist networking not built yet (sandbox/network/ is empty)"
    return None


def allowlist_profile(ctx: Ctx, server: str = "198.51.100.2:5201") -> Path:
    return profile_file(ctx, "bench-allowlist", ALLOWLIST_PROFILE.format(server=server))


def check_isolated(sb: Sandbox) -> str | None:
    """None when the started allowlist session really has its own network namespace."""
    try:
        netns = sb._session.spec().netns
    except AttributeError:
        netns = None
    if not netns:
        return ("allowlist session started without its own network namespace "
                "(network not wired into sessions yet)")
    return None
