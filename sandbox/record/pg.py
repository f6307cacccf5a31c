"""The event store in PostgreSQL: one database for a fleet of hosts.

`Store("postgresql://user:pass@db:5432/sandbox")`, or `SANDBOX_STORE` / `sandbox --store
URL` set to such a URL, opens this backend (`pip install 'ringfence[postgres]'`, psycopg
3). Same tables as SQLite (translated types), same hash chain and `verify` (the parts of
`sqlite.Store` are shared: only the connection differs), the same versioned migrations
(`meta.schema_version` + `schema_migrations`, run under an advisory lock so that many
hosts starting at once migrate once). Every row carries the host that wrote it
(`paths.host_id()`: `SANDBOX_HOST_ID`, else the hostname).

Concurrency: each write is one short transaction; an append locks its session's row
(`SELECT ... FOR UPDATE`), so the per-session seq and hash chain are serialized across
every process on every host, while sessions do not wait for each other. Connections
come from one small pool per database and process (`pg_pool`: `POOL_SIZE`,
`SANDBOX_STORE_POOL`), shared by every PgStore object: a process running a thousand
sandboxes holds a handful of connections, and any object is safe to share between threads.

A lost connection fails closed (`pg_lost`): the loss is written to the local SQLite store,
the session is killed, and the writer gets StoreUnavailable. Nothing is buffered. The
next call reconnects (a later session works as soon as the database is back); the killed
session's end is written there too if it can be.
The credentials live only in the supervisor's memory and environment: the jail's
environment is an allowlist, and `Session.env` refuses any value holding the password.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..errors import StoreError
from .api import StoreUnavailable, is_pg_url, redact_url
from .pg_lost import LostSessions
from .pg_pool import DEFAULTS, PgDb, Pool, load_psycopg
from .rows import CommandRow, EventRow, RowKind
from .schema import PG_EXTRA, PG_TX, PG_TYPES, apply_migrations, pg_schema
from .sqlite import Store, register_backend

if TYPE_CHECKING:
    import psycopg

_MIGRATION_LOCK = 0x5A4E_D801  # pg_advisory_xact_lock key: one migrator at a time
# Kill requests are announced on this channel (payload: the session id) in the same
# transaction that records them: the owner's watcher LISTENs and acts at once, and still
# polls `controls` (more slowly) in case a notification is missed.
KILL_CHANNEL = "sandbox_kill"


class KillListener:
    """A dedicated connection LISTENing for kill requests (not from the pool: it waits
    for notifications, never for a transaction). `wait(timeout)` returns the session ids
    announced since the last call ([] on timeout); it raises StoreUnavailable when the
    connection is lost (the watcher falls back to polling and opens a new one later)."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.conn = store._connect()
        try:
            self.conn.execute(f"LISTEN {KILL_CHANNEL}")
        except Exception:
            self.close()
            raise

    def wait(self, timeout: float) -> list[str]:
        try:
            return [n.payload for n in self.conn.notifies(timeout=max(0.0, timeout),
                                                          stop_after=1)]
        except self.store._pg.Error as e:
            self.close()
            raise StoreUnavailable(f"lost the kill channel of {self.store.key}: "
                                   f"{self.store._scrub(e)}") from None

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()


