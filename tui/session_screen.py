"""One session: commands, network attempts, alerts, processes, resources; follow mode."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from sandbox.textsafe import visible

from . import fmt
from .host import HostedScreen
from .messages import SessionPolled
from .output_modal import OutputModal
from .poller import SessionPoller, event_group

MAX_ROWS = 1_000  # per table: the store keeps everything, the screen keeps the tail

TABS: dict[str, tuple[str, tuple[tuple[str, int | None], ...]]] = {
    "commands": ("Commands", (("#", 4), ("AT", 9), ("EXIT", 5), ("TOOK", 8),
                              ("COMMAND", 44), ("OUTPUT", 80))),
    "network": ("Network", (("AT", 9), ("KIND", 12), ("DESTINATION", 40), ("PROTO", 8),
                            ("VERDICT", 8), ("REASON / RULE", 60))),
    "alerts": ("Alerts", (("AT", 9), ("SEVERITY", 9), ("ACTION", 6), ("RULE / KIND", 28),
                          ("EVIDENCE", 95))),
    "processes": ("Processes", (("AT", 9), ("PID", 8), ("PPID", 8), ("UID", 6),
                                ("ARGV", 110))),
    "resources": ("Resources", (("AT", 9), ("KIND", 18), ("FIGURES", 115))),
}


def output_preview(output: str, width: int = 80) -> str:
    """The first non-empty lines of an output, joined, cut to `width`."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return fmt.evidence(" ⏎ ".join(lines[:3]), width) if lines else ""


