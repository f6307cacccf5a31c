"""The event store in PostgreSQL: one database for a fleet of hosts.

`Store("postgresql://user:pass@db:5432/sandbox")`, or `SANDBOX_STORE` / `sandbox --store
URL` set to such a URL, opens this backend (`pip install 'ringfence[postgres]'`, psycopg
3). Same tables as SQLite (translated types), same hash chain and `verify` (the code in
`store_core.Store` is shared: only the connection differs), the same versioned migrations
(`meta.schema_version` + `schema_migrations`, run under an advisory lock so that many
hosts starting at once migrate once). Every row carries the host that wrote it
(`paths.host_id()`: `SANDBOX_HOST_ID`, else the hostname).

Concurrency: each write is one short transaction; an append locks its session's row
(`SELECT ... FOR UPDATE`), so the per-session seq and hash chain are serialized across
every process on every host, while sessions do not wait for each other. Connections
come from one small pool per database and process (`POOL_SIZE`, `SANDBOX_STORE_POOL`),
shared by every PgStore object: a process running a thousand sandboxes holds a handful
of connections, and any object is safe to share between threads.

A lost connection fails closed. When a write of a session's record fails because the
database is unreachable, the store (1) writes the loss into the local SQLite store
(`self.path`: the state dir's `sandbox.db`, hidden from every jail): the session row,
a `store.lost` event naming the database (no password), the error and the last seq and
head hash the database acknowledged, and the session marked killed with the reason;
(2) calls the session's `on_lost` handler, which kills it; (3) raises StoreUnavailable
to the writer. Nothing is buffered: what was not acknowledged by PostgreSQL is never
shown as recorded. The next call reconnects (a later session works as soon as the
database is back); the killed session's end is written there too if it can be.
The credentials live only in the supervisor's memory and environment: the jail's
environment is an allowlist, and `Session.env` refuses any value holding the password.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths, supervisor
from .errors import DependencyMissing, NotFound, StoreError
from .store_api import StoreUnavailable, is_pg_url, redact_url
from .store_core import Store, _apply_migrations, register_backend
from .store_schema import PG_EXTRA, PG_TX, PG_TYPES, pg_schema

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("sandbox")

# Session fields a local record of a loss copies (resources: so a local `sandbox gc`
# can still remove what the session made if its owner dies before doing so).
_LOCAL_FIELDS = ("workdir", "agent_uid", "jail_name", "jail_pid", "resources")
_MIGRATION_LOCK = 0x5A4E_D801  # pg_advisory_xact_lock key: one migrator at a time
# Kill requests are announced on this channel (payload: the session id) in the same
# transaction that records them: the owner's watcher LISTENs and acts at once, and still
# polls `controls` (more slowly) in case a notification is missed.
KILL_CHANNEL = "sandbox_kill"
# libpq settings a fleet store wants unless the URL says otherwise: a dead server or a
# cut network is noticed within seconds, not after the kernel's TCP timeout (minutes).
_DEFAULTS = {
    "connect_timeout": "10", "keepalives": "1", "keepalives_idle": "5",
    "keepalives_interval": "2", "keepalives_count": "3", "tcp_user_timeout": "10000",
    "application_name": "sandbox",
}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise DependencyMissing(
            "the PostgreSQL store needs psycopg 3: pip install 'ringfence[postgres]' "
            f"(or: pip install 'psycopg[binary]>=3.2'); {e}") from e
    return psycopg


class _PgDb:
    """A psycopg connection speaking the shared SQL (`?` placeholders)."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self.conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.conn.execute(self._sql(sql), tuple(args)).fetchall()

    def one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        return self.conn.execute(self._sql(sql), tuple(args)).fetchone()

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(self.conn.execute(self._sql(sql), tuple(args)).rowcount)

    def insert(self, table: str, row: dict[str, Any]) -> int:
        cols = list(row)
        got = self.one(
            f"INSERT INTO {table}({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})"
            " RETURNING id", tuple(row[c] for c in cols))
        assert got is not None
        return int(got["id"])


POOL_SIZE = 8  # connections per database per process (SANDBOX_STORE_POOL overrides)


