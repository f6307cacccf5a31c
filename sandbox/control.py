"""The kill path shared by the CLI, the TUI and the API.

`sandbox kill ID` writes a control request into the store; the process that owns the
session sees it (one watcher thread per store and process polls every 25 ms) and ends
the jail. When the owner is dead, the requester ends the jail itself and cleans up
(same as gc). A watcher that cannot reach its store (a PostgreSQL store that went away)
for LOST_GRACE_S kills its sessions: a kill switch that cannot be reached fails closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from . import owners, supervisor
from .store import FINAL_STATES, Store, StoreUnavailable

log = logging.getLogger("sandbox")
POLL_S = 0.025  # kill requests are seen within 25 ms (goal: kill <= 200 ms)
LOST_GRACE_S = 2.0  # the store unreachable this long: the sessions it watches are killed


class ControlWatcher:
    """One thread per store with live sessions in this process: turns kill requests into
    calls on those sessions. Started by the first session of a store, stopped (and its
    store connection closed) when the last one ends, so nothing outlives its sessions."""

    _instances: dict[str, ControlWatcher] = {}
    _guard = threading.Lock()
    _registered = False

    def __init__(self, store: Store | str) -> None:
        # Its own connection: a poll never waits behind a session's writes.
        self.store = store.reopen() if isinstance(store, Store) else Store(store)
        self.sessions: dict[str, Callable[[str], None]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sandbox-control", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=2)

    @classmethod
    def watch(cls, store: Store | str, session_id: str, on_kill: Callable[[str], None]
              ) -> None:
        """Have `on_kill(reason)` called when a kill of `session_id` is requested (or its
        store cannot be reached). `store`: the session's Store, or a SQLite path."""
        key = store.key if isinstance(store, Store) else store
        with cls._guard:
            w = cls._instances.get(key)
            if w is None:
                w = cls._instances[key] = ControlWatcher(store)
                if not cls._registered:
                    cls._registered = True
                    supervisor.service("kill watcher", cls.stop_all)
            with w.lock:
                w.sessions[session_id] = on_kill

    @classmethod
    def unwatch(cls, store_key: str, session_id: str) -> None:
        """Stop watching `session_id` (`store_key`: its store's `key`)."""
        with cls._guard:
            w = cls._instances.get(store_key)
            if w is None:
                return
            with w.lock:
                w.sessions.pop(session_id, None)
                empty = not w.sessions
            if empty:
                del cls._instances[store_key]
                w._stop.set()  # its thread closes the store on its way out

    @classmethod
    def stop_all(cls) -> None:
        with cls._guard:
            watchers = list(cls._instances.values())
            cls._instances.clear()
        for w in watchers:
            w.stop()

    def _loop(self) -> None:
        try:
            self._poll()
        finally:
            self.store.close()

    def _poll(self) -> None:
        down_since: float | None = None
        while not self._stop.wait(POLL_S):
            with self.lock:
                ids = list(self.sessions)
            if not ids:
                continue
            try:
                pending = self.store.pending_kills(ids)
            except StoreUnavailable as e:  # the database is gone: fail closed, soon
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                if now - down_since >= LOST_GRACE_S:
                    self._kill_all(f"the event store is unreachable, so is its kill "
                                   f"switch: {e}")
                continue
            except Exception as e:  # a locked or busy store must not kill the watcher
                log.debug("sandbox: kill watcher poll: %s", e)
                continue
            down_since = None
            for session_id, requested_by in pending:
                with self.lock:
                    on_kill = self.sessions.pop(session_id, None)
                if on_kill is not None:
                    # Not a daemon: the process waits for this teardown before it exits.
                    supervisor.spawn(on_kill, f"killed by {requested_by}", name="sandbox-kill")


    def _kill_all(self, reason: str) -> None:
        with self.lock:
            doomed = list(self.sessions.values())
            self.sessions.clear()
        for on_kill in doomed:
            supervisor.spawn(on_kill, reason, name="sandbox-kill")


def kill_jail(jail_pid: int | None, jail_name: str | None) -> bool:
    """SIGKILL firejail's first process: its PID namespace, and every process in it, dies."""
    if not jail_pid:
        return False
    try:
        with open(f"/proc/{jail_pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    # Only kill what is really that jail: the pid may have been reused.
    if jail_name and f"--name={jail_name}".encode() not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(jail_pid, signal.SIGKILL)
        return True
    return False


def kill_session(store: Store, session_id: str, requested_by: str, wait_s: float = 5.0) -> str:
    """Kill one session from any process; returns its final state (or 'pending')."""
    from . import gc  # gc imports control; keep the cycle lazy

    session = store.get_session(session_id)
    if session["state"] in FINAL_STATES:
        return str(session["state"])
    store.request_kill(session["id"], requested_by)
    deadline = time.monotonic() + wait_s
    if store.elsewhere(session):
        # Another host owns it (a shared store): its watcher acts on the request; this
        # host can only wait (its jail and owner are not here to check or kill).
        while time.monotonic() < deadline:
            state = store.get_session(session["id"])["state"]
            if state in FINAL_STATES:
                return str(state)
            time.sleep(0.05)
        return "pending"
    owner_alive = owners.alive(session["owner_pid"], session["owner_start"])
    while owner_alive and time.monotonic() < deadline:
        state = store.get_session(session["id"])["state"]
        if state in FINAL_STATES:
            return str(state)
        time.sleep(0.01)
        owner_alive = owners.alive(session["owner_pid"], session["owner_start"])
    # The owner is gone (or stuck): end the jail ourselves.
    gc.reap(store, store.get_session(session["id"]), state="killed",
            reason=f"killed by {requested_by} (owner not responding)")
    return str(store.get_session(session["id"])["state"])
