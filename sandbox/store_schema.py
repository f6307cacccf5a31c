"""The event store's schema and vocabulary (kept apart from the code that uses it)."""

from __future__ import annotations

from . import chain

SCHEMA_VERSION = 2
# 2: commands.output_raw (the exact output bytes when the text column cannot hold them);
#    session.start carries `record_version` and a finished session's session.end a `seal`.
RECORD_VERSION = 2

SEVERITIES = ("info", "warning", "alert", "critical")
ACTIONS = ("record", "flag", "block", "kill")
LIVE_STATES = ("starting", "running")
FINAL_STATES = ("exited", "killed", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
    user TEXT NOT NULL,
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
    hash TEXT NOT NULL
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
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id, seq);
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    ts REAL NOT NULL,
    action TEXT NOT NULL,             -- kill
    requested_by TEXT NOT NULL,
    handled REAL
);
CREATE INDEX IF NOT EXISTS controls_pending ON controls(session_id, handled);
"""

# Columns added after schema 1: (table, column, declaration), applied by the migration.
_ADDED_COLUMNS = (("commands", "output_raw", "BLOB"),)

# The session row's fields a finished session's `session.end` seals (the counters are
# checked against the chain itself, so they need no seal).
SEALED_FIELDS = (
    "profile", "kind", "state", "reason", "exit_code", "created", "ended", "agent_uid",
    "workdir", "argv", "user", "host", "owner_pid", "jail_name",
)

_SESSION_UPDATABLE = {
    "workdir", "state", "reason", "ended", "exit_code", "agent_uid", "jail_name", "jail_pid",
    "resources", "current_command", "cpu_percent", "mem_bytes", "gpu_mem_bytes", "gpu_util",
}
