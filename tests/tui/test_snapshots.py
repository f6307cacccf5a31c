"""Looks, pinned: the main screen, the session screen and the kill modal at 160x48, from
deterministic fixture data and a pinned clock (regenerate with --snapshot-update)."""

from __future__ import annotations

from sandbox_tui.confirm import ConfirmModal
from sandbox_tui.session_screen import SessionScreen
from sandbox_tui.sessions_table import SessionsTable

from sandbox.record import Store

from .conftest import wait_until

SIZE = (160, 48)


async def loaded(pilot) -> None:
    table = pilot.app.screen.query_one(SessionsTable)
    feed = pilot.app.screen.query_one("#alerts")
    await wait_until(pilot, lambda: table.row_count == 4 and feed.row_count == 2)


def test_main_screen(filled: Store, make_app, snap_compare) -> None:
    """Four sessions (miner killed by rule, blocked tunnel, clean run, exited) and the feed."""
    assert snap_compare(make_app(filled), terminal_size=SIZE, run_before=loaded)


def test_session_screen(filled: Store, make_app, snap_compare) -> None:
    """The miner's session: summary figures and its commands tab."""

    async def open_miner(pilot) -> None:
        await loaded(pilot)
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionScreen))
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.table("commands").row_count == 2)

    assert snap_compare(make_app(filled), terminal_size=SIZE, run_before=open_miner)


def test_session_screen_alerts_tab(filled: Store, make_app, snap_compare) -> None:
    """The miner's alerts tab, with the rule's evidence."""

    async def open_alerts(pilot) -> None:
        await loaded(pilot)
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionScreen))
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.table("alerts").row_count == 1)
        await pilot.press("3")

    assert snap_compare(make_app(filled), terminal_size=SIZE, run_before=open_alerts)


def test_kill_modal(filled: Store, make_app, snap_compare) -> None:
    """k on the selected session asks before killing it."""

    async def ask(pilot) -> None:
        await loaded(pilot)
        await pilot.press("down", "k")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal))

    assert snap_compare(make_app(filled), terminal_size=SIZE, run_before=ask)


def test_kill_all_modal(filled: Store, make_app, snap_compare) -> None:
    """K names how many live sessions it will kill."""

    async def ask(pilot) -> None:
        await loaded(pilot)
        await pilot.press("K")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal))

    assert snap_compare(make_app(filled), terminal_size=SIZE, run_before=ask)
