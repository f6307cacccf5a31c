"""Optional parts of a session (limits, process monitor, network, GPU, guard).

Each part is a small class with the same hook methods as `Part`; `Hooks` calls them in
order at fixed points of the session's lifecycle. A part that cannot be set up as the
profile asks raises SetupError from `before_jail`, and the session does not start.

A part knows its session only as a `PartSession`: what the parts use of a `Session`,
described here, below the session, so that the session imports its parts and never the
other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ..jail.session_view import JailHooks, JailSession

if TYPE_CHECKING:
    from ..guard import Engine
    from ..jail.cgroups import SessionCgroup
    from ..jail.firejail import JailSpec
    from ..jail.profile import Profile
    from ..jail.users import Placement
    from ..monitor.proctree import ProcInfo
    from ..record import Store
    from ..result import CommandResult


class LimitsApi(Protocol):
    """What the rest of a session uses of the limits part (`parts.limits`)."""

    @property
    def cgroup(self) -> SessionCgroup | None: ...

    def command_finished(self, command: str, exit_code: int | None, output: str,
                         truncated: bool, output_bytes: int) -> None: ...

    def final_sample(self) -> None: ...


class ProcsApi(Protocol):
    """What the rest of a session uses of the process monitor part (`parts.procs`)."""

    def on_exec(self, fn: Callable[[ProcInfo], None],
                urgent: frozenset[str] = frozenset()) -> None: ...

    def joining(self, delta: int, pid: int | None = None) -> None: ...

    def settle(self) -> None: ...

    def known_pids(self) -> set[int]: ...

    def release(self) -> None: ...


class DiskApi(Protocol):
    """What the session uses of the disk part (`parts.disk`)."""

    def check(self) -> None: ...


class GuardApi(Protocol):
    """What the wrapper uses of the guard part (`parts.guard`)."""

    @property
    def engine(self) -> Engine: ...


class PartHooks(JailHooks, Protocol):
    """What a part asks of its session's `Hooks`: its neighbour parts, each by what it
    offers (none: the profile or the host has it off), and a list of its own alerts
    (see `Hooks.own_alerts`)."""

    @property
    def limits(self) -> LimitsApi | None: ...

    @property
    def procs(self) -> ProcsApi | None: ...

    def own_alerts(self) -> AbstractContextManager[list[dict[str, Any]]]: ...


class PartSession(JailSession, Protocol):
    """What the parts (and `Hooks`) use of their session; a `Session` is one. The jail's
    part of it (id, workspace, spec, env, launch, events) is `JailSession`'s."""

    gpu_part_backend: Any  # set by the GPU part: the backend it resolved (or None)

    @property
    def kind(self) -> str: ...

    @property
    def profile(self) -> Profile: ...

    @property
    def store(self) -> Store: ...

    @property
    def placement(self) -> Placement | None: ...

    @property
    def extra_env(self) -> dict[str, str]: ...

    @property
    def gpu_backend(self) -> Any: ...

    @property
    def hooks(self) -> PartHooks: ...

    @property
    def image(self) -> Any: ...  # images.attach.Attached while the jail lives, or None

    def add_resource(self, name: str, value: Any) -> None: ...

    def kill(self, reason: str = "killed") -> None: ...


class Part:
    """A no-op part; subclasses override what they need."""

    name = "part"

    def __init__(self, session: PartSession) -> None:
        self.session = session

    def before_jail(self, spec: JailSpec) -> JailSpec:
        return spec

    def cgroup_files(self) -> Sequence[bytes]:
        """Files the jail's child writes "0" to before it execs (a cgroup's)."""
        return ()

    def jail_started(self, jail_pid: int) -> None:
        pass

    def jail_ready(self) -> None:
        """The session runs: its jail can be joined (its shell answered)."""

    def check_command(self, text: str) -> CommandResult | None:
        return None

    def on_event(self, row: dict[str, Any]) -> None:
        pass

    def teardown(self) -> None:
        pass
