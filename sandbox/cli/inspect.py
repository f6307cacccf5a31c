"""`sandbox ls | show | logs | verify | export`: reading the store.

Every human view passes agent-controlled text through `textsafe.visible` (an escape
sequence is shown as `␛[...`, never acted on by the operator's terminal); `--json` and
the exports print the exact values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..record import FINAL_STATES, Store, export, output_bytes_of
from ..textsafe import visible


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("ls", help="list live and recent sessions")
    p.add_argument("--live", action="store_true", help="only live sessions")
    p.add_argument("-n", "--limit", dest="n", type=int, default=50, metavar="N",
                   help="at most N sessions, newest first (default 50)")
    p.add_argument("--host", metavar="H", help="only the sessions host H owns")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="a session's commands (with exit codes) and events")
    p.add_argument("id", help="session id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--output", action="store_true", help="print each command's output too")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list firejail's own processes too (firejail, fnet, fseccomp, ...)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("logs", help="a session's commands and events as they happen")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("verify", help="check a session's hash chain (exit 1 when broken)")
    p.add_argument("id")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("export", help="export a session: jsonl, asciicast (v2) or report")
    p.add_argument("id")
    p.add_argument("--format", "-f", choices=["jsonl", "asciicast", "report"], default="jsonl")
    p.add_argument("--output", "-o", help="file (default stdout)")
    p.set_defaults(func=cmd_export)


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


def _age(s: Mapping[str, Any]) -> str:
    secs = (s["ended"] or time.time()) - s["created"]
    return f"{secs:.1f}s" if secs < 120 else f"{secs / 60:.0f}m"


def cmd_ls(args: argparse.Namespace) -> int:
    store = Store()
    wanted = max(args.n, 0)
    # One row more than asked: whether the list is cut, without counting the whole store.
    rows = store.list_sessions(live_only=args.live, limit=wanted + 1, host=args.host or None)
    more = len(rows) > wanted
    rows = rows[:wanted]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], default=str))
        return 0
    if not rows and not more:
        print(f"no sessions on host {visible(args.host)}" if args.host else
              "no sessions yet: try `sandbox run -- echo hi`")
        return 0
    # The HOST column: when the store holds more than one host's sessions (a fleet).
    hosts = store.known_hosts() if store.shared else sorted({s["host"] for s in rows})
    width = min(20, max([4, *(len(visible(h)) for h in hosts)])) if len(hosts) > 1 else 0
    host_head = f"{'HOST':<{width}} " if width else ""
    print(f"{'ID':<11} {host_head}{'PROFILE':<9} {'STATE':<8} {'STARTED':<9} {'AGE':>6} "
          f"{'CMDS':>5} {'ALERTS':>6} {'DENIED':>6} {'GPU':>9} {'EXIT':>4}  NOW / REASON")
    for s in rows:
        now = visible(s["current_command"] or s["reason"] or "")
        host = f"{visible(s['host'])[:width]:<{width}} " if width else ""
        print(f"{visible(s['id']):<11} {host}{visible(s['profile'])[:9]:<9} "
              f"{visible(s['state']):<8} "
              f"{_ts(s['created']):<9} {_age(s):>6} {s['n_commands']:>5} {s['n_alerts']:>6} "
              f"{s['n_denied']:>6} {_gpu(s):>9} "
              f"{'' if s['exit_code'] is None else s['exit_code']:>4}  {now[:60]}")
    if more:
        total = len(store.list_sessions(live_only=args.live, limit=_COUNT_CAP,
                                        host=args.host or None))
        shown = f"{total}+" if total >= _COUNT_CAP else str(total)
        print(f"{len(rows)} of {shown} sessions; -n {shown.rstrip('+')} for more")
    return 0


# `ls` counts the sessions it cut off up to this many (the rows are read to count them).
_COUNT_CAP = 100_000


def _gpu(s: Mapping[str, Any]) -> str:
    if s["gpu_mem_bytes"] is None:
        return "-"
    return f"{s['gpu_mem_bytes'] >> 20}M/{s['gpu_util'] or 0:.0f}%"


def _event_line(e: Mapping[str, Any]) -> str:
    detail = json.dumps(e["detail"], default=str, sort_keys=True)
    rule = f" {e['rule']}" if e["rule"] else ""
    return visible(f"  {_ts(e['ts'])} #{e['seq']:<4} {e['severity']:<8} {e['action']:<6} "
                   f"{e['kind']}{rule} {detail[:160]}")


def _output_text(c: Mapping[str, Any]) -> str:
    """A command's output for a terminal: its exact bytes, undecodable ones as \\xNN,
    every control character made visible (newlines and tabs kept)."""
    raw = output_bytes_of(c)
    return visible(raw.decode("utf-8", errors="surrogateescape"), multiline=True)


def _command_line(c: Mapping[str, Any], with_output: bool) -> str:
    flags = (" timed-out" if c["timed_out"] else "") + (" truncated" if c["truncated"] else "")
    code = "-" if c["exit_code"] is None else c["exit_code"]
    line = (f"  {_ts(c['started'])} #{c['seq']:<4} exit {code!s:<4} {c['duration']:7.3f}s "
            f"{visible(c['text'])[:120]}{flags}")
    if with_output and c["output"]:
        body = _output_text(c)
        line += "\n" + "\n".join("      " + ln for ln in body.rstrip("\n").split("\n"))
    return line


def cmd_show(args: argparse.Namespace) -> int:
    store = Store()
    s = store.get_session(args.id)
    commands = store.commands(s["id"])
    events = store.events(s["id"])
    if args.json:
        print(json.dumps({"session": s.to_dict(),
                          "commands": [export.json_row(c) for c in commands],
                          "events": [e.to_dict() for e in events]}, default=str))
        return 0
    print(visible(f"session {s['id']}  profile {s['profile']}  {s['state']}"
                  f"{' (' + s['reason'] + ')' if s['reason'] else ''}  exit {s['exit_code']}"))
    print(visible(f"  host {s['host']}  workdir {s['workdir']}  owner pid {s['owner_pid']}"
                  f"  agent uid {s['agent_uid']}  started {_ts(s['created'])}  age {_age(s)}"))
    if s["gpu_mem_bytes"] is not None:
        print(f"  gpu {s['gpu_mem_bytes'] >> 20} MiB, {s['gpu_util'] or 0:.0f}% util")
    print(f"  head {s['head_hash']}")
    print(f"commands ({len(commands)}):")
    for c in commands:
        print(_command_line(c, args.output))
    # An event is any row of the session's event log (what the summary line counts, what
    # `logs` and the exports carry); show sorts them into three lists.
    net = [e for e in events if e["kind"].startswith(("net.", "dns."))]
    procs = [e for e in events if e["kind"] == "proc.exec"]
    other = [e for e in events
             if e["kind"] != "proc.exec" and not e["kind"].startswith(("net.", "dns."))]
    parts = [f"{len(other)} here"]
    if net:
        parts.append(f"{len(net)} under network")
    if procs:
        parts.append(f"{len(procs)} under processes")
    if s["n_events"] > len(events):  # store.events reads the first 10,000
        parts.append(f"{s['n_events'] - len(events)} more in `sandbox export {s['id']}`")
    print(f"events ({s['n_events']}: {', '.join(parts)}):")
    for e in other:
        print(_event_line(e))
    if net:
        print(f"network ({len(net)} events):")
        for e in net:
            print(_event_line(e))
    if procs:
        mine = procs if args.verbose else [e for e in procs if not _firejails_own(e)]
        hidden = len(procs) - len(mine)
        print(f"processes ({len(procs)} execs"
              + (f", {hidden} of them firejail's own: -v lists them" if hidden else "") + "):")
        for e in mine[:200]:
            argv = e["detail"].get("argv") or []
            shown = " ".join(map(str, argv)) if isinstance(argv, list) else str(argv)
            print(f"  {_ts(e['ts'])} pid {visible(e['detail'].get('pid'))} "
                  f"{visible(shown)[:120]}")
        if len(mine) > 200:
            print(f"  ... {len(mine) - 200} more: sandbox show --json {s['id']}")
    return 0


# Where firejail's own programs run from: the launcher, and the helpers it copies to
# /run/firejail/lib (fnet, fseccomp, ...) from its library directory.
_FIREJAIL_EXES = ("/usr/bin/firejail", "/usr/local/bin/firejail")
_FIREJAIL_LIBS = ("/run/firejail/lib/", "/usr/lib/firejail/", "/usr/local/lib/firejail/",
                  "/usr/lib/x86_64-linux-gnu/firejail/", "/usr/lib/aarch64-linux-gnu/firejail/")


def _firejails_own(e: Mapping[str, Any]) -> bool:
    """An exec of firejail itself or one of its helpers: by the kernel's path of the
    program (`exe`), never by its argv, which the agent chooses. Only the default view of
    `show` leaves them out (saying how many); -v, --json and the exports keep every one."""
    exe = e["detail"].get("exe")
    return isinstance(exe, str) and (exe in _FIREJAIL_EXES or exe.startswith(_FIREJAIL_LIBS))


def cmd_logs(args: argparse.Namespace) -> int:
    store = Store()
    sid = store.get_session(args.id)["id"]
    last_seq = 0
    cursor = None  # events: a commit-order cursor (a fleet store assigns ids at insert)
    deadline_idle = 0.0
    while True:
        for c in store.commands(sid, since_seq=last_seq):
            print(_command_line(c, True), flush=True)
            last_seq = c["seq"]
        events, cursor = store.events_after(cursor, session_id=sid)
        for e in events:
            print(_event_line(e), flush=True)
        if not args.follow:
            return 0
        if store.get_session(sid)["state"] in FINAL_STATES:
            deadline_idle += 1
            if deadline_idle > 1:  # one more pass picks up the final rows
                return 0
        time.sleep(0.2)


def cmd_verify(args: argparse.Namespace) -> int:
    ok, message = Store().verify(args.id)
    print(message)
    return 0 if ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    store = Store()
    if args.format == "report":
        lines = iter([json.dumps(export.report(store, args.id), indent=2, default=str)])
    elif args.format == "asciicast":
        lines = export.asciicast(store, args.id)
    else:
        lines = export.jsonl(store, args.id)
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    try:
        for line in lines:
            out.write(line + "\n")
    finally:
        if args.output:
            out.close()
    return 0
