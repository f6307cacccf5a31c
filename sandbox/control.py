"""The kill path shared by the CLI, the TUI and the API, and each host's heartbeat.

`sandbox kill ID` writes a control request into the store; the process that owns the
session sees it and ends the jail. One watcher thread per store and process does that:
with SQLite it polls `controls` every 25 ms; with PostgreSQL it LISTENs on the store's
kill channel (the request is announced with NOTIFY in the transaction that records it,
so the owner hears it the moment it is committed, from any host) and still polls, every
250 ms, in case a notification is missed (`SANDBOX_STORE_NOTIFY=0`: poll every 25 ms,
no LISTEN). When the owner is dead, a requester on the same host ends the jail itself
and cleans up (`reap.reap`, as gc does); on another host it can only wait for the
owner's host.

In a shared store the watcher also beats: it writes this process's row in `hosts`
every `beat_interval()` seconds while the process has live sessions, and a host none of
whose processes beat for `reap.host_timeout()` seconds is lost (`gc.mark_lost_hosts`:
any host's gc or session start marks its sessions failed). A session this process still
runs but the store says ended (marked lost while this process was stalled, or reaped by
a requester) is killed here too: the record and the jail never disagree for long.
A watcher that cannot reach its store (a PostgreSQL store that went away) for
LOST_GRACE_S kills its sessions: a kill switch that cannot be reached fails closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from . import owners, supervisor
from .reap import host_timeout, reap
from .record import FINAL_STATES, Store, open_store
from .record.api import ControlListener, StoreUnavailable

log = logging.getLogger("sandbox")
POLL_S = 0.025  # polling only: kill requests are seen within 25 ms (goal: kill <= 200 ms)
FALLBACK_POLL_S = 0.25  # with a LISTEN channel, polling only catches a missed notification
RELISTEN_S = 2.0  # a lost LISTEN connection is reopened this often (polling meanwhile)
LOST_GRACE_S = 2.0  # the store unreachable this long: the sessions it watches are killed


def beat_interval(timeout: float | None = None) -> float:
    """How often a process with live sessions beats: a quarter of the timeout, at most
    5 s (every row records its own interval; a host is judged lost only after the
    longer of the judge's timeout and 3 of its own beats)."""
    return max(0.1, min(5.0, (timeout or host_timeout()) / 4))


class ControlWatcher:
    """One thread per store with live sessions in this process: turns kill requests into
    calls on those sessions, and beats. Started by the first session of a store, stopped
    (and its store connection closed) when the last one ends, so nothing outlives its
    sessions."""

    _instances: dict[str, ControlWatcher] = {}
    _guard = threading.Lock()
    _registered = False

    def __init__(self, store: Store | str) -> None:
        # Its own connection: a poll never waits behind a session's writes.
        self.store = store.reopen() if isinstance(store, Store) else open_store(store)
        self.sessions: dict[str, Callable[[str], None]] = {}
        self.lock = threading.Lock()
        self.beat = beat_interval()
        self.listening = False  # whether a LISTEN channel is open now (tests, bench)
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
        listener: list[ControlListener | None] = [None]
        try:
            self._run(listener)
        finally:
            if listener[0] is not None:
                listener[0].close()
            self.store.close()

    def _listen(self) -> ControlListener | None:
        try:
            return self.store.listener()
        except Exception as e:  # no channel: polling still sees every request
            log.debug("sandbox: kill watcher: no LISTEN channel: %s", e)
            return None

    def _run(self, holder: list[ControlListener | None]) -> None:
        shared = self.store.shared
        pid, token = owners.me()
        down_since: float | None = None
        next_poll = next_beat = relisten = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if holder[0] is None and shared and now >= relisten:
                relisten = now + RELISTEN_S
                holder[0] = self._listen()
                self.listening = holder[0] is not None
            listener = holder[0]
            with self.lock:
                ids = list(self.sessions)
            if now >= next_poll:
                next_poll = now + (FALLBACK_POLL_S if listener is not None else POLL_S)
                if ids:
                    down_since = self._poll(ids, down_since)
            if shared and now >= next_beat:
                next_beat = now + self.beat
                self._beat(pid, token, ids)
            wake = min(next_poll, next_beat) if shared else next_poll
            wait = max(0.0, wake - time.monotonic())
            if listener is None:
                self._stop.wait(wait)
                continue
            try:
                heard = listener.wait(wait)
            except Exception as e:  # the channel broke: poll fast until it is back
                log.debug("sandbox: kill watcher: %s", e)
                listener.close()
                holder[0] = None
                self.listening = False
                next_poll = 0.0
                continue
            if heard:
                with self.lock:
                    mine = [i for i in dict.fromkeys(heard) if i in self.sessions]
                if mine:
                    down_since = self._poll(mine, down_since)

    def _poll(self, ids: list[str], down_since: float | None) -> float | None:
        """Act on the kill requests pending for `ids`; returns since when the store has
        been unreachable (None: it answered)."""
        try:
            pending = self.store.pending_kills(ids)
        except StoreUnavailable as e:  # the database is gone: fail closed, soon
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= LOST_GRACE_S:
                self._kill_all(f"the event store is unreachable, so is its kill "
                               f"switch: {e}")
            return down_since
        except Exception as e:  # a locked or busy store must not kill the watcher
            log.debug("sandbox: kill watcher poll: %s", e)
            return down_since
        for session_id, requested_by in pending:
            with self.lock:
                on_kill = self.sessions.pop(session_id, None)
            if on_kill is not None:
                # Not a daemon: the process waits for this teardown before it exits.
                supervisor.spawn(on_kill, f"killed by {requested_by}", name="sandbox-kill")
        return None

    def _beat(self, pid: int, token: str, ids: list[str]) -> None:
        try:
            self.store.heartbeat(pid, token, beat=self.beat, sessions=len(ids))
            ended = self.store.ended_among(ids)
        except Exception as e:  # the poll's fail-closed path handles a lost store
            log.debug("sandbox: heartbeat: %s", e)
            return
        for session_id, why in ended.items():
            with self.lock:
                on_kill = self.sessions.pop(session_id, None)
            if on_kill is not None:
                supervisor.spawn(on_kill, f"the store says it ended ({why})",
                                 name="sandbox-kill")

    def _kill_all(self, reason: str) -> None:
        with self.lock:
            doomed = list(self.sessions.values())
            self.sessions.clear()
        for on_kill in doomed:
            supervisor.spawn(on_kill, reason, name="sandbox-kill")


def kill_session(store: Store, session_id: str, requested_by: str, wait_s: float = 5.0) -> str:
    """Kill one session from any process; returns its final state (or 'pending')."""
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
            time.sleep(0.02)
        return "pending"
    owner_alive = owners.alive(session["owner_pid"], session["owner_start"])
    while owner_alive and time.monotonic() < deadline:
        state = store.get_session(session["id"])["state"]
        if state in FINAL_STATES:
            return str(state)
        time.sleep(0.01)
        owner_alive = owners.alive(session["owner_pid"], session["owner_start"])
    # The owner is gone (or stuck): end the jail ourselves.
    reap(store, store.get_session(session["id"]), state="killed",
         reason=f"killed by {requested_by} (owner not responding)")
    return str(store.get_session(session["id"])["state"])
