"""The `/` filter: whitespace-separated terms, all must match (pure, no Textual).

A bare term matches the id, profile, state or host as a substring (case-insensitive);
`id:`, `profile:`, `state:` or `host:` limits a term to that field; `live` and `ended`
are shorthands for the live and final states.
"""

from __future__ import annotations

from typing import Any

from sandbox.record import FINAL_STATES, LIVE_STATES

FIELDS = ("id", "profile", "state", "host")


def matches(session: dict[str, Any], query: str) -> bool:
    for term in query.lower().split():
        field, sep, value = term.partition(":")
        if sep and field in FIELDS:
            if value not in str(session.get(field, "")).lower():
                return False
            continue
        if term == "live":
            if session.get("state") not in LIVE_STATES:
                return False
            continue
        if term == "ended":
            if session.get("state") not in FINAL_STATES:
                return False
            continue
        if not any(term in str(session.get(f, "")).lower() for f in FIELDS):
            return False
    return True
