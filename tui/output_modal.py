"""The full output of one command, scrollable."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from sandbox.record import output_bytes_of
from sandbox.textsafe import visible

from . import fmt


def output_text(command: dict[str, Any]) -> str:
    """The recorded output, exact bytes where kept, for Rich: undecodable bytes as \\xNN
    and every control character visible (an escape sequence is shown, not run)."""
    raw = output_bytes_of(command)
    return visible(raw.decode("utf-8", errors="surrogateescape"), multiline=True)


class OutputModal(ModalScreen[None]):
    """A command's text, exit code, duration and its whole recorded output."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, command: dict[str, Any]) -> None:
        super().__init__()
        self.command = command

    def compose(self) -> ComposeResult:
        c = self.command
        notes = []
        if c.get("timed_out"):
            notes.append("timed out")
        if c.get("truncated"):
            notes.append(f"truncated: {fmt.size(c.get('output_bytes'))} produced")
        head = (f"#{c['seq']}  exit {c['exit_code']}  {fmt.duration(c['duration'])}"
                + (f"  ({', '.join(notes)})" if notes else ""))
        with Vertical(id="output-dialog"):
            yield Label(Text(f"$ {visible(c['text'])}", style="bold"), id="output-command")
            yield Label(Text(head, style="dim"), id="output-meta")
            with VerticalScroll(id="output-scroll"):
                yield Static(Text(output_text(c) or "(no output)"), id="output-body")

    def on_mount(self) -> None:
        self.query_one("#output-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
