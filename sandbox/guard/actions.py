"""Actions and severities, and their order: record < flag < block < kill.

- record: keep the verdict as an event; nobody is told.
- flag: an alert (the run summary, the TUI, `Result.alerts`).
- block: refuse what was asked. For command text the command never runs and the caller
  gets a result explaining why; for a connection the gateway has already denied it; for a
  process already running the monitor ends that process.
- kill: end the whole session.
"""

from __future__ import annotations

from collections.abc import Iterable

ACTIONS: tuple[str, ...] = ("record", "flag", "block", "kill")  # same as store.ACTIONS
SEVERITIES: tuple[str, ...] = ("info", "warning", "alert", "critical")  # = store.SEVERITIES

# The severity a verdict gets when its rule does not name one.
DEFAULT_SEVERITY = {"record": "info", "flag": "warning", "block": "alert", "kill": "critical"}


def rank(action: str) -> int:
    """Position of an action in record < flag < block < kill (ValueError if unknown)."""
    return ACTIONS.index(action)


def stronger(a: str, b: str) -> str:
    """The stronger of two actions."""
    return a if rank(a) >= rank(b) else b


def strongest(actions: Iterable[str]) -> str:
    """The strongest of some actions; "record" when there are none."""
    best = "record"
    for action in actions:
        best = stronger(best, action)
    return best


def at_least(action: str, minimum: str) -> bool:
    """True when `action` is `minimum` or stronger."""
    return rank(action) >= rank(minimum)
