"""The per-session hash chain: pure functions, shared by the store and `sandbox verify`.

Each command and event row of a session carries `seq` (one counter per session across
both tables), `prev_hash` and `hash = sha256(prev_hash || canonical(row))`. Editing,
deleting or reordering any row breaks every hash after it; rewriting the whole chain
changes the head hash, which `run` prints and can send off-box.

A command's `output_raw` (the exact bytes, kept only when the text column cannot hold
them) is hashed as hex when present; rows without it hash exactly as before it existed.
Likewise a row's `host` (schema 3: the host that wrote it) is hashed when set, so rows
recorded before it hash as they always did, and no row's host can be edited unseen.
The session row itself is covered too: `Store.verify` checks its counters against the
rows and its summary fields against the `seal` of the final `session.end` event.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64

COMMAND_FIELDS = (
    "session_id", "seq", "text", "output", "exit_code", "started", "duration",
    "timed_out", "truncated", "output_bytes", "source",
)
EVENT_FIELDS = (
    "session_id", "seq", "ts", "kind", "severity", "action", "rule", "detail",
)


def canonical(kind: str, row: dict[str, Any]) -> bytes:
    """The bytes that are hashed for one row: sorted keys, no whitespace, UTF-8."""
    keys = COMMAND_FIELDS if kind == "command" else EVENT_FIELDS
    body = {k: row.get(k) for k in keys}
    body["_type"] = kind
    if kind == "command" and row.get("output_raw") is not None:
        body["output_raw"] = bytes(row["output_raw"]).hex()
    if row.get("host") is not None:
        body["host"] = row["host"]
    # bools are stored as 0/1 in SQLite; hash them as ints so a re-read row verifies.
    for k, v in body.items():
        if isinstance(v, bool):
            body[k] = int(v)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass")


def link(prev_hash: str, kind: str, row: dict[str, Any]) -> str:
    """The hash of a row given the previous row's hash."""
    return hashlib.sha256(prev_hash.encode() + canonical(kind, row)).hexdigest()


def verify_rows(rows: list[tuple[str, dict[str, Any]]]) -> tuple[bool, str, str]:
    """Check a session's rows in seq order.

    Returns (ok, message, head_hash). The message names the first broken row.
    """
    prev = GENESIS
    expected_seq = 1
    for kind, row in rows:
        where = f"{kind} seq={row.get('seq')} (row id {row.get('id')})"
        if row.get("seq") != expected_seq:
            return False, f"{where}: expected seq {expected_seq} (row missing or reordered)", prev
        if row.get("prev_hash") != prev:
            return False, f"{where}: prev_hash does not match the row before it", prev
        if link(prev, kind, row) != row.get("hash"):
            return False, f"{where}: content does not match its hash (edited)", prev
        prev = row["hash"]
        expected_seq += 1
    return True, f"OK: {expected_seq - 1} rows, head {prev}", prev
