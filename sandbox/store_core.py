"""The event store's own code: the SQLite backend, and the logic every backend shares
(the chain, the counters, `verify`). Import `Store` from `store`, where the backends
meet; this module imports no other backend.

Many processes write at once: each write is one short `BEGIN IMMEDIATE` transaction and
SQLite's busy timeout queues writers, so nothing is lost. One `Store` object is safe to
share between threads (a lock guards its connection).

`Store(url)` opens the backend registered for the URL (`register_backend`: `store_pg`
registers PgStore when it is imported, and `store` imports it), else the SQLite file
the path names.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from . import chain, paths
from .errors import NotFound, StoreError
from .store_api import ControlListener, StoreBackend, StoreUnavailable, is_pg_url
from .store_rows import (
    ChainRow,
    CommandRow,
    ControlRow,
    EventCursor,
    EventRow,
    RowKind,
    SessionRow,
)
from .store_schema import (  # re-exported: callers import these from store
    _SCHEMA,
    _SESSION_UPDATABLE,
    ACTIONS,
    FINAL_STATES,
    LIVE_STATES,
    MIGRATIONS,
    RECORD_VERSION,
    SCHEMA_VERSION,
    SEALED_FIELDS,
    SEVERITIES,
)
from .textsafe import NUL_PICTURE, raw_bytes, storable, visible

__all__ = ["ACTIONS", "FINAL_STATES", "LIVE_STATES", "SCHEMA_VERSION", "SEVERITIES",
           "ChainRow", "CommandRow", "ControlRow", "EventCursor", "EventRow", "SessionRow",
           "Store",
           "StoreBackend", "StoreUnavailable", "is_alert"]


def is_alert(action: str, severity: str) -> bool:
    """An alert is anything a rule flagged, blocked or killed, or any warning-or-worse."""
    return action != "record" or SEVERITIES.index(severity) >= SEVERITIES.index("alert")


MAX_ID_LEN = 64
_ID_CHARS = re.compile(r"[A-Za-z0-9_.-]+")  # what an exact id may hold (ours are hex)
_HEX = re.compile(r"[0-9a-f]+")  # what a prefix may hold: ids are token_hex


def check_session_id(session_id: str) -> None:
    """Refuse, in one line, what cannot be a session id (empty, huge, odd characters)."""
    if not session_id:
        raise NotFound("no session id given: pass an id, or a unique prefix of one, "
                       "from `sandbox ls`")
    if len(session_id) > MAX_ID_LEN or not _ID_CHARS.fullmatch(session_id):
        shown = visible(session_id[:24]) + (f"… ({len(session_id)} characters)"
                                             if len(session_id) > 24 else "")
        raise NotFound(f"no such session {shown!r}: a session id is up to {MAX_ID_LEN} hex "
                       "digits, like 3f2a9c01b4; see `sandbox ls`")


def output_bytes_of(command: Mapping[str, Any]) -> bytes:
    """A recorded command's exact output bytes (`output_raw` when set, else the text)."""
    raw = command.get("output_raw")
    if raw is not None:
        return bytes(raw)
    return str(command.get("output") or "").encode("utf-8")


def _output_columns(output: str | bytes) -> tuple[str, bytes | None, int]:
    """(text for the `output` column, exact bytes when the text is not them, byte count)."""
    raw = output if isinstance(output, bytes) else raw_bytes(output)
    try:
        text = raw.decode("utf-8")
        exact = "\x00" not in text
    except UnicodeDecodeError:
        text, exact = raw.decode("utf-8", errors="replace"), False
    if not exact:
        text = text.replace("\x00", NUL_PICTURE)
    return text, (None if exact else raw), len(raw)


class _Db(Protocol):
    """One backend's connection, inside a transaction: SQL in SQLite's dialect (`?`
    placeholders, `"user"` quoted), rows as dicts."""

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    def run(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def insert(self, table: str, row: dict[str, Any]) -> int: ...


class _SqliteDb:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, tuple(args)).fetchall()]

    def one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        r = self.db.execute(sql, tuple(args)).fetchone()
        return None if r is None else dict(r)

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(self.db.execute(sql, tuple(args)).rowcount)

    def insert(self, table: str, row: dict[str, Any]) -> int:
        cols = list(row)
        cur = self.db.execute(
            f"INSERT INTO {table}({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})",
            tuple(row[c] for c in cols))
        return int(cur.lastrowid or 0)


