"""`sandbox run` and `sandbox shell`: the wrapper door."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import SandboxError
from ..textsafe import visible

if TYPE_CHECKING:
    from ..record import Store


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", "-p", default="default",
                   help="profile name or ./file.toml (see `sandbox profiles`)")
    p.add_argument("--workdir", "-w", default=None,
                   help="the workspace, the only writable tree (default: current directory)")
    p.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                   help="set a variable inside (the host environment is not passed)")
    p.add_argument("--image", "-i", default=None, metavar="REF",
                   help="run in this stored image (`sandbox image ls`; pull or import it "
                   "first) instead of the host's filesystem; overrides the profile's "
                   "[image] ref")
    p.add_argument("--keep", action="store_true",
                   help="with --image: keep the sandbox's copy-on-write layer at the end, "
                   "for `sandbox image commit ID NAME`")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a command in a sandbox (exit code is the command's)",
        description="Run CMD under firejail with the profile's limits; its stdin, stdout "
        "and stderr pass through, and a one-screen summary goes to stderr at the end.",
    )
    _common(p)
    p.add_argument("--timeout", type=float, default=None, help="kill after SECONDS (exit 124)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary")
    p.add_argument("--json", action="store_true", help="summary as JSON on stderr")
    p.add_argument("--report", metavar="FILE", help="write the per-episode report JSON here")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("shell", help="a recorded interactive shell in a sandbox")
    _common(p)
    p.set_defaults(func=cmd_shell)


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"sandbox: --env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def summary(store: Store, session_id: str) -> dict[str, Any]:
    s = store.get_session(session_id)
    return {
        "session": s["id"], "profile": s["profile"], "state": s["state"],
        "reason": s["reason"], "exit_code": s["exit_code"],
        "duration": round((s["ended"] or time.time()) - s["created"], 3),
        "commands": s["n_commands"], "events": s["n_events"], "alerts": s["n_alerts"],
        "denied": s["n_denied"], "connections": store.count_events(s["id"], "net.attempt"),
        "head_hash": s["head_hash"],
    }


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_summary(info: dict[str, Any], alerts: Sequence[Mapping[str, Any]]) -> str:
    # "events" as everywhere else: every row of the session's event log (`sandbox show`
    # lists them under events, network and processes).
    status = "" if info["exit_code"] is None else f" with status {info['exit_code']}"
    lines = [
        f"sandbox: session {info['session']} ({visible(info['profile'])}) {info['state']}"
        f"{status} in {info['duration']:.2f}s · {_count(info['commands'], 'command')}"
        f" · {_count(info['events'], 'event')} · {_count(info['alerts'], 'alert')}"
        f" · {_count(info['connections'], 'connection')} ({info['denied']} denied)",
    ]
    if info["state"] in ("killed", "failed") and info["reason"]:
        # The reason quotes the agent's argv or text: shown, never acted on.
        lines.append(f"  reason: {visible(info['reason'])}")
    for a in alerts[:8]:
        lines.append(visible(f"  ! {a['severity']:<8} {a['action']:<5} {a['rule'] or a['kind']}: "
                             f"{json.dumps(a['detail'], default=str)[:100]}"))
    if len(alerts) > 8:
        lines.append(f"  ... {len(alerts) - 8} more: sandbox show {info['session']}")
    lines.append(f"  head {info['head_hash']}  (sandbox show {info['session']})")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from ..doors.wrapper import run_wrapped
    from ..record import Store
    from ..record.export import report
    from ..session import Session

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd and not args.image:
        print("sandbox run: give a command after --, e.g. sandbox run -- python agent.py",
              file=sys.stderr)
        return 2
    store = Store()
    session = Session(args.profile, workdir=args.workdir, env=_env(args.env), kind="run",
                      store=store, argv=cmd, image=args.image, keep=args.keep)
    session.start()
    if session.image is not None:
        from ..jail.images.config import program

        try:  # `docker run IMAGE [CMD]`: the Entrypoint, then CMD or the image's Cmd
            cmd = program(session.image.image.config, cmd)
        except SandboxError:
            session.close(2)
            raise

    def _stop(signum: int, _frame: object) -> None:
        # An orchestrator's SIGTERM/SIGHUP must not leave the jail running: unwind
        # through the handler below, which kills the session and records why.
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        code = run_wrapped(session, cmd, args.timeout)
    except BaseException as e:
        session.kill(f"the wrapper was interrupted ({type(e).__name__} {e})".strip())
        raise
    if session.state == "killed":
        code = 137 if code == 0 else code
    info = summary(store, session.id)
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report(store, session.id), fh, indent=2, default=str)
    if not args.quiet:
        if args.json:
            print(json.dumps(info), file=sys.stderr)
        else:
            alerts = store.events(session.id, alerts_only=True, limit=50)
            print(format_summary(info, alerts), file=sys.stderr)
    if session.image is not None and args.keep:
        print(f"  kept its layer: sandbox image commit {session.id} NAME", file=sys.stderr)
    return code


def cmd_shell(args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        print("sandbox shell needs a terminal; for scripts use `sandbox run` or the API",
              file=sys.stderr)
        return 2
    from ..record import Store
    from ..session import Session

    store = Store()
    session = Session(args.profile, workdir=args.workdir, env=_env(args.env), kind="shell",
                      store=store, image=args.image, keep=args.keep)
    session.start()
    print(f"sandbox: session {session.id} ({session.profile.name}); exit the shell to end it",
          file=sys.stderr)
    shell = session.shell
    assert shell is not None
    guard = session.hooks.guard
    engine = guard.engine if guard is not None else None

    def on_command(text: str, output: bytes, code: int | None, started: float,
                   duration: float) -> None:
        session.record_command(text, output, code, started, duration, "shell")
        if engine is None:
            return
        # The guard's text rules, after the fact: the operator's keys reach bash directly,
        # so a command is judged once it has run. A block or kill rule is recorded as a
        # flag (with the rule's own action), never as a refusal that did not happen.
        for v in engine.check_command(text):
            action = "flag" if v.stops else v.action
            session.emit(v.kind, {**v.detail(), "action": action, "rule_action": v.action,
                                  "typed_in_shell": True},
                         severity=v.severity, action=action, rule=v.rule_id)

    def on_tamper(kind: str, detail: dict[str, Any]) -> None:
        if kind == "shell.recorder_hooks":
            session.emit(kind, detail, severity="critical", action="flag",
                         rule="tamper.recorder_hooks")
        else:
            session.hooks.tamper(kind, detail)

    try:
        shell.interact(on_command, on_tamper)
    except (OSError, SandboxError):
        pass
    finally:
        if session.state == "running":
            session.close(0)
    print(format_summary(summary(store, session.id), []), file=sys.stderr)
    return 0
