"""What the operator's tables share: columns that gain HOST when the rows come from more
than one host (a fleet's store), rebuilt when that changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

Columns = Callable[[bool], tuple[tuple[str, str, int | None], ...]]


class HostColumnsTable(DataTable[Text]):
    """A row table whose `columns(with_host)` decide its header."""

    def __init__(self, columns: Columns, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.columns_for = columns
        self.with_host = False

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, width in self.columns_for(self.with_host):
            self.add_column(label, key=key, width=width)

    def set_hosts(self, hosts: Iterable[Any]) -> bool:
        """Show HOST when `hosts` holds more than one; True when the columns changed
        (the rows are gone then: the caller adds them again)."""
        with_host = len(set(hosts)) > 1
        if with_host == self.with_host:
            return False
        self.with_host = with_host
        self.clear(columns=True)
        self._add_columns()
        return True
