"""The TUI's pure parts (no Textual): formatting, the filter language, bounded polling."""

from __future__ import annotations

import pytest
from sandbox_tui import fmt
from sandbox_tui.filtering import matches
from sandbox_tui.poller import FleetPoller, SessionPoller, event_group

from sandbox.record import Store

from .fixtures import OWNER_START


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.9, "59s"), (61, "1m01s"),
                                               (3700, "1h01m"), (90_000, "1d01h")])
def test_age(seconds: float, text: str) -> None:
    """Ages are short and stable in width."""
    assert fmt.age(seconds) == text


def test_cells_never_parse_markup_and_stay_on_one_line() -> None:
    """A command like `echo [red]x` shows as typed; newlines do not break rows."""
    cell = fmt.cell("echo [red]x\nnext", width=100)
    assert cell.plain == "echo [red]x⏎next"
    assert fmt.cell("x" * 50, width=10).plain == "x" * 9 + "…"


def test_filter_terms() -> None:
    """Bare terms match id, profile or state; field:value limits; live/ended shorthands."""
    s = {"id": "abc123", "profile": "pypi", "state": "running"}
    assert matches(s, "") and matches(s, "ABC") and matches(s, "pypi run")
    assert matches(s, "state:run") and not matches(s, "profile:run")
    assert matches(s, "live") and not matches(s, "ended") and not matches(s, "gpu")


def test_fleet_poller_keeps_only_the_newest_alerts(store: Store) -> None:
    """However many alerts arrive, the feed holds the newest `alert_limit`, newest first,
    and each poll reads only rows after the last one it saw."""
    store.create_session("s1", profile="p", kind="api", workdir="/", argv=[], owner_pid=1,
                         owner_start=OWNER_START, host="h", user="u")
    poller = FleetPoller(store, alert_limit=5)
    for i in range(12):
        store.add_event("s1", "x", {"i": i}, severity="critical")
    store.add_event("s1", "proc.exec", {"i": 99})  # not an alert
    snap = poller.poll()
    assert [a["detail"]["i"] for a in snap.alerts] == [11, 10, 9, 8, 7]
    # The first poll starts at the newest alerts instead of reading all history.
    assert snap.alerts_seen == 5 and snap.sessions[0]["n_alerts"] == 12
    store.add_event("s1", "x", {"i": 12}, severity="critical")
    snap = poller.poll()
    assert snap.alerts_seen == 6 and snap.alerts[0]["detail"]["i"] == 12


def test_session_poller_is_incremental_and_groups_events(store: Store) -> None:
    """Each poll returns only new commands and events; events sort into their tabs."""
    store.create_session("s1", profile="p", kind="api", workdir="/", argv=[], owner_pid=1,
                         owner_start=OWNER_START, host="h", user="u")
    poller = SessionPoller(store, "s1")
    store.add_command("s1", text="ls", output="", exit_code=0, started=0, duration=0)
    rows = [store.add_event("s1", k, {}, severity=sev, action=act) for k, sev, act in [
        ("net.attempt", "info", "record"), ("dns.query", "warning", "record"),
        ("proc.exec", "info", "record"), ("gpu.sample", "info", "record"),
        ("net.attempt", "info", "block"), ("session.start", "info", "record")]]
    first = poller.poll()
    assert len(first.commands) == 1 and len(first.events) == 6
    assert [event_group(e) for e in first.events] == [
        "network", "network", "processes", "resources", "alerts", None]
    assert rows
    second = poller.poll()
    assert second.commands == [] and second.events == []
