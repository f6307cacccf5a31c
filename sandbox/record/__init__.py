"""The record: every session's commands and events, hash-chained, in an event store
outside every jail. SQLite in WAL mode (the default) or PostgreSQL (a fleet of hosts
writing one store).

Tables: `sessions` (one row per session, with live counters the TUI reads cheaply),
`commands` and `events` (append-only, hash-chained per session, see `sandbox.record.chain`),
`controls` (kill requests from any process, acted on by the session's owner) and `hosts`
(heartbeats).

This package is where the backends meet: `pg` subclasses `sqlite.Store` and registers
itself with it when imported, and this module imports both, so whoever takes `Store`
from here can open either, while neither backend imports the other's module.

The layers, each importing only those below it:

    __init__            the door: `Store`, `open_store`, `session_store`, the public names
    pg                  PostgreSQL: the connection, the kill channel   -> pg_lost, pg_pool
    pg_lost             failing closed when PostgreSQL is lost         -> sqlite
    sqlite              `Store`: SQLite's connection, made of the parts below
    verify, appends, reads, controls, sessions   the parts both backends share -> db
    schema, db, rows, api                        tables and vocabulary, the Db and
                                                 Plumbing protocols, typed rows, the interface
    export              JSONL, asciicast and report of one session (reads a `Store`)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from .. import paths
from .api import StoreBackend, StoreUnavailable, is_pg_url
from .appends import output_bytes_of
from .pg import PgStore
from .rows import ChainRow, CommandRow, ControlRow, EventCursor, EventRow, SessionRow
from .schema import ACTIONS, FINAL_STATES, LIVE_STATES, SCHEMA_VERSION, SEVERITIES, is_alert
from .sessions import check_session_id
from .sqlite import Store

__all__ = ["ACTIONS", "FINAL_STATES", "LIVE_STATES", "SCHEMA_VERSION", "SEVERITIES",
           "ChainRow", "CommandRow", "ControlRow", "EventCursor", "EventRow", "PgStore",
           "SessionRow", "Store", "StoreBackend", "StoreUnavailable", "check_session_id",
           "is_alert", "open_store", "output_bytes_of", "session_store"]


def open_store(url: Path | str | None = None) -> Store:
    """The store `url` names: a `postgresql://` URL opens PgStore, anything else the
    SQLite file it names; None: `SANDBOX_STORE`, else the state dir's `sandbox.db`."""
    chosen = paths.store_url() if url is None else url
    if is_pg_url(chosen):
        return PgStore(chosen)
    # Not `chosen`: Store(None) reads the same choice itself, and also strips a
    # `sqlite://` prefix and lets SANDBOX_DB win, as it always has.
    return Store(url)


_SHARED_KEEP = 8  # store files remembered (tests change the state dir per test)
_shared_lock = threading.Lock()
_shared: OrderedDict[tuple[int, str], tuple[int, Store]] = OrderedDict()


def session_store() -> Store:
    """The store a new session records into, as `open_store()` chooses it. A SQLite file
    gets one connection per process, shared by its sessions: 64 connections to one WAL
    file queue on SQLite's file lock, whose busy handler sleeps 1, 2, 5 ms... between
    tries; one connection queues them on its own lock instead (+18 % execs/s with 64
    sandboxes alive). A file replaced under the same name gets a new connection;
    PostgreSQL a store of its own (its pool)."""
    url = paths.store_url()
    if is_pg_url(url):
        return open_store()
    path = Store.default_path()
    try:
        ino = os.stat(path).st_ino
    except OSError:
        ino = -1  # not made yet: Store() makes it
    key = (os.getpid(), str(path))
    with _shared_lock:
        held = _shared.get(key)
        if held is not None and held[0] == ino and ino != -1:
            _shared.move_to_end(key)
            return held[1]
    store = Store(path)
    with _shared_lock:
        _shared[key] = (os.stat(path).st_ino, store)
        _shared.move_to_end(key)
        while len(_shared) > _SHARED_KEEP:  # forgotten, not closed: sessions hold theirs
            _shared.popitem(last=False)
    return store
