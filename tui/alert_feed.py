"""The alert feed: alerts across every session, newest first."""

from __future__ import annotations

from typing import Any

from . import fmt
from .tables import HostColumnsTable

HOST_COLUMN: tuple[str, str, int | None] = ("host", "HOST", 12)  # several hosts: after SESSION
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("ago", "AGO", 7),
    ("session", "SESSION", 10),
    ("severity", "SEVERITY", 8),
    ("action", "ACTION", 6),
    ("rule", "RULE / KIND", 26),
    ("evidence", "EVIDENCE", 90),
)


def columns(with_host: bool) -> tuple[tuple[str, str, int | None], ...]:
    return (*COLUMNS[:2], HOST_COLUMN, *COLUMNS[2:]) if with_host else COLUMNS


class AlertFeed(HostColumnsTable):
    """Newest alerts of all sessions, on every host; enter opens the alert's session.
    A HOST column appears when the alerts come from more than one host."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(columns, **kwargs)
        self.alerts: tuple[dict[str, Any], ...] = ()
        self._rendered: list[tuple[int, str]] = []

    @property
    def selected(self) -> dict[str, Any] | None:
        if not self.alerts or not (0 <= self.cursor_row < len(self.alerts)):
            return None
        return self.alerts[self.cursor_row]

    def show(self, alerts: tuple[dict[str, Any], ...], now: float) -> None:
        """Show `alerts` (newest first); redraw only when they or their ages changed."""
        rendered = [(a["id"], fmt.age(now - a["ts"])) for a in alerts]
        selected = self.selected
        if not self.set_hosts(a.get("host") for a in alerts) and rendered == self._rendered:
            return
        with_host = self.with_host
        self.alerts = alerts
        self._rendered = rendered
        self.clear()
        for a, (_, ago) in zip(alerts, rendered, strict=True):
            host = (fmt.cell(a.get("host"), "cyan", width=12),) if with_host else ()
            self.add_row(
                fmt.cell(ago),
                fmt.cell(a["session_id"], "bold"),
                *host,
                fmt.severity_text(a["severity"]),
                fmt.cell(a["action"], "bold" if a["action"] != "record" else "dim"),
                fmt.cell(a["rule"] or a["kind"]),
                fmt.cell(fmt.evidence(a["detail"], 200)),
                key=str(a["id"]),
            )
        if selected is not None:
            ids = [a["id"] for a in alerts]
            if selected["id"] in ids:
                self.move_cursor(row=ids.index(selected["id"]), animate=False)
