"""The `?` screen: every key of every screen, read from the screens' own bindings."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEY_NAMES = {"escape": "esc", "question_mark": "?", "slash": "/", "enter": "enter"}


def key_label(keys: str) -> str:
    return " / ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def help_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    rows = []
    for b in bindings:
        if isinstance(b, Binding):
            rows.append((key_label(b.key), b.description or b.action))
        elif isinstance(b, tuple):
            rows.append((key_label(b[0]), b[2] if len(b) > 2 else b[1]))
    return rows


class HelpScreen(ModalScreen[None]):
    """A table of keys per screen; any of esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close help")]

    def __init__(self, sections: Sequence[tuple[str, Iterable[BindingType]]]) -> None:
        super().__init__()
        self.sections = [(title, help_rows(b)) for title, b in sections]

    def tables(self) -> list[Table]:
        out = []
        for title, rows in self.sections:
            table = Table(title=title, title_justify="left", show_header=False,
                          box=None, padding=(0, 2), title_style="bold")
            table.add_column(style="bold cyan", min_width=16)
            table.add_column()
            for key, what in rows:
                table.add_row(key, what)
            out.append(table)
        return out

    def plain_text(self, width: int = 100) -> str:
        """The help as plain text (for tests and for piping)."""
        console = Console(width=width, record=True, file=io.StringIO())
        for table in self.tables():
            console.print(table)
        return console.export_text()

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            for table in self.tables():
                yield Static(table, classes="help-section")

    def action_close(self) -> None:
        self.dismiss(None)
