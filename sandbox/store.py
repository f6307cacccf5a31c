"""The event store: SQLite in WAL mode (the default), or PostgreSQL (`store_pg`, a
fleet of hosts writing one store), outside every jail.

Tables: `sessions` (one row per session, with live counters the TUI reads cheaply),
`commands` and `events` (append-only, hash-chained per session, see `chain`), and
`controls` (kill requests from any process, acted on by the session's owner).

Many processes write at once: each write is one short `BEGIN IMMEDIATE` transaction and
SQLite's busy timeout queues writers, so nothing is lost. One `Store` object is safe to
share between threads (a lock guards its connection).

`Store` is the SQLite backend and the logic every backend shares (the chain, the
counters, `verify`: `store_core`); `open_store("postgresql://...")` (or `Store(...)` of
the same URL), or `SANDBOX_STORE` set to such a URL, gives the PostgreSQL one. Rows are
typed (`store_rows`) and read like dicts too.

This module is where the backends meet: `store_pg` subclasses `store_core.Store` and
registers itself with it when imported, and this module imports both, so whoever takes
`Store` from here can open either, while neither backend imports the other's module.
"""

from __future__ import annotations

from pathlib import Path

from . import paths
from .store_api import is_pg_url
from .store_core import (
    ACTIONS,
    FINAL_STATES,
    LIVE_STATES,
    SCHEMA_VERSION,
    SEVERITIES,
    ChainRow,
    CommandRow,
    ControlRow,
    EventCursor,
    EventRow,
    SessionRow,
    Store,
    StoreBackend,
    StoreUnavailable,
    check_session_id,
    is_alert,
    output_bytes_of,
)
from .store_pg import PgStore

__all__ = ["ACTIONS", "FINAL_STATES", "LIVE_STATES", "SCHEMA_VERSION", "SEVERITIES",
           "ChainRow", "CommandRow", "ControlRow", "EventCursor", "EventRow", "PgStore",
           "SessionRow", "Store", "StoreBackend", "StoreUnavailable", "check_session_id",
           "is_alert", "open_store", "output_bytes_of"]


def open_store(url: Path | str | None = None) -> Store:
    """The store `url` names: a `postgresql://` URL opens PgStore, anything else the
    SQLite file it names; None: `SANDBOX_STORE`, else the state dir's `sandbox.db`."""
    chosen = paths.store_url() if url is None else url
    if is_pg_url(chosen):
        return PgStore(url)
    return Store(url)
