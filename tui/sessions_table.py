"""The sessions table: one row per session, updated in place from each fleet snapshot."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from . import fmt
from .filtering import matches
from .tables import HostColumnsTable

HOST_COLUMN = ("host", "HOST", 12)  # shown after ID when the sessions span several hosts
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("id", "ID", 10),
    ("profile", "PROFILE", 10),
    ("state", "STATE", 8),
    ("age", "AGE", 7),
    ("now", "NOW", 44),
    ("cmds", "CMDS", 5),
    ("denied", "DENIED", 6),
    ("alerts", "ALERTS", 12),
    ("cpu", "CPU", 5),
    ("mem", "MEM", 7),
    ("gpu", "GPU", 12),
)


def columns(with_host: bool) -> tuple[tuple[str, str, int], ...]:
    return (COLUMNS[0], HOST_COLUMN, *COLUMNS[1:]) if with_host else COLUMNS


def row_cells(s: dict[str, Any], now: float, with_host: bool = False) -> tuple[Text, ...]:
    """One session row as cells, in `columns(with_host)` order."""
    end = s["ended"] if s.get("ended") else now
    current = s.get("current_command") or ("" if fmt.is_live(s) else (s.get("reason") or ""))
    host = (fmt.cell(s.get("host"), "cyan", width=HOST_COLUMN[2]),) if with_host else ()
    return (
        fmt.cell(s["id"], "bold"),
        *host,
        fmt.cell(s["profile"]),
        fmt.state_text(s["state"]),
        fmt.cell(fmt.age(end - s["created"])),
        fmt.cell(current, "" if s.get("current_command") else "dim", width=44),
        fmt.cell(s.get("n_commands", 0)),
        fmt.cell(s.get("n_denied", 0), "bold red" if s.get("n_denied") else "dim"),
        fmt.alerts_cell(s),
        fmt.cell(fmt.percent(s.get("cpu_percent"))),
        fmt.cell(fmt.size(s.get("mem_bytes"))),
        fmt.cell(fmt.gpu(s)),
    )


class SessionsTable(HostColumnsTable):
    """Every live and recent session; rows keyed by session id, updated cell by cell.
    A HOST column appears when the sessions come from more than one host (a fleet's
    store), and goes when they do not."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(columns, zebra_stripes=True, **kwargs)
        self.sessions: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._cells: dict[str, tuple[Text, ...]] = {}

    @property
    def selected_id(self) -> str | None:
        if not self._order or not (0 <= self.cursor_row < len(self._order)):
            return None
        return self._order[self.cursor_row]

    def show(self, sessions: tuple[dict[str, Any], ...], now: float, query: str = "") -> None:
        """Show `sessions` (newest first) that match `query`; keep the cursor on its session."""
        self.sessions = {s["id"]: s for s in sessions}
        selected = self.selected_id
        redraw = self.set_hosts(s.get("host") for s in sessions)
        with_host = self.with_host
        visible = [s for s in sessions if matches(s, query)]
        order = [s["id"] for s in visible]
        cells = {s["id"]: row_cells(s, now, with_host) for s in visible}
        if redraw or order != self._order:
            self.clear()
            for sid in order:
                self.add_row(*cells[sid], key=sid)
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False)
        else:
            for sid in order:
                old = self._cells.get(sid)
                for i, (key, _, _) in enumerate(columns(with_host)):
                    if old is None or old[i] != cells[sid][i]:
                        self.update_cell(sid, key, cells[sid][i])
        self._order = order
        self._cells = cells
