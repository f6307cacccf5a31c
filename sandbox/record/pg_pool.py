"""PostgreSQL's connections: psycopg (loaded on first use), the libpq settings a fleet
store wants, the shared SQL translated (`PgDb`), and one small pool per database and
process (`Pool`), shared by every PgStore object of the process.

Nothing here knows the store's tables: `pg.PgStore` is the backend built on it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from ..errors import DependencyMissing

if TYPE_CHECKING:
    import psycopg

# libpq settings a fleet store wants unless the URL says otherwise: a dead server or a
# cut network is noticed within seconds, not after the kernel's TCP timeout (minutes).
DEFAULTS = {
    "connect_timeout": "10", "keepalives": "1", "keepalives_idle": "5",
    "keepalives_interval": "2", "keepalives_count": "3", "tcp_user_timeout": "10000",
    "application_name": "sandbox",
}


def load_psycopg() -> Any:
    """psycopg 3, imported on first use: a SQLite store never pays for it, and a missing
    extra says how to install it."""
    try:
        import psycopg
    except ImportError as e:
        raise DependencyMissing(
            "the PostgreSQL store needs psycopg 3: pip install 'ringfence[postgres]' "
            f"(or: pip install 'psycopg[binary]>=3.2'); {e}") from e
    return psycopg


class PgDb:
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


class Pool:
    """The connections to one database, shared by every PgStore of this process: a
    process running a thousand sandboxes holds at most POOL_SIZE connections, and a
    transaction never waits behind another thread's (each borrows its own)."""

    _pools: dict[tuple[str, int], Pool] = {}
    _migrated: set[tuple[str, int]] = set()
    _guard = threading.Lock()

    @classmethod
    def of(cls, url: str, connect: Callable[[], psycopg.Connection[dict[str, Any]]]
           ) -> Pool:
        key = (url, os.getpid())  # a forked child never shares its parent's sockets
        with cls._guard:
            pool = cls._pools.get(key)
            if pool is None:
                size = int(os.environ.get("SANDBOX_STORE_POOL") or POOL_SIZE)
                pool = cls._pools[key] = Pool(connect, max(1, size))
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