# Backends other than SQLite, by the URL scheme they open ("postgresql"; see `store_pg`).
_BACKENDS: dict[str, type[Store]] = {}


def register_backend(scheme: str, backend: type[Store]) -> None:
    """Have `Store(url)` open `backend` for URLs of `scheme` (`store_pg` registers PgStore)."""
    _BACKENDS[scheme] = backend


def _backend(scheme: str) -> type[Store]:
    try:
        return _BACKENDS[scheme]
    except KeyError:
        raise StoreError(f"no {scheme} store backend is loaded: import Store from "
                         "sandbox.store, where the backends meet") from None


class Store:
    """The event store. `Store()` opens the default store: the SQLite file under the state
    dir, or what `SANDBOX_STORE` names; `Store(path)` a SQLite file, `Store(":memory:")` a
    private in-memory one (tests), `Store("postgresql://...")` a PostgreSQL database
    (`store_pg.PgStore`, a subclass). This class is the SQLite backend and the code both
    share: the chain, the counters, `verify`."""

    path: Path
    host: str
    _for_update = ""  # how a write locks the session row (SQLite: the whole database)
    # A fleet's store (PostgreSQL): its sessions may belong to other hosts, each host's
    # supervisors beat in `hosts`, and a kill may cross hosts. SQLite: one host's file.
    shared = False

    def __new__(cls, path: Path | str | None = None) -> Store:
        if cls is Store:
            url = paths.store_url() if path is None else path
            if is_pg_url(url):
                return super().__new__(_backend("postgresql"))
        return super().__new__(cls)

    def __init__(self, path: Path | str | None = None) -> None:
        if path is None:
            chosen = paths.store_url()
            if chosen and not os.environ.get("SANDBOX_DB"):
                path = chosen.removeprefix("sqlite://")
        self.path = Path(path) if path is not None else paths.db_path()
        self.host = paths.host_id()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; only a power cut
            # can lose the last transactions. Keeps a command's record well under 1 ms.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(
                f"cannot open the event store {self.path}: {e} "
                "(check permissions, or set SANDBOX_STATE_DIR)"
            ) from e
        with suppress(OSError):
            os.chmod(self.path, 0o600)

    # -- plumbing (what a backend overrides) ------------------------------------------

    @property
    def key(self) -> str:
        """Names this database without secrets: one kill watcher per key."""
        return self.path.as_posix()

    def reopen(self) -> Store:
        """A new connection to the same store."""
        return Store(self.path)

    def elsewhere(self, session: Mapping[str, Any]) -> bool:
        """True when the session's owner runs on another host, so this host can neither
        check its owner process nor touch its jail. A SQLite store is one host's file:
        never (its `host` column is informative)."""
        return False

    def on_lost(self, session_id: str, handler: Callable[[str], None] | None) -> None:
        """SQLite is a local file: there is no connection to lose (a failed write raises
        StoreError to the caller, as it always did)."""

    def listener(self) -> ControlListener | None:
        """A push channel for kill requests, or None: SQLite is polled (one local file,
        a query costs microseconds)."""
        return None

    def replay_lost(self) -> list[str]:
        """Write the ends of this host's sessions that a lost connection killed, once
        the store is back (PostgreSQL); SQLite never loses its connection."""
        return []

    def _migrate(self) -> None:
        # executescript commits on its own, so it runs outside the transaction helper.
        with self._lock:
            self._db.executescript(_SCHEMA)
        with self._tx() as db:
            _apply_migrations(db, self.key, lambda table: {
                r["name"] for r in db.all(f"PRAGMA table_info({table})")})

    @contextmanager
    def _tx(self, session_id: str | None = None) -> Iterator[_Db]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, every writer queued)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteDb(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[_Db]:
        """A read transaction: what it reads is one consistent state."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield _SqliteDb(self._db)
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return _SqliteDb(self._db).all(sql, args)

    # -- sessions -----------------------------------------------------------------------

    def create_session(
        self,
        session_id: str,
        *,
        profile: str,
        kind: str,
        workdir: str,
        argv: list[str],
        owner_pid: int,
        owner_start: str,
        host: str,
        user: str,
    ) -> None:
        now = time.time()
        with self._tx(session_id) as db:
            db.run(
                "INSERT INTO sessions(id, profile, kind, state, created, owner_pid, owner_start,"
                ' host, "user", workdir, argv, updated) VALUES(?,?,?,?,?,?,?,?,?,?,?,'
                f'{self._now_sql})',
                (session_id, profile, kind, "starting", now, owner_pid, owner_start, host, user,
                 workdir, json.dumps(argv), *self._now()),
            )

    def update_session(self, session_id: str, **values: Any) -> None:
        bad = set(values) - _SESSION_UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        if "resources" in values and not isinstance(values["resources"], str):
            values["resources"] = json.dumps(values["resources"])
        # Any str is storable: a non-UTF-8 argv arrives with lone surrogates.
        values = {k: storable(v) if isinstance(v, str) else v for k, v in values.items()}
        # A final state is final: a late "running" (a kill that won the race with the
        # start) must not reopen the row that the sealed session.end describes.
        cols = ", ".join(
            "state=CASE WHEN state IN ('exited','killed','failed') THEN state ELSE ? END"
            if k == "state" else f"{k}=?" for k in values)
        with self._tx(session_id) as db:
            db.run(
                f"UPDATE sessions SET {cols}, updated={self._now_sql} WHERE id=?",
                (*values.values(), *self._now(), session_id),
            )

    def finish_session(
        self, session_id: str, state: str, reason: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        """Move a live session to a final state; False when it was already final."""
        assert state in FINAL_STATES
        reason = None if reason is None else storable(reason)
        now = time.time()
        with self._tx(session_id) as db:
            n = db.run(
                "UPDATE sessions SET state=?, reason=?, exit_code=?, ended=?, "
                f"updated={self._now_sql}, current_command=NULL WHERE id=? AND state IN "
                "('starting','running')",
                (state, reason, exit_code, now, *self._now(), session_id),
            )
            return n == 1

    def get_session(self, session_id: str) -> SessionRow:
        """The session with this id, or the only one it is a prefix of (hex only)."""
        check_session_id(session_id)
        rows = self._query("SELECT * FROM sessions WHERE id=?", (session_id,))
        if not rows and _HEX.fullmatch(session_id):
            # substr, not LIKE: a prefix is compared as text, no wildcard in it counts.
            rows = self._query(
                "SELECT * FROM sessions WHERE substr(id, 1, ?)=? ORDER BY created DESC LIMIT 2",
                (len(session_id), session_id),
            )
            if len(rows) > 1:
                raise NotFound(f"ambiguous session id {session_id!r}: more than one session "
                               "starts with it; give more of the id (see `sandbox ls`)")
        if not rows:
            raise NotFound(f"no such session {session_id!r}; see `sandbox ls`")
        return SessionRow.from_db(rows[0])

    def list_sessions(
        self, *, live_only: bool = False, limit: int = 200, since_updated: float = 0.0,
        host: str | None = None,
    ) -> list[SessionRow]:
        """Newest first; `host`: only the sessions that host owns."""
        where, args = ["updated >= ?"], [since_updated]
        if live_only:
            where.append("state IN ('starting','running')")
        if host is not None:
            where.append("host = ?")
            args.append(host)  # type: ignore[arg-type]
        sql = (
            f"SELECT * FROM sessions WHERE {' AND '.join(where)} "
            "ORDER BY created DESC LIMIT ?"
        )
        return [SessionRow.from_db(r) for r in self._query(sql, (*args, limit))]

    def known_hosts(self) -> list[str]:
        """The hosts that beat in this store or own one of its newest 1,000 sessions
        (sorted; bounded work however long the history)."""
        rows = self._query("SELECT DISTINCT host FROM hosts UNION SELECT DISTINCT host FROM "
                           "(SELECT host FROM sessions ORDER BY created DESC LIMIT 1000) r")
        return sorted(str(r["host"]) for r in rows)

    # -- the chain ------------------------------------------------------------------------

    def _append(
        self, kind: RowKind, session_id: str, row: dict[str, Any],
        detail: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Append one chained row; returns it and the event detail as recorded.

        The session row is the chain's head: it is read and written in one transaction
        that holds it (SQLite: the database write lock; PostgreSQL: SELECT ... FOR
        UPDATE), so appends to one session are serialized across every process."""
        detail = detail or {}
        with self._tx(session_id) as db:
            head = db.one("SELECT * FROM sessions WHERE id=?" + self._for_update,
                          (session_id,))
            if head is None:
                raise NotFound(f"no such session {session_id!r}")
            if kind == "event" and row["kind"] == "session.start":
                # Marks a record that must end in a seal (older records have none).
                detail = {**detail, "record_version": RECORD_VERSION}
                row["detail"] = _dump(detail)
            elif (kind == "event" and row["kind"] == "session.end"
                  and head["state"] in FINAL_STATES):
                # The seal: the row's summary as it ends, chained (see `verify`).
                detail = {**detail, "seal": {f: head[f] for f in SEALED_FIELDS}}
                row["detail"] = _dump(detail)
            row["session_id"] = session_id
            row["seq"] = head["last_seq"] + 1
            row["prev_hash"] = head["head_hash"]
            row["host"] = self.host
            row["hash"] = chain.link(head["head_hash"], kind, row)
            row["id"] = db.insert("commands" if kind == "command" else "events", row)
            # A recorded command is no longer running: clear it in the same write.
            counters = ("n_commands=n_commands+1, current_command=NULL" if kind == "command"
                        else "n_events=n_events+1")
            extra: tuple[Any, ...] = ()
            if kind == "event":
                if is_alert(row["action"], row["severity"]):
                    counters += ", n_alerts=n_alerts+1"
                if detail.get("verdict") == "deny":
                    counters += ", n_denied=n_denied+1"
                # The worst severity so far (computed here: the row is held). A value that
                # is no severity at all (an edited row) is kept, for verify to name.
                worst = head["max_severity"]
                if (worst in SEVERITIES
                        and SEVERITIES.index(row["severity"]) > SEVERITIES.index(worst)):
                    counters += ", max_severity=?"
                    extra = (row["severity"],)
            db.run(
                f"UPDATE sessions SET last_seq=?, head_hash=?, updated={self._now_sql}, "
                f"{counters} WHERE id=?",
                (row["seq"], row["hash"], *self._now(), *extra, session_id),
            )
        return row, detail

    def add_command(
        self,
        session_id: str,
        *,
        text: str,
        output: str | bytes,
        exit_code: int | None,
        started: float,
        duration: float,
        timed_out: bool = False,
        truncated: bool = False,
        output_bytes: int | None = None,
        source: str = "api",
    ) -> CommandRow:
        """Record one command. `output` is best given as the bytes the command wrote:
        text that is not valid UTF-8 or holds NUL keeps its exact bytes in `output_raw`
        (the `output` column then shows U+FFFD and `␀`, so SQL tools never cut it)."""
        text_out, raw, n = _output_columns(output)
        row: dict[str, Any] = {
            "text": storable(text), "output": text_out, "exit_code": exit_code,
            "started": started, "duration": duration, "timed_out": int(timed_out),
            "truncated": int(truncated), "output_bytes": n if output_bytes is None
            else output_bytes, "source": source, "output_raw": raw,
        }
        return CommandRow.from_db(self._append("command", session_id, row)[0])

    def add_event(
        self,
        session_id: str,
        kind: str,
        detail: dict[str, Any] | None = None,
        *,
        severity: str = "info",
        action: str = "record",
        rule: str | None = None,
        ts: float | None = None,
    ) -> EventRow:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        detail = detail or {}
        row: dict[str, Any] = {
            "ts": time.time() if ts is None else ts, "kind": storable(kind),
            "severity": severity, "action": action,
            "rule": None if rule is None else storable(rule), "detail": _dump(detail),
        }
        out, recorded = self._append("event", session_id, row, detail)
        return replace(EventRow.from_db(out), detail=recorded)

    def commands(self, session_id: str, since_seq: int = 0) -> list[CommandRow]:
        return [CommandRow.from_db(r) for r in self._query(
            "SELECT * FROM commands WHERE session_id=? AND seq>? ORDER BY seq",
            (session_id, since_seq),
        )]

    def events(
        self, session_id: str | None = None, since_id: int = 0, *, alerts_only: bool = False,
        limit: int = 10_000, kinds: tuple[str, ...] = (), newest: bool = False,
    ) -> list[EventRow]:
        """Events after `since_id`, oldest first; `newest=True` takes the last `limit`."""
        where, args = ["id>?"], [since_id]
        if session_id is not None:
            where.append("session_id=?")
            args.append(session_id)  # type: ignore[arg-type]
        if alerts_only:
            where.append("(action != 'record' OR severity IN ('alert','critical'))")
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)  # type: ignore[arg-type]
        order = "DESC" if newest else "ASC"
        rows = self._query(
            f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?",
            (*args, limit),
        )
        if newest:
            rows.reverse()
        return [EventRow.from_db(r) for r in rows]

    def _watermark(self, db: _Db) -> int | None:
        """The oldest transaction still running as `db`'s snapshot sees it (PostgreSQL);
        None where ids are assigned in commit order (SQLite: one writer at a time)."""
        return None

    def events_after(
        self, cursor: EventCursor | None = None, *, session_id: str | None = None,
        alerts_only: bool = False, limit: int = 10_000, newest: bool = False,
    ) -> tuple[list[EventRow], EventCursor]:
        """Events a tailing reader has not had yet, and where it is now: pass the cursor
        back next time. Unlike `events(since_id=...)`, no row is missed when a writer
        that took a lower id commits after a higher one (PostgreSQL assigns ids at
        insert, not at commit): rows of transactions that were still running at the last
        read are read again and the new ones returned ("late" rows come first).
        `newest` (first read only): start from the newest `limit` rows, not history."""
        where, args = ["1=1"], []
        if session_id is not None:
            where.append("session_id=?")
            args.append(session_id)
        if alerts_only:
            where.append("(action != 'record' OR severity IN ('alert','critical'))")
        cond = " AND ".join(where)
        since = cursor.id if cursor is not None else 0
        late: list[dict[str, Any]] = []
        with self._snapshot() as db:
            xmin = self._watermark(db)  # first: the snapshot every query below shares
            if cursor is None and newest:
                rows = db.all(f"SELECT * FROM events WHERE {cond} ORDER BY id DESC LIMIT ?",
                              (*args, limit))
                rows.reverse()
            else:
                rows = db.all(f"SELECT * FROM events WHERE {cond} AND id > ? ORDER BY id "
                              "LIMIT ?", (*args, since, limit))
            top = max(since, rows[-1]["id"] if rows else 0)
            seen: frozenset[int] = frozenset()
            if xmin is not None:
                low = cursor.xmin if cursor is not None and cursor.xmin is not None else xmin
                recent = db.all(f"SELECT * FROM events WHERE {cond} AND tx >= ? AND id <= ? "
                                "ORDER BY id LIMIT 100000", (*args, low, top))
                if cursor is not None and cursor.xmin is not None:
                    late = [r for r in recent
                            if r["id"] <= since and r["id"] not in cursor.seen]
                seen = frozenset(int(r["id"]) for r in recent if int(r["tx"]) >= xmin)
        out = [EventRow.from_db(r) for r in (*late, *rows)]
        return out, EventCursor(top, xmin, seen)

    def count_events(self, session_id: str, kind: str) -> int:
        rows = self._query("SELECT count(*) AS n FROM events WHERE session_id=? AND kind=?",
                           (session_id, kind))
        return int(rows[0]["n"])

    def chain_rows(self, session_id: str) -> list[ChainRow]:
        """A session's commands and events in chain order (typed rows)."""
        out: list[ChainRow] = []
        for kind, r in _chain_dicts(self._query, session_id):
            out.append(("command", CommandRow.from_db(r)) if kind == "command"
                       else ("event", EventRow.from_db(r)))
        return out

    def verify(self, session_id: str) -> tuple[bool, str]:
        """Check a session's record: the hash chain, that it ends at the recorded head,
        that the row's counters match the rows, and (for a finished session) that the
        row's summary matches the seal its final `session.end` carries."""
        sid = self.get_session(session_id)["id"]
        with self._snapshot() as db:  # one read transaction: the row and its chain
            session = db.one("SELECT * FROM sessions WHERE id=?", (sid,))
            rows = _chain_dicts(db.all, sid)
        if session is None:
            raise NotFound(f"no such session {sid!r}; see `sandbox ls`")
        ok, message, head = chain.verify_rows(rows)
        if not ok:
            return False, message
        problem = _check_head(session, rows, head) or _check_counters(session, rows)
        if problem:
            return False, problem
        return _check_seal(session, rows, message)

    # -- controls -------------------------------------------------------------------------

    def request_kill(self, session_id: str, requested_by: str) -> int:
        with self._tx() as db:
            return db.insert("controls", {
                "session_id": session_id, "ts": time.time(), "action": "kill",
                "requested_by": requested_by, "host": self.host})

    def pending_controls(self, session_id: str) -> list[ControlRow]:
        return [ControlRow.from_db(r) for r in self._query(
            "SELECT * FROM controls WHERE session_id=? AND handled IS NULL ORDER BY id",
            (session_id,),
        )]

    def pending_kills(self, session_ids: list[str]) -> list[tuple[str, str]]:
        """(session id, requested_by) of unhandled kill requests among `session_ids`."""
        if not session_ids:
            return []
        marks = ",".join("?" * len(session_ids))
        rows = self._query(
            f"SELECT session_id, requested_by FROM controls WHERE handled IS NULL "
            f"AND action='kill' AND session_id IN ({marks}) ORDER BY id",
            tuple(session_ids),
        )
        return [(r["session_id"], r["requested_by"]) for r in rows]

    def mark_controls_handled(self, session_id: str) -> None:
        with self._tx(session_id) as db:
            db.run(
                "UPDATE controls SET handled=? WHERE session_id=? AND handled IS NULL",
                (time.time(), session_id),
            )

    def ended_among(self, session_ids: list[str]) -> dict[str, str]:
        """{id: reason} of those sessions whose row is final (ended by someone else when
        their owner still holds them: another host marked them lost, say)."""
        if not session_ids:
            return {}
        marks = ",".join("?" * len(session_ids))
        rows = self._query(f"SELECT id, state, reason FROM sessions WHERE id IN ({marks}) "
                           "AND state IN ('exited','killed','failed')", tuple(session_ids))
        return {r["id"]: f"{r['state']}: {r['reason'] or ''}".strip() for r in rows}

    # -- hosts: heartbeats -----------------------------------------------------------------

    # A session row's `updated` by the store's clock, like the heartbeats: on PostgreSQL
    # the server's, one clock for every host (a dead host whose clock ran ahead looked
    # busy to the lost-host check for as long as it was ahead), here this host's.
    _now_sql = "?"

    def _now(self) -> tuple[float, ...]:
        return (time.time(),)

    def _clock(self, db: _Db) -> float:
        """Now, by the store's clock (PostgreSQL: the server's, the same for every host)."""
        return time.time()

    def heartbeat(self, pid: int, owner_start: str, *, beat: float, sessions: int) -> None:
        """This supervisor process is alive, with `sessions` live sessions, and beats every
        `beat` seconds (one row per process in `hosts`)."""
        with self._tx() as db:
            now = self._clock(db)
            db.run("INSERT INTO hosts(host, pid, owner_start, started, last_seen, beat, sessions)"
                   " VALUES(?,?,?,?,?,?,?) ON CONFLICT(host, pid, owner_start) DO UPDATE SET"
                   " last_seen=excluded.last_seen, beat=excluded.beat,"
                   " sessions=excluded.sessions",
                   (self.host, pid, owner_start, now, now, beat, sessions))

    def host_status(self) -> list[dict[str, Any]]:
        """Per host that ever beat: its newest heartbeat, how long ago (store clock), its
        longest beat interval, how many processes, and its live sessions now."""
        with self._snapshot() as db:
            now = self._clock(db)
            beats = db.all("SELECT host, max(last_seen) AS last_seen, max(beat) AS beat, "
                           "count(*) AS processes FROM hosts GROUP BY host")
            live = {r["host"]: int(r["n"]) for r in db.all(
                "SELECT host, count(*) AS n FROM sessions WHERE state IN "
                "('starting','running') GROUP BY host")}
        return [{"host": b["host"], "last_seen": float(b["last_seen"]),
                 "age": now - float(b["last_seen"]), "beat": float(b["beat"]),
                 "processes": int(b["processes"]), "live": live.get(b["host"], 0)}
                for b in sorted(beats, key=lambda b: str(b["host"]))]

    def prune_heartbeats(self, older_than: float) -> int:
        """Forget heartbeat rows of processes silent for `older_than` seconds whose host
        has no live session left (a lost host's rows stay until its sessions are ended)."""
        with self._tx() as db:
            cutoff = self._clock(db) - older_than
            return db.run(
                "DELETE FROM hosts WHERE last_seen < ? AND host NOT IN (SELECT host FROM "
                "sessions WHERE state IN ('starting','running'))", (cutoff,))


