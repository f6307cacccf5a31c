"""The session screen: commands, network, alerts, processes, resources; full output; follow."""

from __future__ import annotations

import time

from sandbox_tui.output_modal import OutputModal
from sandbox_tui.session_screen import SessionScreen
from sandbox_tui.sessions_table import SessionsTable

from sandbox.record import Store

from .conftest import run, wait_until


async def open_session(app, pilot, downs: int) -> SessionScreen:
    table = app.screen.query_one(SessionsTable)
    await wait_until(pilot, lambda: table.row_count >= downs + 1)
    await pilot.press(*(["down"] * downs), "enter")
    await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen))
    screen = app.screen
    await wait_until(pilot, lambda: screen.session is not None)
    return screen


def texts(screen: SessionScreen, name: str) -> list[list[str]]:
    table = screen.table(name)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_every_tab_shows_its_rows(filled: Store, make_app) -> None:
    """Commands with exit codes and previews; network attempts with verdicts; alerts with
    evidence; processes with argv; GPU samples in resources; figures in the summary."""

    async def scenario() -> None:
        app = make_app(filled)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_session(app, pilot, 2)
            assert screen.session_id == "a1b2c3d4e5"
            commands = texts(screen, "commands")
            assert [c[4] for c in commands] == ["pip install -r requirements.txt",
                                                "python train.py --epochs 3"]
            assert commands[1][2] == "0" and commands[1][3] == "5m01s"
            assert commands[1][5] == "epoch 1/3 loss=0.412 ⏎ epoch 2/3 loss=0.377"
            network = texts(screen, "network")
            assert [(n[1], n[4]) for n in network] == [("dns.query", "deny"), ("net.attempt", "deny")]
            assert "pool.minexmr.com (203.0.113.50:4444)" in network[1][2]
            alerts = texts(screen, "alerts")
            assert alerts[0][1:4] == ["critical", "kill", "mining.stratum"]
            assert "stratum JSON-RPC to pool.minexmr.com:4444" in alerts[0][4]
            assert "./xmrig -o pool.minexmr.com:4444" in texts(screen, "processes")[0][4]
            assert "mem_bytes=6.0G" in texts(screen, "resources")[0][2]
            summary = str(screen.query_one("#summary").render())
            for part in ("CPU 395%", "mem 2.0G", "GPU 6.0G 98%", "1 critical", "denied 2"):
                assert part in summary, part

    run(scenario())


def test_enter_on_a_command_shows_its_full_output(filled: Store, make_app) -> None:
    """Enter on a command opens its whole output; escape closes it."""
    long_output = "".join(f"line {i}\n" for i in range(500))
    filled.add_command("9988776655", text="seq 500", output=long_output, exit_code=0,
                       started=time.time(), duration=0.01)

    async def scenario() -> None:
        app = make_app(filled)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_session(app, pilot, 0)
            await wait_until(pilot, lambda: screen.table("commands").row_count == 1)
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, OutputModal))
            body = str(app.screen.query_one("#output-body").render())
            assert "line 0" in body and "line 499" in body
            await pilot.press("escape")
            assert app.screen is screen

    run(scenario())


def test_follow_mode_tails_new_rows_and_can_be_paused(filled: Store, make_app) -> None:
    """With follow on, the cursor jumps to each new command; `f` turns that off."""

    async def scenario() -> None:
        app = make_app(filled)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_session(app, pilot, 2)
            table = screen.table("commands")
            assert screen.follow and table.cursor_row == 1
            for i in range(3):
                filled.add_command("a1b2c3d4e5", text=f"echo {i}", output=f"{i}\n", exit_code=0,
                                   started=time.time(), duration=0.001)
            await wait_until(pilot, lambda: table.row_count == 5)
            assert table.cursor_row == 4
            await pilot.press("f")
            assert not screen.follow
            filled.add_command("a1b2c3d4e5", text="echo late", output="", exit_code=1,
                               started=time.time(), duration=0.001)
            await wait_until(pilot, lambda: table.row_count == 6)
            assert table.cursor_row == 4
            assert "off" in str(screen.query_one("#summary").render())

    run(scenario())


def test_tab_keys_switch_tabs(filled: Store, make_app) -> None:
    """1-5 switch between the five tabs."""

    async def scenario() -> None:
        app = make_app(filled)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_session(app, pilot, 2)
            for key, name in zip("23451", ("network", "alerts", "processes", "resources", "commands"),
                                 strict=True):
                await pilot.press(key)
                assert screen.table(name).has_focus

    run(scenario())


ESCAPES = "\x1b]2;TUI-TITLE-INJECTED\x1b\\\x1b[31;1mRED\x07\x9b2J"
RAW = ("\x1b", "\x07", "\x9b")


def _clean(text: str) -> bool:
    return not any(c in text for c in RAW)


def test_agent_escapes_are_shown_not_sent_to_the_terminal(store: Store, make_app) -> None:
    """M1: command text, output, argv, reasons and evidence with ESC/OSC/CSI/BEL/C1 reach
    the sessions table, the alert feed, every tab, the summary and the output modal as
    visible text (`␛`), never as raw control characters."""
    from sandbox_tui.alert_feed import AlertFeed

    sid = "e5c0000001"
    store.create_session(sid, profile="default", kind="api", workdir="/w" + ESCAPES,
                         argv=[], owner_pid=1, owner_start="0", host="h", user="u")
    store.update_session(sid, state="running", current_command="sleep 9" + ESCAPES)
    store.add_command(sid, text="printf " + ESCAPES, output="x" + ESCAPES + "y\nnext\n",
                      exit_code=0, started=time.time(), duration=0.01)
    store.add_event(sid, "proc.exec", {"pid": 5, "ppid": 1, "argv": ["true", ESCAPES],
                                       "uid": 1})
    store.add_event(sid, "guard.verdict", {"evidence": "argv " + ESCAPES, "action": "flag"},
                    severity="alert", action="flag", rule="custom.x")

    async def scenario() -> None:
        app = make_app(store, pinned=False)
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.screen.query_one(SessionsTable)
            feed = app.screen.query_one(AlertFeed)
            await wait_until(pilot, lambda: table.row_count == 1 and feed.row_count == 1)
            cells = [str(c) for c in table.get_row_at(0)] + [str(c) for c in feed.get_row_at(0)]
            assert all(_clean(c) for c in cells), cells
            assert any("␛]2;TUI-TITLE-INJECTED" in c for c in cells), cells
            screen = await open_session(app, pilot, 0)
            await wait_until(pilot, lambda: screen.table("alerts").row_count == 1)
            for name in ("commands", "alerts", "processes"):
                rows = texts(screen, name)
                assert rows and all(_clean(c) for row in rows for c in row), (name, rows)
            assert "␛[31;1mRED" in texts(screen, "commands")[0][4]
            summary = str(screen.query_one("#summary").render())
            assert _clean(summary) and "␛]2;TUI-TITLE-INJECTED" in summary, summary
            await pilot.press("1", "enter")
            await wait_until(pilot, lambda: isinstance(app.screen, OutputModal))
            body = str(app.screen.query_one("#output-body").render())
            command = str(app.screen.query_one("#output-command").render())
            assert _clean(body) and _clean(command), (body, command)
            assert "x␛]2;TUI-TITLE-INJECTED␛\\␛[31;1mRED␇\\x9b2Jy\nnext" in body, body

    run(scenario())
