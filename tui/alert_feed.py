"""The alert feed: alerts across every session, newest first."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from . import fmt

COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("ago", "AGO", 7),
    ("session", "SESSION", 10),
    ("severity", "SEVERITY", 8),
    ("action", "ACTION", 6),
    ("rule", "RULE / KIND", 26),
    ("evidence", "EVIDENCE", 90),
)


class AlertFeed(DataTable[Text]):
    """Newest alerts of all sessions; enter opens the alert's session."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.alerts: tuple[dict[str, Any], ...] = ()
        self._rendered: list[tuple[int, str]] = []

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def selected(self) -> dict[str, Any] | None:
        if not self.alerts or not (0 <= self.cursor_row < len(self.alerts)):
            return None
        return self.alerts[self.cursor_row]

    def show(self, alerts: tuple[dict[str, Any], ...], now: float) -> None:
        """Show `alerts` (newest first); redraw only when they or their ages changed."""
        rendered = [(a["id"], fmt.age(now - a["ts"])) for a in alerts]
        if rendered == self._rendered:
            return
        selected = self.selected
        self.alerts = alerts
        self._rendered = rendered
        self.clear()
        for a, (_, ago) in zip(alerts, rendered, strict=True):
            self.add_row(
                fmt.cell(ago),
                fmt.cell(a["session_id"], "bold"),
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
