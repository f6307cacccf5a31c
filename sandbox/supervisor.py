"""The process-wide owner of live sessions and of everything they share.

One `Supervisor` per process (`current()`) owns: the live sessions (a teardown is waited
for), the services they share, each built once on first use and stopped after the
sessions (exec monitor, resource sampler, honeytoken watcher, GPU monitors, kill
watcher), the sync API's event-loop thread and the async API's executors. No module
keeps such a thing in a global of its own; a test can make a fresh owner with
`use(Supervisor())`.

Red-team M6: guard and operator kills tore sessions down on daemon threads, and `sandbox
run` or an API script exited first, leaving cgroups, namespaces and decoy homes behind.
Here:
- kills run on non-daemon threads (`spawn`): the interpreter joins them before it exits;
- every live session is tracked; at interpreter exit the ones nobody closed are closed
  (and waited for) by an atexit handler;
- `Session.close()`/`kill()` called while another thread is already ending the session
  wait for that teardown instead of returning early (see `Session._finish`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, cast

log = logging.getLogger("sandbox")
T = TypeVar("T")


class Tracked(Protocol):
    """What the supervisor needs of a live session (a `Session`): its id, and a close
    that waits for its teardown."""

    @property
    def id(self) -> str: ...

    def close(self) -> None: ...


class Supervisor:
    """The owner of one process's sessions and shared services (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._making = threading.RLock()  # a service's factory may ask for another
        self._live: dict[str, Tracked] = {}
        self._shared: dict[str, Any] = {}
        self._stops: list[tuple[str, Callable[[], None]]] = []

    # -- sessions -------------------------------------------------------------------------

    def track(self, session: Tracked) -> None:
        with self._lock:
            if not self._live:
                _more_fds()
            self._live[session.id] = session

    def forget(self, session: Tracked) -> None:
        with self._lock:
            self._live.pop(session.id, None)

    def live(self) -> list[Tracked]:
        with self._lock:
            return list(self._live.values())

    # -- shared services ------------------------------------------------------------------

    def shared(self, name: str, make: Callable[[], T],
               stop: Callable[[T], None] | None = None) -> T:
        """The process's one `name`, made by `make` on first use; `stop(it)` runs at
        `close`, after every session (in the reverse order of making)."""
        with self._lock:
            if name in self._shared:
                return cast(T, self._shared[name])
        with self._making:
            with self._lock:
                if name in self._shared:
                    return cast(T, self._shared[name])
            made = make()
            with self._lock:
                self._shared[name] = made
                if stop is not None:
                    self._stops.append((name, lambda: stop(made)))
            return made

    def drop(self, name: str) -> None:
        """Forget a shared thing that ended on its own (a closed loop): the next use
        makes a new one."""
        with self._lock:
            self._shared.pop(name, None)

    def executor(self, name: str, workers: int) -> ThreadPoolExecutor:
        """A thread pool of the process (threads are made on demand)."""
        return self.shared(f"executor {name}", lambda: ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"sandbox-{name}"),
            lambda pool: pool.shutdown(wait=False))

    def service(self, name: str, stop: Callable[[], None]) -> None:
        """Register the stop of a service made elsewhere (stopped and joined at exit)."""
        with self._lock:
            self._stops.append((name, stop))

    def stop_services(self) -> None:
        with self._lock:
            todo, self._stops = self._stops, []
            self._shared.clear()
        for name, stop in reversed(todo):
            try:
                stop()
            except Exception:
                log.exception("sandbox: stopping %s failed", name)

    def close(self) -> None:
        """Close (and wait for) every session nobody closed, then stop the services."""
        for session in self.live():
            try:
                session.close()
            except Exception:
                log.exception("sandbox: closing session %s at exit failed", session.id)
        self.stop_services()


def _more_fds() -> None:
    """Each live sandbox holds ~6 fds here and each exec in flight 4 more: the common
    soft limit of 1024 runs out at ~165 sandboxes. Raise it to the hard limit (the jails
    get the profile's own RLIMIT_NOFILE from their launch)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_current = Supervisor()


def current() -> Supervisor:
    """This process's supervisor."""
    return _current


def use(sup: Supervisor) -> Supervisor:
    """Make `sup` the process's supervisor (tests); the one it replaces, returned, is the
    caller's to close."""
    global _current
    old, _current = _current, sup
    return old


# The module's functions: the current supervisor's, for the many callers that need one.
def track(session: Tracked) -> None:
    current().track(session)


def forget(session: Tracked) -> None:
    current().forget(session)


def live() -> list[Tracked]:
    return current().live()


def service(name: str, stop: Callable[[], None]) -> None:
    current().service(name, stop)


def stop_services() -> None:
    current().stop_services()


def spawn(target: Callable[..., Any], *args: Any, name: str = "sandbox-teardown") -> None:
    """Run `target` on a thread the interpreter waits for at exit (never a daemon)."""
    def guarded() -> None:
        try:
            target(*args)
        except Exception:  # a failed kill is logged, never silent
            log.exception("sandbox: %s failed", name)

    threading.Thread(target=guarded, name=name, daemon=False).start()


@atexit.register
def _close_all() -> None:
    """At interpreter exit: the current supervisor closes what it owns."""
    current().close()
