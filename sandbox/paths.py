"""Where the runtime keeps its state, and where the shipped profiles live.

Root uses a system directory (`/var/lib/sandbox`) so every operator on the host sees
every session; other users use `$XDG_STATE_HOME/sandbox` (default
`~/.local/state/sandbox`). `SANDBOX_STATE_DIR` overrides both (tests, multi-tenant
hosts). The state dir is hidden from every jail.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

SYSTEM_STATE_DIR = Path("/var/lib/sandbox")
SYSTEM_PROFILE_DIR = Path("/etc/sandbox/profiles")


def state_dir() -> Path:
    """The directory that holds the store; created 0700 on first use."""
    env = os.environ.get("SANDBOX_STATE_DIR")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = SYSTEM_STATE_DIR
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path = Path(base) / "sandbox"
    # 0700: the store holds every command's output, which can contain secrets.
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path.resolve()


def image_dir() -> Path:
    """The image store (`sandbox image`): $SANDBOX_IMAGE_DIR, else the state dir's
    images/. Shared read-only by every sandbox on the host, so it may live on a disk of
    its own; created 0700 (the rootfs are served through overlay mounts, not paths)."""
    env = os.environ.get("SANDBOX_IMAGE_DIR")
    path = Path(env) if env else state_dir() / "images"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path.resolve()


def db_path() -> Path:
    """The SQLite file of the event store."""
    env = os.environ.get("SANDBOX_DB")
    return Path(env) if env else state_dir() / "sandbox.db"


def store_url() -> str | None:
    """The event store the operator chose (`--store URL` / `SANDBOX_STORE`): a
    `postgresql://` URL, or a SQLite file (a path or `sqlite:///path`); None: the default
    SQLite file under the state dir."""
    return os.environ.get("SANDBOX_STORE") or None


def host_id() -> str:
    """The name this host writes into every row of the store: `SANDBOX_HOST_ID` when set
    (several "hosts" on one machine, a stable name behind DHCP), else the hostname."""
    return os.environ.get("SANDBOX_HOST_ID") or socket.gethostname()


@contextlib.contextmanager
def acting_as_host(name: str) -> Iterator[None]:
    """This process is host `name` meanwhile (for the Stores it opens then): how tests
    and the bench play several hosts of one fleet on one machine."""
    old = os.environ.get("SANDBOX_HOST_ID")
    os.environ["SANDBOX_HOST_ID"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SANDBOX_HOST_ID", None)
        else:
            os.environ["SANDBOX_HOST_ID"] = old


def user_profile_dir() -> Path:
    """User profiles: `$XDG_CONFIG_HOME/sandbox/profiles` (root: /etc/sandbox/profiles)."""
    env = os.environ.get("SANDBOX_PROFILE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_PROFILE_DIR
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sandbox" / "profiles"


def builtin_profile_dir() -> Path:
    """The profiles shipped with the package (the top-level `profiles/` folder)."""
    from importlib import resources

    try:
        return Path(str(resources.files("sandbox.profiles_builtin")))
    except ModuleNotFoundError:  # running from a source tree without install
        return Path(__file__).resolve().parent.parent / "profiles"
