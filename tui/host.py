"""What a screen needs from the app that hosts it, as a Protocol.

`app.py` imports the screens to push them; the screens reach back only through this
small surface (the store and polling settings, the wake registry, and the app-level
actions that open modals or other screens), so no screen imports `SandboxApp` and the
arrows run one way: app -> screens -> host. `SandboxApp` satisfies it structurally.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

from textual.screen import Screen

from sandbox.record import Store


class ScreenHost(Protocol):
    """The app as the screens see it (implemented by `app.SandboxApp`)."""

    store: Store
    poll_interval: float  # seconds between polls when nothing wakes the poller
    clock: Callable[[], float]  # injectable so tests and snapshots show stable ages

    def register_wake(self, event: threading.Event) -> None:
        """Have `wake_pollers` set this event (a poller's wait ends early)."""

    def unregister_wake(self, event: threading.Event) -> None:
        """Stop waking this event (its screen is gone)."""

    def open_session(self, session_id: str, tab: str = "commands") -> None:
        """Push the session screen for one session, on the given tab."""

    def confirm_kill(self, session: dict[str, Any]) -> None:
        """Ask, then kill one session."""

    def confirm_kill_all(self, live: list[dict[str, Any]]) -> None:
        """Ask, naming how many, then kill every live session."""

    def choose_export(self, session_id: str) -> None:
        """Ask for a format, then export one session."""


class HostedScreen(Screen[None]):
    """A screen of this app: it reaches the app only as a `ScreenHost`."""

    @property
    def host(self) -> ScreenHost:
        """The app, through the one surface a screen may use."""
        return cast(ScreenHost, self.app)
