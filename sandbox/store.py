"""The record's old door, kept for its many importers (`from sandbox.store import Store,
open_store, StoreUnavailable`, ...: sandbox/, tui/, tests/): the same names as
`sandbox.record`, where the store now lives. New code imports from `sandbox.record`."""

from __future__ import annotations

from .record import (
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
    PgStore,
    SessionRow,
    Store,
    StoreBackend,
    StoreUnavailable,
    check_session_id,
    is_alert,
    open_store,
    output_bytes_of,
)

__all__ = ["ACTIONS", "FINAL_STATES", "LIVE_STATES", "SCHEMA_VERSION", "SEVERITIES",
           "ChainRow", "CommandRow", "ControlRow", "EventCursor", "EventRow", "PgStore",
           "SessionRow", "Store", "StoreBackend", "StoreUnavailable", "check_session_id",
           "is_alert", "open_store", "output_bytes_of"]
