"""Blocking operator actions run from thread workers: kill (the CLI's path) and export."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox.control import kill_session
from sandbox.record import Store, export

EXPORT_FORMATS = {"jsonl": ".jsonl", "asciicast": ".cast", "report": ".report.json"}


def requested_by() -> str:
    """Who asked for a kill, as recorded in the store's controls table."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid still says who
        user = str(os.getuid())
    return f"{user} via tui (pid {os.getpid()})"


def kill_many(store: Store, session_ids: Iterable[str]) -> dict[str, str]:
    """Kill sessions in parallel (each `kill_session` may wait up to ~3 s on its owner)."""
    ids = list(dict.fromkeys(session_ids))
    if not ids:
        return {}
    who = requested_by()

    def one(sid: str) -> str:
        try:
            return kill_session(store, sid, who)
        except Exception as e:  # one failure must not hide the others' results
            return f"error: {e}"

    with ThreadPoolExecutor(max_workers=min(32, len(ids)), thread_name_prefix="tui-kill") as ex:
        return dict(zip(ids, ex.map(one, ids), strict=True))


def export_session(store: Store, session_id: str, fmt: str, directory: Path) -> Path:
    """Write one session as jsonl, asciicast or report into `directory`; returns the path."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
    sid = store.get_session(session_id)["id"]
    path = directory / f"sandbox-{sid}{EXPORT_FORMATS[fmt]}"
    if fmt == "report":
        text = json.dumps(export.report(store, sid), indent=2, default=str) + "\n"
    else:
        lines = export.jsonl(store, sid) if fmt == "jsonl" else export.asciicast(store, sid)
        text = "".join(line + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path.resolve()
