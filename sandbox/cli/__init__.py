"""The `sandbox` command: argument parsing and dispatch. Each verb lives in a sibling."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import SandboxError
from . import admin, images, inspect, running

EPILOG = """\
examples:
  sandbox run -- sh -c 'echo hi; exit 3'        wrap a command; exit code is its own
  sandbox run --profile strict -- python agent.py
  sandbox shell                                 recorded interactive shell
  sandbox image import rootfs.tar deb           a rootfs tarball as an image
  sandbox run --image deb -- python3 -c 'print(1)'   in the image's own filesystem
  sandbox ls                                    live and recent sessions
  sandbox show ID                               commands, exit codes, events
  sandbox kill ID | --all                       end sessions (and their processes)
  sandbox doctor                                check firejail, kernel, state dir
  sandbox --store postgresql://u:p@db/sbx ls    a fleet's shared PostgreSQL store
State: $SANDBOX_STATE_DIR, else /var/lib/sandbox (root) or ~/.local/state/sandbox.
Store: --store URL or $SANDBOX_STORE (postgresql://... or a SQLite file), else the state
dir's sandbox.db. $SANDBOX_HOST_ID names this host in the rows it writes.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox",
        description="A terminal sandbox with guardrails for AI agents: every command runs "
        "under firejail and is recorded where the agent cannot reach it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store", metavar="URL",
        help="the event store: postgresql://user:pass@host/db (needs the [postgres] extra) "
        "or a SQLite file; sets SANDBOX_STORE for this command (default: $SANDBOX_STORE, "
        "else the state dir's sandbox.db)")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    running.add_parsers(sub)
    inspect.add_parsers(sub)
    admin.add_parsers(sub)
    images.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store:
        # The process's own environment: every Store() this command opens (and its kill
        # watcher) uses it; jails never see it (their environment is an allowlist).
        os.environ["SANDBOX_STORE"] = args.store
    try:
        return int(args.func(args))
    except SandboxError as e:
        print(f"sandbox: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sandbox ls | head`: the reader went away; no traceback, and no second error
        # when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