def _chain_dicts(query: Callable[[str, Sequence[Any]], list[dict[str, Any]]],
                 session_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A session's rows as stored (event detail as its JSON text), in chain order."""
    rows: list[tuple[str, dict[str, Any]]] = [
        ("command", r) for r in query(
            "SELECT * FROM commands WHERE session_id=? ORDER BY seq", (session_id,))]
    rows += [("event", r) for r in query(
        "SELECT * FROM events WHERE session_id=? ORDER BY seq", (session_id,))]
    rows.sort(key=lambda kr: (kr[1]["seq"], kr[1]["id"]))
    return rows


def _apply_migrations(db: _Db, where: str, columns: Callable[[str], set[str]],
                      translate: Callable[[str], str] = lambda decl: decl) -> None:
    """Bring a store (inside a write transaction, tables created) to SCHEMA_VERSION: add
    the columns of every migration above its version and log each one."""
    row = db.one("SELECT value FROM meta WHERE key='schema_version'")
    now = time.time()
    if row is None:
        db.run("INSERT INTO meta(key, value) VALUES('schema_version', ?)",
               (str(SCHEMA_VERSION),))
        db.run("INSERT INTO schema_migrations(version, description, applied) "
               "VALUES(?, ?, ?)", (SCHEMA_VERSION, f"created at schema {SCHEMA_VERSION}", now))
        return
    current = int(row["value"])
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema {current}, newer than this sandbox ({SCHEMA_VERSION}); "
            "upgrade sandbox")
    for version, description, added in MIGRATIONS:
        if version <= current:
            continue
        for table, column, decl in added:
            if column not in columns(table):
                db.run(f"ALTER TABLE {table} ADD COLUMN {column} {translate(decl)}")
        db.run("INSERT INTO schema_migrations(version, description, applied) VALUES(?,?,?)",
               (version, description, now))
    if current < SCHEMA_VERSION:
        db.run("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))


def _dump(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, default=str)


def _check_head(session: dict[str, Any], rows: list[tuple[str, dict[str, Any]]],
                head: str) -> str | None:
    n, last, recorded = len(rows), session["last_seq"], session["head_hash"]
    if n < last:
        missing = f"row seq={last}" if n + 1 == last else f"rows seq={n + 1}..{last}"
        return (f"{missing} missing: the chain ends after {n} rows at {head}, but the "
                f"session recorded {last} rows ending at {recorded}")
    if n > last:
        return (f"the chain holds {n} rows but the session row records last_seq={last}: "
                "the session row was edited")
    if head != recorded:
        return (f"the chain's head {head} is not the session's recorded head {recorded}: "
                "the rows or the session row were rewritten")
    return None


def _check_counters(session: dict[str, Any],
                    rows: list[tuple[str, dict[str, Any]]]) -> str | None:
    events = [r for k, r in rows if k == "event"]
    details = [_loads(e["detail"]) for e in events]
    worst = max((SEVERITIES.index(e["severity"]) for e in events
                 if e["severity"] in SEVERITIES), default=0)
    want = {
        "n_commands": len(rows) - len(events),
        "n_events": len(events),
        "n_alerts": sum(1 for e in events if is_alert(e["action"], e["severity"])),
        "n_denied": sum(1 for d in details if d.get("verdict") == "deny"),
        "max_severity": SEVERITIES[worst],
    }
    for key, value in want.items():
        if session[key] != value:
            return (f"the session row says {key}={visible(session[key])!r}, but its chain "
                    f"holds {value!r}: the session row was edited")
    return None


def _check_seal(session: dict[str, Any], rows: list[tuple[str, dict[str, Any]]],
                message: str) -> tuple[bool, str]:
    start = next((_loads(r["detail"]) for k, r in rows
                  if k == "event" and r["kind"] == "session.start"), {})
    seal_row, seal = None, None
    for k, r in rows:
        if k == "event" and r["kind"] == "session.end":
            d = _loads(r["detail"])
            if isinstance(d.get("seal"), dict):
                seal_row, seal = r, d["seal"]
    if seal is None or seal_row is None:
        if session["state"] not in FINAL_STATES:
            return True, f"{message} (live: the end is not sealed yet)"
        if not start.get("record_version") and rows:
            return True, f"{message} (recorded before sealed ends: the session row is unchecked)"
        return False, (f"the session is {session['state']} but its chain has no sealed "
                       "session.end: the end was deleted, or the record is incomplete")
    for field in SEALED_FIELDS:
        if session.get(field) != seal.get(field):
            return False, (
                f"the session row's {field} is {visible(session.get(field))!r}, but the sealed "
                f"session.end (seq={seal_row['seq']}) says {visible(seal.get(field))!r}: "
                "the session row was edited")
    return True, f"{message}, sealed at seq={seal_row['seq']}"


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