class SessionScreen(HostedScreen):
    """Everything recorded for one session, tailing live while it runs."""

    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("k", "kill", "Kill"),
        Binding("e", "export", "Export"),
        Binding("1", "tab('commands')", "Commands", show=False),
        Binding("2", "tab('network')", "Network", show=False),
        Binding("3", "tab('alerts')", "Alerts", show=False),
        Binding("4", "tab('processes')", "Processes", show=False),
        Binding("5", "tab('resources')", "Resources", show=False),
    ]
    HELP_EXTRA = [("enter", "", "On a command: its full output")]

    follow: reactive[bool] = reactive(True)

    def __init__(self, session_id: str, tab: str = "commands") -> None:
        super().__init__()
        self.session_id = session_id
        self.initial_tab = tab
        self.session: dict[str, Any] | None = None
        self.commands: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, deque[str]] = {name: deque() for name in TABS}
        self.wake = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header(icon="■")
        yield Static(id="summary")
        with TabbedContent(initial=self.initial_tab):
            for name, (title, _) in TABS.items():
                with TabPane(title, id=name):
                    yield DataTable(id=f"{name}-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"sandbox · session {self.session_id}"
        for name, (_, columns) in TABS.items():
            table = self.table(name)
            for label, width in columns:
                table.add_column(label, key=label, width=width)
        self.table(self.initial_tab).focus()
        self.host.register_wake(self.wake)
        self.poll_session()

    def on_unmount(self) -> None:
        self.host.unregister_wake(self.wake)
        self.wake.set()

    def table(self, name: str) -> DataTable[Any]:
        return self.query_one(f"#{name}-table", DataTable)

    # -- polling ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="session-poll")
    def poll_session(self) -> None:
        worker = get_current_worker()
        poller = SessionPoller(self.host.store, self.session_id)
        while not worker.is_cancelled:
            try:
                self.post_message(SessionPolled(poller.poll()))
            except Exception as e:  # keep tailing through a busy store; say why it stalls
                self.app.call_from_thread(
                    self.notify, f"cannot read session {self.session_id}: {e}",
                    severity="error")
                if self.session is None:
                    return
            self.wake.wait(self.host.poll_interval)
            self.wake.clear()

    def on_session_polled(self, message: SessionPolled) -> None:
        delta = message.delta
        self.session = delta.session
        self.session_id = delta.session["id"]
        created = delta.session["created"]
        touched: set[str] = set()
        for c in delta.commands:
            key = f"c{c['seq']}"
            self.commands[key] = c
            exit_style = "dim" if c["exit_code"] == 0 else "bold red"
            exit_text = "T/O" if c["timed_out"] else c["exit_code"]
            self._add("commands", key, (
                fmt.cell(c["seq"]), fmt.cell(f"+{c['started'] - created:.2f}s"),
                fmt.cell(exit_text, exit_style), fmt.cell(fmt.duration(c["duration"])),
                fmt.cell(c["text"], "bold", width=44),
                fmt.cell(output_preview(c["output"]), "dim"),
            ))
            touched.add("commands")
        for e in delta.events:
            group = event_group(e)
            if group is None:
                continue
            self._add(group, f"e{e['id']}", self._event_cells(group, e, created))
            touched.add(group)
        tabs = self.query_one(TabbedContent)
        for name in touched:
            table = self.table(name)
            tabs.get_tab(name).label = f"{TABS[name][0]} {table.row_count}"
            if self.follow:
                table.move_cursor(row=table.row_count - 1, animate=False)
        self.render_summary()

    def _add(self, name: str, key: str, cells: tuple[Text, ...]) -> None:
        table, keys = self.table(name), self._keys[name]
        table.add_row(*cells, key=key)
        keys.append(key)
        while len(keys) > MAX_ROWS:
            old = keys.popleft()
            table.remove_row(old)
            self.commands.pop(old, None)

    @staticmethod
    def _event_cells(group: str, e: dict[str, Any], created: float) -> tuple[Text, ...]:
        d = e["detail"] if isinstance(e["detail"], dict) else {}
        at = fmt.cell(f"+{e['ts'] - created:.2f}s")
        if group == "alerts":
            return (at, fmt.severity_text(e["severity"]),
                    fmt.cell(e["action"], "bold" if e["action"] != "record" else "dim"),
                    fmt.cell(e["rule"] or e["kind"]), fmt.cell(fmt.evidence(d, 300)))
        if group == "network":
            verdict = str(d.get("verdict", "-"))
            return (at, fmt.cell(e["kind"]), fmt.cell(fmt.destination(d)),
                    fmt.cell(d.get("protocol") or d.get("qtype") or "-"),
                    fmt.cell(verdict, fmt.VERDICT_STYLE.get(verdict, "")),
                    fmt.cell(e["rule"] or d.get("reason") or ""))
        if group == "processes":
            argv = d.get("argv")
            argv_s = " ".join(map(str, argv)) if isinstance(argv, list) else str(argv or "")
            return (at, fmt.cell(d.get("pid", "-")), fmt.cell(d.get("ppid", "-")),
                    fmt.cell(d.get("uid", "-")), fmt.cell(argv_s or d.get("exe", "")))
        figures = dict(d)
        for k in ("mem_bytes", "limit_bytes"):
            if isinstance(figures.get(k), int | float):
                figures[k] = fmt.size(figures[k])
        return (at, fmt.cell(e["kind"]), fmt.cell(fmt.evidence(figures, 300)))

    def render_summary(self) -> None:
        s = self.session
        if s is None:
            return
        now = self.host.clock()
        text = Text()
        text.append(visible(s["id"]), "bold")
        text.append(visible(f"  profile {s['profile']}  "))
        text.append_text(fmt.state_text(s["state"]))
        if s.get("reason"):
            text.append(visible(f" ({s['reason']})"), "dim")
        if s.get("exit_code") is not None:
            text.append(f"  exit {s['exit_code']}")
        text.append(f"  age {fmt.age((s.get('ended') or now) - s['created'])}")
        text.append(visible(f"  {s['kind']} · {s['user']}@{s['host']} · jail pid "
                            f"{s.get('jail_pid')}"), "dim")
        text.append("\n")
        text.append(f"commands {s['n_commands']}  events {s['n_events']}  alerts ")
        text.append_text(fmt.alerts_cell(s))
        text.append(f"  denied {s['n_denied']}  ")
        text.append(f"CPU {fmt.percent(s.get('cpu_percent'))}  "
                    f"mem {fmt.size(s.get('mem_bytes'))}  GPU {fmt.gpu(s)}")
        text.append("\n")
        current = s.get("current_command")
        text.append("now: ", "dim")
        text.append(visible(current or "-"), "bold" if current else "dim")
        text.append(visible(f"   workdir {s['workdir']}"), "dim")
        text.append("\n")
        text.append("follow: ", "dim")
        text.append("on (tailing the newest rows)" if self.follow else "off (f to follow)",
                    "green" if self.follow else "yellow")
        self.query_one("#summary", Static).update(text)

    def watch_follow(self, follow: bool) -> None:
        self.render_summary()

    # -- actions ------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#commands-table")
    def show_output(self, event: DataTable.RowSelected) -> None:
        command = self.commands.get(str(event.row_key.value))
        if command is not None:
            self.app.push_screen(OutputModal(command))

    def action_back(self) -> None:
        self.dismiss(None)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_tab(self, name: str) -> None:
        self.query_one(TabbedContent).active = name
        self.table(name).focus()

    def action_kill(self) -> None:
        if self.session is not None:
            self.host.confirm_kill(self.session)

    def action_export(self) -> None:
        self.host.choose_export(self.session_id)
