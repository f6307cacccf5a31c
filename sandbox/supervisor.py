"""The process-wide owner of live sessions: a session's teardown is waited for.

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
from typing import Any, Protocol

log = logging.getLogger("sandbox")


class Tracked(Protocol):
    """What the supervisor needs of a live session (a `Session`): its id, and a close
    that waits for its teardown."""

    @property
    def id(self) -> str: ...

    def close(self) -> None: ...


_live: dict[str, Tracked] = {}
_lock = threading.Lock()


def track(session: Tracked) -> None:
    with _lock:
        if not _live:
            _more_fds()
        _live[session.id] = session


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


def forget(session: Tracked) -> None:
    with _lock:
        _live.pop(session.id, None)


def live() -> list[Tracked]:
    with _lock:
        return list(_live.values())


_services: list[tuple[str, Callable[[], None]]] = []


def service(name: str, stop: Callable[[], None]) -> None:
    """Register a process-wide service (kill watcher, exec monitor, sampler, honeytoken
    watcher, GPU monitor): stopped and joined at exit, after every session is closed."""
    with _lock:
        _services.append((name, stop))


def stop_services() -> None:
    with _lock:
        todo, _services[:] = list(_services), []
    for name, stop in reversed(todo):
        try:
            stop()
        except Exception:
            log.exception("sandbox: stopping %s failed", name)


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
    """At interpreter exit: close (and wait for) every session nobody closed, then stop
    the services they used."""
    for session in live():
        try:
            session.close()
        except Exception:
            log.exception("sandbox: closing session %s at exit failed", session.id)
    stop_services()
