"""Pure formatting helpers: store values -> short cell text and Rich styles (no Textual)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from sandbox.record import LIVE_STATES
from sandbox.textsafe import visible

SEVERITY_STYLE = {
    "info": "dim",
    "warning": "yellow",
    "alert": "bold red",
    "critical": "bold white on red",
}

STATE_STYLE = {
    "starting": "cyan",
    "running": "green",
    "exited": "dim",
    "killed": "bold magenta",
    "failed": "red",
}

VERDICT_STYLE = {"allow": "green", "deny": "bold red"}


def cell(value: object, style: str = "", width: int | None = None) -> Text:
    """A table cell as Text: never parsed as markup (commands may contain `[red]`), and
    every control character shown, never sent to the terminal (`ESC` as `␛`)."""
    s = "" if value is None else str(value)
    s = visible(s.replace("\r\n", "\n"))
    if width is not None and len(s) > width:
        s = s[: max(0, width - 1)] + "…"
    return Text(s, style=style, no_wrap=True, overflow="ellipsis")


def age(seconds: float) -> str:
    """12s, 4m05s, 3h02m, 2d04h: short and stable in width."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return age(seconds)


def size(n: int | float | None) -> str:
    """Bytes as B/K/M/G/T with one decimal above K."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"  # pragma: no cover


def percent(p: float | None) -> str:
    return "-" if p is None else f"{p:.0f}%"


def gpu(session: dict[str, Any]) -> str:
    mem, util = session.get("gpu_mem_bytes"), session.get("gpu_util")
    if mem is None and util is None:
        return "-"
    return f"{size(mem)} {percent(util)}"


def severity_text(severity: str, label: str | None = None) -> Text:
    return cell(label if label is not None else severity, SEVERITY_STYLE.get(severity, ""))


def alerts_cell(session: dict[str, Any]) -> Text:
    """The alert count, coloured by the session's worst severity."""
    n = session.get("n_alerts") or 0
    sev = session.get("max_severity") or "info"
    if not n:
        return cell("0", "dim")
    return cell(f"{n} {sev}", SEVERITY_STYLE.get(sev, ""))


def state_text(state: str) -> Text:
    return cell(state, STATE_STYLE.get(state, ""))


def is_live(session: dict[str, Any]) -> bool:
    return session.get("state") in LIVE_STATES


def evidence(detail: Any, width: int | None = None) -> str:
    """An event's detail as one compact line (key=value, most telling keys first),
    control characters shown (see `visible`)."""
    if not isinstance(detail, dict):
        return visible(detail)
    first = ("evidence", "text", "argv", "name", "dst_ip", "dst_port", "reason", "message")
    keys = [k for k in first if k in detail] + sorted(k for k in detail if k not in first)
    parts = []
    for k in keys:
        v = detail[k]
        if v is None or v == "":
            continue
        if isinstance(v, list):
            v = " ".join(map(str, v))
        elif isinstance(v, dict):
            v = json.dumps(v, sort_keys=True, default=str)
        parts.append(f"{k}={v}")
    s = visible(" ".join(parts))
    return s if width is None or len(s) <= width else s[: width - 1] + "…"


def destination(detail: dict[str, Any]) -> str:
    """Where a network attempt went: host name if known, else ip:port."""
    ip, port = detail.get("dst_ip"), detail.get("dst_port")
    where = f"{ip}:{port}" if ip is not None and port is not None else (ip or "")
    name = detail.get("name")
    return f"{name} ({where})" if name and where else str(name or where or "-")
