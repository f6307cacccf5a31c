"""The event store's schema and vocabulary, and how a store is brought to the current
schema (`apply_migrations`, both backends). Kept apart from the code that reads and
writes rows: a schema change is one module's diff.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from ..errors import StoreError
from . import chain
from .db import Db

SCHEMA_VERSION = 4
# 2: commands.output_raw (the exact output bytes when the text column cannot hold them);
#    session.start carries `record_version` and a finished session's session.end a `seal`.
# 3: `host` on commands, events and controls (the host each row came from, chained);
#    the `schema_migrations` table logs every migration applied to a store.
# 4: the `hosts` table (one heartbeat row per supervisor process with live sessions: a
#    host none of whose processes beat within the timeout is lost), an index of live
#    sessions by host, and `events.tx` (the
#    writing transaction's id in PostgreSQL: readers of the fleet-wide feed use it as a
#    commit-order watermark, see `Store.events_after`).
RECORD_VERSION = 2

SEVERITIES = ("info", "warning", "alert", "critical")
ACTIONS = ("record", "flag", "block", "kill")
LIVE_STATES = ("starting", "running")
FINAL_STATES = ("exited", "killed", "failed")


def is_alert(action: str, severity: str) -> bool:
    """An alert is anything a rule flagged, blocked or killed, or any warning-or-worse."""
    return action != "record" or SEVERITIES.index(severity) >= SEVERITIES.index("alert")


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    kind TEXT NOT NULL,               -- api | run | shell
    state TEXT NOT NULL,              -- starting | running | exited | killed | failed
    reason TEXT,
    created REAL NOT NULL,
    ended REAL,
    exit_code INTEGER,
    owner_pid INTEGER NOT NULL,
    owner_start TEXT NOT NULL,        -- /proc start time: pid reuse cannot fool gc
    host TEXT NOT NULL,
    "user" TEXT NOT NULL,
    agent_uid INTEGER,
    workdir TEXT NOT NULL,
    argv TEXT NOT NULL,               -- JSON
    jail_name TEXT,
    jail_pid INTEGER,
    resources TEXT NOT NULL DEFAULT '{}',  -- JSON: netns, veth, cgroup ... for cleanup
    current_command TEXT,
    n_commands INTEGER NOT NULL DEFAULT 0,
    n_events INTEGER NOT NULL DEFAULT 0,
    n_alerts INTEGER NOT NULL DEFAULT 0,
    n_denied INTEGER NOT NULL DEFAULT 0,
    max_severity TEXT NOT NULL DEFAULT 'info',
    cpu_percent REAL,
    mem_bytes INTEGER,
    gpu_mem_bytes INTEGER,
    gpu_util REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    head_hash TEXT NOT NULL DEFAULT '""" + chain.GENESIS + """',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    output TEXT NOT NULL,             -- UTF-8 text, NUL shown as U+2400
    output_raw BLOB,                  -- the exact bytes when `output` is not (binary, NUL)
    exit_code INTEGER,
    started REAL NOT NULL,
    duration REAL NOT NULL,
    timed_out INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL,
    source TEXT NOT NULL,             -- api | shell | run
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    host TEXT                         -- NULL: recorded before schema 3
);
CREATE INDEX IF NOT EXISTS commands_session ON commands(session_id, seq);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    action TEXT NOT NULL,
    rule TEXT,
    detail TEXT NOT NULL,             -- JSON
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    host TEXT,
    tx INTEGER                        -- PostgreSQL: the inserting transaction (xid8)
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id, seq);
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    ts REAL NOT NULL,
    action TEXT NOT NULL,             -- kill
    requested_by TEXT NOT NULL,
    handled REAL,
    host TEXT                         -- the requester's host
);
CREATE INDEX IF NOT EXISTS controls_pending ON controls(session_id, handled);
-- Live sessions by host: gc's lost-host check and `ls --host --live` never scan history.
CREATE INDEX IF NOT EXISTS sessions_live ON sessions(host) WHERE state IN ('starting','running');
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    owner_start TEXT NOT NULL,        -- with pid: one supervisor process
    started REAL NOT NULL,
    last_seen REAL NOT NULL,          -- the database's clock (PostgreSQL), not the host's
    beat REAL NOT NULL,               -- the process's heartbeat interval, seconds
    sessions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (host, pid, owner_start)
);
"""

# The versioned migrations, both backends: (version, description, columns added as
# (table, column, SQLite declaration)). A new store is created at SCHEMA_VERSION by
# `SCHEMA`; an older one gets every migration above its version, each logged in
# `schema_migrations`. Columns only: the chain's rows are never rewritten.
MIGRATIONS: tuple[tuple[int, str, tuple[tuple[str, str, str], ...]], ...] = (
    (2, "commands.output_raw: exact output bytes", (("commands", "output_raw", "BLOB"),)),
    (3, "host on every row", (("commands", "host", "TEXT"), ("events", "host", "TEXT"),
                              ("controls", "host", "TEXT"))),
    (4, "hosts heartbeat table; events.tx commit-order watermark",
     (("events", "tx", "INTEGER"),)),
)

# PostgreSQL: the same tables, translated (REAL -> double precision, INTEGER -> bigint,
# BLOB -> bytea, INTEGER PRIMARY KEY -> identity). Same names, same columns, same chain.
PG_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "BLOB": "BYTEA", "TEXT": "TEXT"}


def pg_schema() -> str:
    """`SCHEMA` in PostgreSQL's dialect."""
    out = SCHEMA.replace("id INTEGER PRIMARY KEY,",
                          "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,")
    out = out.replace("version INTEGER PRIMARY KEY", "version BIGINT PRIMARY KEY")
    out = out.replace("    tx INTEGER ", f"    tx BIGINT DEFAULT {PG_TX} ")
    return re.sub(r"(?<=\s)(REAL|INTEGER|BLOB)(?=[\s,])",
                  lambda m: PG_TYPES[m.group(1)], out)


# PostgreSQL only: every event row carries its transaction's id (64-bit, never wraps),
# indexed, so a reader can find rows committed after it moved past their ids.
PG_TX = "(pg_current_xact_id()::text::bigint)"
# Run after the migrations (a store from before schema 4 gains the column first).
PG_EXTRA = "CREATE INDEX IF NOT EXISTS events_tx ON events(tx)"

# The session row's fields a finished session's `session.end` seals (the counters are
# checked against the chain itself, so they need no seal).
SEALED_FIELDS = (
    "profile", "kind", "state", "reason", "exit_code", "created", "ended", "agent_uid",
    "workdir", "argv", "user", "host", "owner_pid", "jail_name",
)

SESSION_UPDATABLE = {
    "workdir", "state", "reason", "ended", "exit_code", "agent_uid", "jail_name", "jail_pid",
    "resources", "current_command", "cpu_percent", "mem_bytes", "gpu_mem_bytes", "gpu_util",
}


def apply_migrations(db: Db, where: str, columns: Callable[[str], set[str]],
                     translate: Callable[[str], str] = lambda decl: decl) -> None:
    """Bring a store (inside a write transaction, tables created) to SCHEMA_VERSION: add
    the columns of every migration above its version and log each one. `columns(table)`
    names a table's columns (each backend asks its own catalogue); `translate` turns a
    SQLite declaration into the backend's type."""
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
