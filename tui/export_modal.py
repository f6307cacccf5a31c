"""Pick an export format for one session: jsonl, asciicast or report."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class ExportModal(ModalScreen[str | None]):
    """Dismisses with the chosen format name, or None on cancel."""

    BINDINGS = [
        Binding("j", "pick('jsonl')", "JSONL"),
        Binding("a", "pick('asciicast')", "asciicast"),
        Binding("r", "pick('report')", "Report"),
        Binding("escape,n", "pick('')", "Cancel"),
    ]

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Export session {self.session_id} to the current directory",
                        id="question", markup=False)
            with Horizontal(id="buttons"):
                yield Button("JSONL (j)", id="jsonl")
                yield Button("asciicast (a)", id="asciicast")
                yield Button("Report (r)", id="report")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_pick("" if event.button.id == "cancel" else str(event.button.id))

    def action_pick(self, fmt: str) -> None:
        self.dismiss(fmt or None)
