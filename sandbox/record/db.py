"""What every part of the store is built on: a connection inside a transaction (`Db`),
SQLite's (`SqliteDb`), and `Plumbing`, the few methods a backend provides.

The store's parts (`sessions`, `appends`, `reads`, `verify`, `controls`) are written once
against `Plumbing` and shared by both backends: SQLite (`sqlite.Store`) and PostgreSQL
(`pg.PgStore`) differ only in how they open a transaction, query, and tell the time.
Every SQL string is in SQLite's dialect (`?` placeholders, `"user"` quoted); PostgreSQL's
`Db` translates it (`pg_pool.PgDb`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Db(Protocol):
    """One backend's connection, inside a transaction: SQL in SQLite's dialect (`?`
    placeholders, `"user"` quoted), rows as dicts."""

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    def run(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def insert(self, table: str, row: dict[str, Any]) -> int: ...


class SqliteDb:
    """A sqlite3 connection as a `Db`."""

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


class Plumbing:
    """What a backend provides to the store's shared parts. The defaults are the
    single-host ones (SQLite); `PgStore` overrides the clock, the row lock and the
    watermark."""

    host: str  # written into every row this object appends

    _for_update = ""  # how a write locks the session row (SQLite: the whole database)
    # A session row's `updated` by the store's clock, like the heartbeats: on PostgreSQL
    # the server's, one clock for every host (a dead host whose clock ran ahead looked
    # busy to the lost-host check for as long as it was ahead), here this host's.
    _now_sql = "?"

    def _tx(self, session_id: str | None = None) -> AbstractContextManager[Db]:
        """A write transaction (`session_id`: whose record it writes, for the fail-closed
        path of a backend that can lose its connection)."""
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[Db]:
        """A read transaction: what it reads is one consistent state."""
        raise NotImplementedError

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One read outside any transaction."""
        raise NotImplementedError

    def _now(self) -> tuple[float, ...]:
        """The parameters `_now_sql` takes (SQLite: this host's time; PostgreSQL: none)."""
        return (time.time(),)

    def _clock(self, db: Db) -> float:
        """Now, by the store's clock (PostgreSQL: the server's, the same for every host)."""
        return time.time()

    def _watermark(self, db: Db) -> int | None:
        """The oldest transaction still running as `db`'s snapshot sees it (PostgreSQL);
        None where ids are assigned in commit order (SQLite: one writer at a time)."""
        return None
