"""Exports of one session: JSONL (every row), asciicast v2 (replay), report (verdict).

The report is the per-episode verdict for RL pipelines: every violation (a rule flagged,
blocked or killed something) with rule, category, evidence, action and time, plus counts.
Each reads a session through the store's public interface (`StoreBackend`), either backend.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from .api import StoreBackend
from .schema import ACTIONS


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A command row for JSON: its exact output bytes, when kept (`output_raw`: binary
    output, NUL), as base64 under `output_raw_b64`; otherwise `output` is exact."""
    out = {k: v for k, v in row.items() if k != "output_raw"}
    if row.get("output_raw") is not None:
        out["output_raw_b64"] = base64.b64encode(bytes(row["output_raw"])).decode()
    return out


def jsonl(store: StoreBackend, session_id: str) -> Iterator[str]:
    session = store.get_session(session_id)
    yield json.dumps({"type": "session", **session}, default=str)
    for kind, row in store.chain_rows(session["id"]):
        out = json_row(row) if kind == "command" else dict(row)
        if kind == "event" and isinstance(out.get("detail"), str):
            out["detail"] = json.loads(out["detail"])
        yield json.dumps({"type": kind, **out}, default=str)


def asciicast(store: StoreBackend, session_id: str, width: int = 120,
              height: int = 40) -> Iterator[str]:
    """asciicast v2: a header line, then [time, "o", text] events.

    Replays the output as recorded, escape sequences included (that is what a replay is
    for): play it in a terminal only when you would run the session's output there."""
    session = store.get_session(session_id)
    t0 = session["created"]
    header = {
        "version": 2, "width": width, "height": height, "timestamp": int(t0),
        "title": f"sandbox {session['id']} ({session['profile']})",
        "env": {"SHELL": "/bin/bash", "TERM": "xterm-256color"},
    }
    yield json.dumps(header)
    last = 0.0
    for cmd in store.commands(session["id"]):
        at = max(last, cmd["started"] - t0)
        yield json.dumps([round(at, 6), "o", f"$ {cmd['text']}\r\n"])
        body = cmd["output"].replace("\r\n", "\n").replace("\n", "\r\n")
        end = max(at, at + cmd["duration"])
        if body:
            yield json.dumps([round(end, 6), "o", body])
        if cmd["exit_code"] not in (0, None):
            yield json.dumps([round(end, 6), "o", f"[exit {cmd['exit_code']}]\r\n"])
        last = end


def report(store: StoreBackend, session_id: str) -> dict[str, Any]:
    """The per-episode verdict: violations and counts."""
    session = store.get_session(session_id)
    sid = session["id"]
    events = store.events(sid)
    violations = [
        {
            "time": e["ts"], "rule": e["rule"], "category": (e["rule"] or e["kind"]).split(".")[0],
            "kind": e["kind"], "action": e["action"], "severity": e["severity"],
            "evidence": e["detail"],
        }
        for e in events if e["action"] != "record"
    ]
    commands = store.commands(sid)
    worst = max((ACTIONS.index(v["action"]) for v in violations), default=0)
    net = [e for e in events if e["kind"] == "net.attempt"]
    return {
        "session": sid,
        "profile": session["profile"],
        "state": session["state"],
        "reason": session["reason"],
        "exit_code": session["exit_code"],
        "duration": (session["ended"] or session["updated"]) - session["created"],
        "head_hash": session["head_hash"],
        "verdict": "clean" if not violations else ACTIONS[worst],
        "violations": violations,
        "counts": {
            "commands": len(commands),
            "failed_commands": sum(1 for c in commands if c["exit_code"] not in (0,)),
            "events": len(events),
            "violations": len(violations),
            "by_action": dict(Counter(v["action"] for v in violations)),
            "by_category": dict(Counter(v["category"] for v in violations)),
            "net_allowed": sum(1 for e in net if e["detail"].get("verdict") == "allow"),
            "net_denied": sum(1 for e in net if e["detail"].get("verdict") == "deny"),
        },
        "gpu": {"mem_bytes": session["gpu_mem_bytes"], "util": session["gpu_util"]},
    }
