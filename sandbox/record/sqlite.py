"""The SQLite backend (the default: one host's file, in WAL mode), and the `Store` class
every backend is: its parts (`sessions`, `appends`, `reads`, `verify`, `controls`) are
shared; this module adds SQLite's connection and transactions.

Many processes write at once: each write is one short `BEGIN IMMEDIATE` transaction and
SQLite's busy timeout queues writers, so nothing is lost. One `Store` object is safe to
share between threads (a lock guards its connection).

`Store(url)` opens the backend registered for the URL (`register_backend`: `pg`
registers PgStore when it is imported, and the record's door, `sandbox.record`, imports
it), else the SQLite file the path names. This module imports no other backend.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import StoreError
from .api import ControlListener, is_pg_url
from .appends import Appends
from .controls import Controls
from .db import Db, SqliteDb
from .reads import Reads
from .schema import SCHEMA, apply_migrations
from .sessions import Sessions
from .verify import Verify

OPEN_RETRY_S = 5.0  # a new store opened by several processes at once: how long to retry

# Backends other than SQLite, by the URL scheme they open ("postgresql"; see `pg`).
_BACKENDS: dict[str, type[Store]] = {}


def register_backend(scheme: str, backend: type[Store]) -> None:
    """Have `Store(url)` open `backend` for URLs of `scheme` (`pg` registers PgStore)."""
    _BACKENDS[scheme] = backend


def _backend(scheme: str) -> type[Store]:
    try:
        return _BACKENDS[scheme]
    except KeyError:
        raise StoreError(f"no {scheme} store backend is loaded: import Store from "
                         "sandbox.record (or sandbox.record), where the backends meet") from None


class Store(Verify, Sessions, Appends, Reads, Controls):
    """The event store. `Store()` opens the default store: the SQLite file under the state
    dir, or what `SANDBOX_STORE` names; `Store(path)` a SQLite file, `Store(":memory:")` a
    private in-memory one (tests), `Store("postgresql://...")` a PostgreSQL database
    (`pg.PgStore`, a subclass). This class is the SQLite backend; the code both share
    (the chain, the counters, `verify`) is in the parts it is made of."""

    path: Path
    host: str
    # A fleet's store (PostgreSQL): its sessions may belong to other hosts, each host's
    # supervisors beat in `hosts`, and a kill may cross hosts. SQLite: one host's file.
    shared = False

    def __new__(cls, path: Path | str | None = None) -> Store:
        if cls is Store:
            url = paths.store_url() if path is None else path
            if is_pg_url(url):
                return super().__new__(_backend("postgresql"))
        return super().__new__(cls)

    @staticmethod
    def default_path() -> Path:
        """The SQLite file `Store()` opens: `SANDBOX_STORE` (a path or `sqlite:///path`)
        unless `SANDBOX_DB` is set, else the state dir's `sandbox.db`."""
        chosen = paths.store_url()
        if chosen and not os.environ.get("SANDBOX_DB"):
            return Path(chosen.removeprefix("sqlite://"))
        return paths.db_path()

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else self.default_path()
        self.host = paths.host_id()
        self._lock = threading.RLock()
        deadline = time.monotonic() + OPEN_RETRY_S
        while True:
            try:
                self._open()
                break
            except sqlite3.OperationalError as e:
                # Processes opening a new store at once (a fleet's agents starting): the
                # switch to WAL and WAL recovery answer "locked" without waiting in the
                # busy handler. Bounded: past the deadline it is a real error.
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise self._open_error(e) from e
                with suppress(sqlite3.Error, AttributeError):
                    self._db.close()
                time.sleep(0.02)
            except sqlite3.Error as e:
                raise self._open_error(e) from e
        with suppress(OSError):
            os.chmod(self.path, 0o600)

    def _open(self) -> None:
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

    def _open_error(self, e: sqlite3.Error) -> StoreError:
        return StoreError(f"cannot open the event store {self.path}: {e} "
                          "(check permissions, or set SANDBOX_STATE_DIR)")

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
            self._db.executescript(SCHEMA)
        with self._tx() as db:
            apply_migrations(db, self.key, lambda table: {
                r["name"] for r in db.all(f"PRAGMA table_info({table})")})

    @contextmanager
    def _tx(self, session_id: str | None = None) -> Iterator[Db]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, every writer queued)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteDb(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[Db]:
        """A read transaction: what it reads is one consistent state."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield SqliteDb(self._db)
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return SqliteDb(self._db).all(sql, args)
