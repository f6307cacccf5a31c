"""Kill switch: `k` and `K` ask first; cancel does nothing; confirm kills real sandboxes
through sandbox.control.kill_session and the row turns killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sandbox_tui.confirm import ConfirmModal
from sandbox_tui.main_screen import MainScreen
from sandbox_tui.sessions_table import SessionsTable

from sandbox import Sandbox
from sandbox.record import Store
from tests.helpers import gone, tree

from .conftest import run, wait_until


def modal_text(app) -> str:
    return " ".join(str(label.render()) for label in app.screen.query("Label"))


def test_cancel_leaves_the_session_alone(filled: Store, make_app) -> None:
    """k opens the confirmation; n (or escape) closes it and no kill is requested."""

    async def scenario() -> None:
        app = make_app(filled)
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.screen.query_one(SessionsTable)
            await wait_until(pilot, lambda: table.row_count == 4)
            for cancel in ("n", "escape"):
                await pilot.press("k")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
                assert "Kill session 9988776655" in modal_text(app)
                await pilot.press(cancel)
                await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.pause(0.2)
            assert filled.pending_controls("9988776655") == []
            assert filled.get_session("9988776655")["state"] == "running"

    run(scenario())


def test_k_on_an_ended_session_says_so_without_asking(filled: Store, make_app) -> None:
    """Nothing to kill: a warning, no modal."""

    async def scenario() -> None:
        app = make_app(filled)
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.screen.query_one(SessionsTable)
            await wait_until(pilot, lambda: table.row_count == 4)
            await pilot.press("down", "down", "down", "k")
            await pilot.pause(0.05)
            assert isinstance(app.screen, MainScreen)
            assert any("already exited" in n.message for n in app._notifications)

    run(scenario())


def test_real_sandbox_appears_live_and_confirmed_kill_ends_it(store: Store, make_app,
                                                              workspace: Path) -> None:
    """A real sandbox started after the app shows up with its command; k, y kills it: the
    store says killed, the row says killed, and the jail's processes are gone."""

    async def scenario() -> None:
        app = make_app(store, pinned=False)
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.screen.query_one(SessionsTable)
            sb = Sandbox(workdir=workspace)
            await asyncio.to_thread(sb.start)
            try:
                await wait_until(pilot, lambda: table.row_count == 1, 2.0, "the sandbox row")
                await wait_until(pilot, lambda: str(table.get_cell(sb.id, "state")) == "running",
                                 1.0, "the row to say running")
                await asyncio.to_thread(sb.run, "echo hello")
                await wait_until(pilot, lambda: str(table.get_cell(sb.id, "cmds")) == "1", 2.0)
                pid = store.get_session(sb.id)["jail_pid"]
                pids = tree(pid)
                await pilot.press("k")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
                await pilot.press("y")
                await wait_until(pilot, lambda: store.get_session(sb.id)["state"] == "killed",
                                 5.0, "the store to say killed")
                await wait_until(pilot, lambda: all(gone(p) for p in pids), 5.0, "the jail to die")
                await wait_until(pilot, lambda: str(table.get_cell(sb.id, "state")) == "killed",
                                 1.0, "the row to say killed")
                assert "killed by" in store.get_session(sb.id)["reason"]
                assert "via tui" in store.get_session(sb.id)["reason"]
            finally:
                await asyncio.to_thread(sb.close)

    run(scenario())


def test_kill_all_names_how_many_and_kills_every_live_one(store: Store, make_app,
                                                          workspace: Path) -> None:
    """K counts only live sessions in its question; y kills them all."""

    async def scenario() -> None:
        app = make_app(store, pinned=False)
        async with app.run_test(size=(160, 48)) as pilot:
            done = Sandbox(workdir=workspace)
            await asyncio.to_thread(done.start)
            await asyncio.to_thread(done.close)
            boxes = [Sandbox(workdir=workspace), Sandbox(workdir=workspace)]
            for sb in boxes:
                await asyncio.to_thread(sb.start)
            try:
                table = app.screen.query_one(SessionsTable)
                await wait_until(pilot, lambda: table.row_count == 3, 2.0)
                pids = [store.get_session(sb.id)["jail_pid"] for sb in boxes]
                await pilot.press("K")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
                assert "Kill all 2 live sessions?" in modal_text(app)
                await pilot.press("y")
                for sb in boxes:
                    await wait_until(pilot, lambda sb=sb: store.get_session(sb.id)["state"] == "killed",
                                     5.0)
                await wait_until(pilot, lambda: all(gone(p) for p in pids), 5.0)
                assert store.get_session(done.id)["state"] == "exited"
                await wait_until(pilot, lambda: app.last_kill_results == {
                    sb.id: "killed" for sb in boxes}, 2.0)
            finally:
                for sb in boxes:
                    await asyncio.to_thread(sb.close)

    run(scenario())
