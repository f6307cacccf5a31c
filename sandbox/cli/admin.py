"""`sandbox kill | gc | doctor | profiles | tui`: operating the host."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from ..record import Store


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("kill", help="kill a session (or --all live ones) and its processes")
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true",
                   help="every live session in the store (with --host: that host's)")
    p.add_argument("--host", metavar="H",
                   help="with --all: only the sessions host H owns (a fleet's store)")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("gc", help="clean up sessions whose owner process died (and, in a "
                       "fleet's store, mark the sessions of lost hosts failed)")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("doctor", help="check firejail, kernel, state dir; say each fix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("profiles", help="list profiles, or `profiles show NAME`")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("tui", help="the operator TUI: live sessions, alerts, kill switch")
    p.set_defaults(func=cmd_tui)


def _who() -> str:
    return f"{getpass.getuser()} (pid {os.getpid()})"


def cmd_kill(args: argparse.Namespace) -> int:
    from ..control import kill_session

    store = Store()
    if args.host and not args.all:
        print("sandbox kill: --host goes with --all (kill --all --host H)", file=sys.stderr)
        return 2
    if args.all:
        ids = [s["id"] for s in store.list_sessions(live_only=True, limit=10_000,
                                                    host=args.host or None)]
    elif args.id:
        ids = [store.get_session(args.id)["id"]]
    else:
        print("sandbox kill: give a session id or --all", file=sys.stderr)
        return 2
    who = _who()
    if len(ids) > 1:  # every request first, then the waits: N kills take one kill's time
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(32, len(ids))) as ex:
            states = list(ex.map(lambda sid: kill_session(store, sid, who), ids))
    else:
        states = [kill_session(store, sid, who) for sid in ids]
    for sid, state in zip(ids, states, strict=True):
        print(f"{sid} {state}")
    if not ids:
        print("no live sessions" + (f" on host {args.host}" if args.host else ""))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from .. import gc

    store = Store()
    reaped = gc.collect(store, deep=True)
    print(f"reaped {len(reaped)} session(s) whose owner died" +
          (" or whose host was lost" if store.shared else "") +
          (": " + " ".join(reaped) if reaped else ""))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .. import doctor

    checks = doctor.run_checks()
    if args.json:
        print(json.dumps([c.__dict__ for c in checks]))
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            print(f"[{mark}] {c.name:<14} {c.detail}" + (f"\n       fix: {c.fix}" if c.fix
                                                           and not c.ok else ""))
    return 0 if all(c.ok for c in checks if c.required) else 1


def cmd_profiles(args: argparse.Namespace) -> int:
    from ..jail import profile as profiles

    if args.action == "show":
        if not args.name:
            print("sandbox profiles show NAME", file=sys.stderr)
            return 2
        data = profiles.to_dict(profiles.load(args.name))
        print(json.dumps(data, indent=2))
        return 0
    found = profiles.available()
    if args.json:
        print(json.dumps({n: str(p) for n, p in found.items()}))
        return 0
    for name, path in found.items():
        try:
            desc = profiles.load(name).description
        except Exception as e:  # show broken user profiles instead of hiding them
            desc = f"(invalid: {e})"
        print(f"{name:<10} {desc}\n{'':<10} {path}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    # Imported by name, here: the core never imports Textual (or the TUI) at import time.
    import importlib

    try:
        app = importlib.import_module("sandbox_tui.app")
    except ImportError as e:
        print(f"sandbox tui: the TUI is not installed ({e}); pip install textual, or run "
              "scripts/bootstrap.sh", file=sys.stderr)
        return 2
    return int(app.run())
