"""A lost connection fails closed: what PostgreSQL's store does when a session's record
cannot be written, and how the loss is written back once the database returns.

When a write of a session's record fails because the database is unreachable, `lost`
(1) writes the loss into the local SQLite store (the state dir's `sandbox.db`, hidden
from every jail): the session row, a `store.lost` event naming the database (no
password), the error and the last seq and head hash the database acknowledged, and the
session marked killed with the reason; (2) calls the session's `on_lost` handler, which
kills it. Nothing is buffered: what PostgreSQL did not acknowledge is never shown as
recorded. `replay` (run by gc) writes those ends into PostgreSQL once it is back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import supervisor
from ..errors import NotFound
from .api import StoreBackend
from .sqlite import Store

log = logging.getLogger("sandbox")

# Session fields a local record of a loss copies (resources: so a local `sandbox gc`
# can still remove what the session made if its owner dies before doing so).
_LOCAL_FIELDS = ("workdir", "agent_uid", "jail_name", "jail_pid", "resources")

def _replayed() -> set[tuple[str, str]]:
    """(database, session id): replayed, or not ours to replay. Per process (the
    supervisor's), not per object: every gc pass opens a new store, and a session is
    written back once."""
    return supervisor.current().shared("replayed losses", set)


class LostSessions:
    """One PgStore's bookkeeping for failing closed: the sessions it created (what a
    local record needs), their acknowledged heads, and their `on_lost` handlers."""

    def __init__(self, path: Path, host: str, key: str) -> None:
        self.path, self.host, self.key = path, host, key  # key: the database, no password
        self._lock = threading.RLock()
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._created: dict[str, dict[str, Any]] = {}
        self._heads: dict[str, tuple[int, str]] = {}
        self._lost_ids: set[str] = set()

    def on_lost(self, session_id: str, handler: Callable[[str], None] | None) -> None:
        with self._lock:
            if handler is None:
                self._handlers.pop(session_id, None)
                self._created.pop(session_id, None)
                self._heads.pop(session_id, None)
            else:
                self._handlers[session_id] = handler

    def created(self, session_id: str, fields: Mapping[str, Any]) -> None:
        with self._lock:
            self._created[session_id] = dict(fields)

    def updated(self, session_id: str, values: Mapping[str, Any]) -> None:
        with self._lock:  # what a local record of a loss must carry (resources: for gc)
            if session_id in self._created:
                known = self._created[session_id].setdefault("_updates", {})
                known.update({k: v for k, v in values.items() if k in _LOCAL_FIELDS})

    def appended(self, session_id: str, seq: int, head: str) -> None:
        with self._lock:
            if session_id in self._created:
                self._heads[session_id] = (seq, head)

    def lost(self, session_id: str, reason: str) -> None:
        """A write of this session's record failed for good: record that locally, then
        have the session killed (on its own thread: the writer may be the session)."""
        with self._lock:
            if session_id in self._lost_ids:
                return
            mine = session_id in self._created or session_id in self._handlers
            if not mine:
                log.error("sandbox: %s (session %s)", reason, session_id)
                return
            self._lost_ids.add(session_id)
            handler = self._handlers.pop(session_id, None)
            created = dict(self._created.get(session_id) or {})
            seq, head = self._heads.get(session_id, (None, None))
        log.error("sandbox: session %s: %s; killing it (fail closed), recorded in %s",
                  session_id, reason, self.path)
        try:
            self.record_locally(session_id, reason, created, seq, head)
        except Exception as e:  # the kill still happens; the log has the reason
            log.error("sandbox: session %s: writing the loss to %s failed: %s",
                      session_id, self.path, e)
        if handler is not None:
            supervisor.spawn(handler, reason, name="sandbox-store-lost")

    def replay(self, store: StoreBackend) -> list[str]:
        """Sessions of this host that a lost connection killed are still `running` in
        PostgreSQL (their end could not be written): once the database is back, write
        what the local record holds, the `store.lost` event and the `session.end`, so
        the fleet's store says killed, with the reason. Returns their ids."""
        if not self.path.exists():
            return []
        local = Store(self.path)
        try:
            rows = local._query(
                "SELECT s.id AS id, s.reason AS reason, e.detail AS detail FROM sessions s "
                "JOIN events e ON e.session_id = s.id AND e.kind = 'store.lost' "
                "WHERE s.state = 'killed' AND s.updated >= ? ORDER BY s.updated LIMIT 1000",
                (time.time() - 7 * 86400,))
        finally:
            local.close()
        done = []
        replayed = _replayed()
        for r in rows:
            key = (self.key, str(r["id"]))
            if key in replayed:
                continue
            try:
                session = store.get_session(str(r["id"]))
            except NotFound:
                replayed.add(key)
                continue
            if session.host != self.host or not session.live:
                replayed.add(key)
                continue
            try:
                detail = json.loads(r["detail"])
            except (TypeError, ValueError):
                detail = {}
            reason = str(r["reason"] or "lost the event store")
            store.add_event(session.id, "store.lost", {**detail, "replayed": True,
                                                       "replayed_at": time.time()},
                            severity="critical", action="kill", rule="store.lost")
            if store.finish_session(session.id, "killed", reason):
                store.add_event(session.id, "session.end",
                                {"state": "killed", "reason": reason, "replayed": True},
                                severity="warning")
            store.mark_controls_handled(session.id)
            replayed.add(key)
            done.append(session.id)
        return done

    def record_locally(self, session_id: str, reason: str, created: dict[str, Any],
                       seq: int | None, head: str | None) -> None:
        """Write the loss into the local SQLite store (the session row first, when this
        host's store has never seen the session)."""
        local = Store(self.path)
        try:
            try:
                local.get_session(session_id)
            except NotFound:
                local.create_session(
                    session_id, profile=str(created.get("profile", "?")),
                    kind=str(created.get("kind", "?")),
                    workdir=str(created.get("workdir", "?")),
                    argv=list(created.get("argv") or []),
                    owner_pid=int(created.get("owner_pid", os.getpid())),
                    owner_start=str(created.get("owner_start", "")),
                    host=str(created.get("host", self.host)),
                    user=str(created.get("user", "?")))
                if created.get("_updates"):
                    local.update_session(session_id, **created["_updates"])
            local.add_event(session_id, "store.lost", {
                "store": self.key, "error": reason, "host": self.host,
                "acknowledged_seq": seq, "acknowledged_head": head, "at": time.time(),
            }, severity="critical", action="kill", rule="store.lost")
            if local.finish_session(session_id, "killed", reason):
                local.add_event(session_id, "session.end",
                                {"state": "killed", "reason": reason}, severity="warning")
        finally:
            local.close()
