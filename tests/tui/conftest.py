"""TUI test fixtures: a store per test (from the suite's SANDBOX_STATE_DIR), fixture data,
an app factory with a pinned clock, and cursor blink off so snapshots are stable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_tui.app import SandboxApp
from textual.pilot import Pilot
from textual.widgets import Input

from sandbox.record import Store

from .fixtures import T0, fill


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs never blink: a snapshot must not depend on when it was taken."""
    original = Input._on_mount

    def on_mount(self: Input, event: Any) -> None:
        original(self, event)
        self.cursor_blink = False

    monkeypatch.setattr(Input, "_on_mount", on_mount)


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    s = Store()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def filled(store: Store) -> Store:
    fill(store)
    return store


@pytest.fixture
def make_app() -> Callable[..., SandboxApp]:
    def factory(store: Store, *, pinned: bool = True, **kw: Any) -> SandboxApp:
        kw.setdefault("poll_interval", 0.1)
        if pinned:
            kw.setdefault("clock", lambda: T0)
        return SandboxApp(store, **kw)

    return factory


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one async scenario (no pytest-asyncio here: a plain event loop per test)."""
    asyncio.run(coro)


async def wait_until(pilot: Pilot[Any], pred: Callable[[], object], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Let the app run until `pred()` is truthy; fail after `timeout` seconds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)