class PgStore(Store):
    """The PostgreSQL backend (see the module doc). `Store(url)` and `open_store(url)`
    return one."""

    _for_update = " FOR UPDATE"
    _now_sql = "extract(epoch from clock_timestamp())::float8"
    shared = True

    def __init__(self, path: Path | str | None = None) -> None:
        url = str(path) if path is not None else (paths.store_url() or "")
        if not is_pg_url(url):
            raise StoreError(f"not a PostgreSQL URL: {redact_url(url)!r}")
        self._pg = load_psycopg()
        self.url = url
        # The local SQLite store: where a lost connection is recorded; its directory (the
        # state dir) is hidden from every jail, as with the SQLite backend.
        self.path = paths.db_path()
        self.host = paths.host_id()
        self._losses = LostSessions(self.path, self.host, self.key)
        self._pool = Pool.of(url, self._connect)
        with self._pool.conn():  # reachable now, or StoreUnavailable
            pass
        if not Pool.migrated(url):  # once per database and process
            self._migrate()
            Pool.migrated(url, done=True)

    # -- connection ---------------------------------------------------------------------

    @property
    def key(self) -> str:
        return redact_url(self.url)

    def reopen(self) -> PgStore:
        return PgStore(self.url)

    def elsewhere(self, session: Mapping[str, Any]) -> bool:
        """A shared store: a session another host owns is that host's to reap or kill
        (its owner pid means nothing here); a kill reaches it through `controls`."""
        return session.get("host") != self.host

    @property
    def password(self) -> str | None:
        """The password in the URL (never shown: `Session.env` refuses any value that
        holds it, so it cannot reach a jail even through a caller's `env`)."""
        try:
            value = self._pg.conninfo.conninfo_to_dict(self.url).get("password")
        except Exception:
            value = None
        if not value:
            from urllib.parse import unquote, urlsplit

            with suppress(ValueError):
                value = unquote(urlsplit(self.url).password or "")
        return str(value) if value else None

    def _scrub(self, err: BaseException) -> str:
        """An error's message with the password (and the URL holding it) taken out."""
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        text = text.replace(self.url, self.key)
        password = self.password
        if password:
            text = text.replace(password, "***")
        return text

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        """A new connection (raises StoreUnavailable when the server cannot be reached)."""
        pg = self._pg
        try:
            given = pg.conninfo.conninfo_to_dict(self.url)
        except pg.Error as e:
            raise StoreError(f"bad PostgreSQL URL {self.key}: {self._scrub(e)}") from None
        extra = {k: v for k, v in DEFAULTS.items() if k not in given}
        try:
            conn: psycopg.Connection[dict[str, Any]] = pg.connect(
                self.url, autocommit=True, row_factory=pg.rows.dict_row, **extra)
        except pg.Error as e:
            raise StoreUnavailable(
                f"cannot reach the event store {self.key}: {self._scrub(e)} (is the "
                "server up? check --store / SANDBOX_STORE)") from None
        return conn

    def _failure(self, err: BaseException, session_id: str | None,
                 conn: psycopg.Connection[dict[str, Any]] | None) -> StoreError:
        """The error a failed database call raises (and, on a lost connection, the
        fail-closed path for the session whose record it was)."""
        if isinstance(err, StoreUnavailable):
            lost: StoreError = err
        elif (conn is None or conn.closed or conn.broken
              or isinstance(err, self._pg.InterfaceError)):
            lost = StoreUnavailable(f"lost the event store {self.key}: {self._scrub(err)}")
        else:
            return StoreError(f"event store {self.key}: {self._scrub(err)}")
        if session_id is not None:
            text = str(lost)
            self._losses.lost(session_id, text if text.startswith("lost the event store")
                       else f"lost the event store: {text}")
        return lost

    @contextmanager
    def _tx(self, session_id: str | None = None) -> Iterator[PgDb]:
        used: list[psycopg.Connection[dict[str, Any]]] = []
        try:
            with self._pool.conn() as conn:
                used.append(conn)
                with conn.transaction():
                    yield PgDb(conn)
        except (self._pg.Error, StoreUnavailable) as e:
            raise self._failure(e, session_id, used[0] if used else None) from None

    @contextmanager
    def _snapshot(self) -> Iterator[PgDb]:
        used: list[psycopg.Connection[dict[str, Any]]] = []
        try:
            with self._pool.conn() as conn:
                used.append(conn)
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield PgDb(conn)
        except (self._pg.Error, StoreUnavailable) as e:
            raise self._failure(e, None, used[0] if used else None) from None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        used: list[psycopg.Connection[dict[str, Any]]] = []
        try:
            with self._pool.conn() as conn:
                used.append(conn)
                return PgDb(conn).all(sql, args)
        except (self._pg.Error, StoreUnavailable) as e:
            raise self._failure(e, None, used[0] if used else None) from None

    def _migrate(self) -> None:
        def columns(table: str) -> set[str]:
            return {r["column_name"] for r in db.all(
                "SELECT column_name FROM information_schema.columns WHERE table_name=? "
                "AND table_schema=current_schema()", (table,))}

        with self._tx() as db:
            db.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.conn.execute(pg_schema().encode())  # several statements, no parameters
            apply_migrations(db, self.key, columns, lambda d: PG_TYPES.get(d, d))
            # Schema 4 on a store made before it: the column's default and index (only
            # when missing: ALTER TABLE locks the table, and every process migrates).
            got = db.one("SELECT column_default FROM information_schema.columns WHERE "
                         "table_name='events' AND column_name='tx' AND "
                         "table_schema=current_schema()")
            if got is not None and not got["column_default"]:
                db.conn.execute(f"ALTER TABLE events ALTER COLUMN tx SET DEFAULT {PG_TX}")
            if db.one("SELECT 1 FROM pg_indexes WHERE indexname='events_tx' AND "
                      "schemaname=current_schema()") is None:
                db.conn.execute(PG_EXTRA)

    # -- the fleet: the store's clock, the commit-order watermark, the kill channel ------

    def _now(self) -> tuple[float, ...]:
        return ()  # `_now_sql` is the server's own clock

    def _clock(self, db: Any) -> float:
        got = db.one("SELECT extract(epoch from clock_timestamp())::float8 AS now")
        return float(got["now"]) if got else time.time()

    def _watermark(self, db: Any) -> int | None:
        got = db.one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x")
        return int(got["x"]) if got else None

    def request_kill(self, session_id: str, requested_by: str) -> int:
        with self._tx() as db:
            cid = db.insert("controls", {
                "session_id": session_id, "ts": time.time(), "action": "kill",
                "requested_by": requested_by, "host": self.host})
            # Delivered when the row is committed, never before.
            db.conn.execute("SELECT pg_notify(%s, %s)", (KILL_CHANNEL, session_id))
            return cid

    def listener(self) -> KillListener | None:
        """A connection that hears kill requests as they are committed (see the
        ControlWatcher); None when `SANDBOX_STORE_NOTIFY=0` (poll only)."""
        if os.environ.get("SANDBOX_STORE_NOTIFY", "1").strip().lower() in ("0", "no",
                                                                            "false", "off"):
            return None
        return KillListener(self)

    def close(self) -> None:
        """Nothing to do: the connections belong to the process's pool for this URL
        (closed at exit), shared by every PgStore object of the process."""

    # -- fail closed (see `pg_lost`) ----------------------------------------------------

    def on_lost(self, session_id: str, handler: Callable[[str], None] | None) -> None:
        self._losses.on_lost(session_id, handler)

    def create_session(self, session_id: str, **kw: Any) -> None:
        self._losses.created(session_id, kw)
        super().create_session(session_id, **kw)

    def update_session(self, session_id: str, **values: Any) -> None:
        super().update_session(session_id, **values)
        self._losses.updated(session_id, values)

    def _append(self, kind: RowKind, session_id: str, row: dict[str, Any],
                detail: dict[str, Any] | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        out = super()._append(kind, session_id, row, detail)
        self._losses.appended(session_id, out[0]["seq"], out[0]["hash"])
        return out

    def add_command_and_event(
        self, session_id: str, command: dict[str, Any], kind: str, detail: dict[str, Any],
    ) -> tuple[CommandRow, EventRow]:
        out = super().add_command_and_event(session_id, command, kind, detail)
        self._losses.appended(session_id, out[1].seq, out[1].hash)
        return out

    def replay_lost(self) -> list[str]:
        """Write the ends of this host's sessions that a lost connection killed back
        into PostgreSQL (see `LostSessions.replay`). Returns their ids."""
        return self._losses.replay(self)


# `Store(url)` of a PostgreSQL URL opens this backend (the record's door imports this one).
register_backend("postgresql", PgStore)