class _Pool:
    """The connections to one database, shared by every PgStore of this process: a
    process running a thousand sandboxes holds at most POOL_SIZE connections, and a
    transaction never waits behind another thread's (each borrows its own)."""

    _pools: dict[tuple[str, int], _Pool] = {}
    _migrated: set[tuple[str, int]] = set()
    _guard = threading.Lock()

    @classmethod
    def of(cls, url: str, connect: Callable[[], psycopg.Connection[dict[str, Any]]]
           ) -> _Pool:
        key = (url, os.getpid())  # a forked child never shares its parent's sockets
        with cls._guard:
            pool = cls._pools.get(key)
            if pool is None:
                size = int(os.environ.get("SANDBOX_STORE_POOL") or POOL_SIZE)
                pool = cls._pools[key] = _Pool(connect, max(1, size))
            return pool

    @classmethod
    def migrated(cls, url: str, done: bool = False) -> bool:
        """Whether this process checked the database's schema already (`done`: it has)."""
        key = (url, os.getpid())
        with cls._guard:
            if done:
                cls._migrated.add(key)
            return key in cls._migrated

    def __init__(self, connect: Callable[[], psycopg.Connection[dict[str, Any]]],
                 size: int) -> None:
        self.connect, self.size = connect, size
        self.idle: list[psycopg.Connection[dict[str, Any]]] = []
        self.count = 0
        self.cond = threading.Condition()

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """Borrow a connection (a lost one is replaced; StoreUnavailable when the server
        cannot be reached)."""
        with self.cond:
            while not self.idle and self.count >= self.size:
                self.cond.wait()
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                self.count += 1
        try:
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    with suppress(Exception):
                        conn.close()
                conn = None
                conn = self.connect()
            yield conn
        finally:
            with self.cond:
                if conn is not None and not conn.closed and not conn.broken:
                    self.idle.append(conn)
                else:
                    if conn is not None:
                        with suppress(Exception):
                            conn.close()
                    self.count -= 1
                self.cond.notify()


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
        self._pg = _psycopg()
        self.url = url
        # The local SQLite store: where a lost connection is recorded; its directory (the
        # state dir) is hidden from every jail, as with the SQLite backend.
        self.path = paths.db_path()
        self.host = paths.host_id()
        self._lock = threading.RLock()  # this object's bookkeeping (the pool has its own)
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._created: dict[str, dict[str, Any]] = {}
        self._heads: dict[str, tuple[int, str]] = {}
        self._lost_ids: set[str] = set()
        self._pool = _Pool.of(url, self._connect)
        with self._pool.conn():  # reachable now, or StoreUnavailable
            pass
        if not _Pool.migrated(url):  # once per database and process
            self._migrate()
            _Pool.migrated(url, done=True)

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
        extra = {k: v for k, v in _DEFAULTS.items() if k not in given}
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
            self._lost(session_id, text if text.startswith("lost the event store")
                       else f"lost the event store: {text}")
        return lost

    @contextmanager
    def _tx(self, session_id: str | None = None) -> Iterator[_PgDb]:
        used: list[psycopg.Connection[dict[str, Any]]] = []
        try:
            with self._pool.conn() as conn:
                used.append(conn)
                with conn.transaction():
                    yield _PgDb(conn)
        except (self._pg.Error, StoreUnavailable) as e:
            raise self._failure(e, session_id, used[0] if used else None) from None

    @contextmanager
    def _snapshot(self) -> Iterator[_PgDb]:
        used: list[psycopg.Connection[dict[str, Any]]] = []
        try:
            with self._pool.conn() as conn:
                used.append(conn)
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield _PgDb(conn)
        except (self._pg.Error, StoreUnavailable) as e:
            raise self._failure(e, None, used[0] if used else None) from None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        used: list[psycopg.Connection[dict[str, Any]]] = []
        try:
            with self._pool.conn() as conn:
                used.append(conn)
                return _PgDb(conn).all(sql, args)
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
            _apply_migrations(db, self.key, columns, lambda d: PG_TYPES.get(d, d))
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

    # -- fail closed ----------------------------------------------------------------------

    def on_lost(self, session_id: str, handler: Callable[[str], None] | None) -> None:
        with self._lock:
            if handler is None:
                self._handlers.pop(session_id, None)
                self._created.pop(session_id, None)
                self._heads.pop(session_id, None)
            else:
                self._handlers[session_id] = handler

    def create_session(self, session_id: str, **kw: Any) -> None:
        with self._lock:
            self._created[session_id] = dict(kw)
        super().create_session(session_id, **kw)

    def update_session(self, session_id: str, **values: Any) -> None:
        super().update_session(session_id, **values)
        with self._lock:  # what a local record of a loss must carry (resources: for gc)
            if session_id in self._created:
                known = self._created[session_id].setdefault("_updates", {})
                known.update({k: v for k, v in values.items() if k in _LOCAL_FIELDS})

    def _append(self, kind: Any, session_id: str, row: dict[str, Any],
                detail: dict[str, Any] | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        out = super()._append(kind, session_id, row, detail)
        with self._lock:
            if session_id in self._created:
                self._heads[session_id] = (out[0]["seq"], out[0]["hash"])
        return out

    def _lost(self, session_id: str, reason: str) -> None:
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
            self._record_locally(session_id, reason, created, seq, head)
        except Exception as e:  # the kill still happens; the log has the reason
            log.error("sandbox: session %s: writing the loss to %s failed: %s",
                      session_id, self.path, e)
        if handler is not None:
            supervisor.spawn(handler, reason, name="sandbox-store-lost")

    _replayed: set[tuple[str, str]] = set()  # (database, session id): done, or not ours

    def replay_lost(self) -> list[str]:
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
        for r in rows:
            key = (self.key, str(r["id"]))
            if key in PgStore._replayed:
                continue
            try:
                session = self.get_session(str(r["id"]))
            except NotFound:
                PgStore._replayed.add(key)
                continue
            if session.host != self.host or not session.live:
                PgStore._replayed.add(key)
                continue
            import json

            try:
                detail = json.loads(r["detail"])
            except (TypeError, ValueError):
                detail = {}
            reason = str(r["reason"] or "lost the event store")
            self.add_event(session.id, "store.lost", {**detail, "replayed": True,
                                                      "replayed_at": time.time()},
                           severity="critical", action="kill", rule="store.lost")
            if self.finish_session(session.id, "killed", reason):
                self.add_event(session.id, "session.end",
                               {"state": "killed", "reason": reason, "replayed": True},
                               severity="warning")
            self.mark_controls_handled(session.id)
            PgStore._replayed.add(key)
            done.append(session.id)
        return done

    def _record_locally(self, session_id: str, reason: str, created: dict[str, Any],
                        seq: int | None, head: str | None) -> None:
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


# `Store(url)` of a PostgreSQL URL opens this backend (the `store` module imports this one).
register_backend("postgresql", PgStore)
