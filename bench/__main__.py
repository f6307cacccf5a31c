"""`python -m bench [--quick] [--only ROW,...] [--sessions N] [--many N] [--image-live N]
[--image-tar PATH] [--out DIR]`: run the rows,
print the table, write latest.json and latest.md. See bench/README.md."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import report
from .core import Ctx, Row, make_ctx, remove_ctx

RESULTS = Path(__file__).resolve().parent / "results"


def _rows() -> dict[str, Callable[[Ctx], Row]]:
    from . import (
        row_cmd,
        row_egress,
        row_exec,
        row_fastexec,
        row_fleet,
        row_flood,
        row_image,
        row_kill,
        row_load,
        row_many,
        row_pool,
        row_ray,
        row_start,
    )

    return {
        "start": row_start.run,
        "per_command": row_cmd.per_command,
        "throughput": row_cmd.throughput,
        "egress": row_egress.run,
        "kill": row_kill.kill,
        "detect": row_kill.detect,
        "concurrency": row_load.run,
        "flood": row_flood.run,
        "exec": row_exec.exec_row,
        "files": row_exec.files_row,
        "many": row_many.many,
        "pool": row_pool.run,
        "fleet": row_fleet.run,
        "ray": row_ray.run,
        "image": row_image.run,
        # Issue 20's rows, after the numbered ones the docs name (row 15 is images).
        "fastexec": row_fastexec.run,
        "many_fast": row_many.many_fast,
    }


def main(argv: list[str] | None = None) -> int:
    rows = _rows()
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    ap.add_argument("--only", default="", help="comma-separated rows: " + ",".join(rows))
    ap.add_argument("--sessions", type=int, default=64, help="live sessions for concurrency")
    ap.add_argument("--many", type=int, default=256,
                    help="AsyncSandboxes alive at once for the many row")
    ap.add_argument("--image-live", type=int, default=64,
                    help="sandboxes alive at once on one image for the image row")
    ap.add_argument("--image-tar", type=Path, default=None,
                    help="the rootfs tarball of the image row (default: the image tests' "
                         "cached Debian rootfs in /var/cache/sandbox-test-images)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where latest.json/.md go")
    ap.add_argument("--install-peers", action="store_true",
                    help="install srt (npm) and SWE-ReX (bench/.peers/venv), then exit")
    args = ap.parse_args(argv)
    if args.install_peers:
        from . import peers

        peers.install()
        return 0
    chosen = [r.strip() for r in args.only.split(",") if r.strip()] or list(rows)
    unknown = [r for r in chosen if r not in rows]
    chosen = [r for r in rows if r in chosen]  # the table's order, whatever --only says
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(rows)}")
    ctx = make_ctx(quick=args.quick, sessions=max(1, args.sessions), python=sys.executable)
    ctx.extra["many"] = max(1, args.many)
    ctx.extra["image_live"] = max(1, args.image_live)
    ctx.extra["image_tar"] = args.image_tar
    done: list[Row] = []
    started = time.time()
    try:
        for key in chosen:
            print(f"bench: {key} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                row = rows[key](ctx)
            except Exception as e:  # one broken row must not hide the others
                traceback.print_exc()
                row = Row(key, key)
                row.notes.append(f"row failed: {type(e).__name__}: {e}")
            row.seconds = time.perf_counter() - t0
            row.num = list(rows).index(key) + 1
            done.append(row.finish())
    finally:
        remove_ctx(ctx)
    command = "python -m bench" + (" --quick" if args.quick else "") + (
        f" --only {','.join(chosen)}" if args.only else "") + (
        f" --sessions {args.sessions}" if args.sessions != 64 else "") + (
        f" --many {args.many}" if args.many != 256 else "") + (
        f" --image-live {args.image_live}" if args.image_live != 64 else "") + (
        f" --image-tar {args.image_tar}" if args.image_tar else "")
    result = {
        "date": report.now(), "command": command, "seconds": round(time.time() - started, 1),
        "quick": args.quick, "machine": report.machine(), "versions": report.versions(),
        "rows": [r.as_dict() for r in done],
    }
    print(report.table_text(done))
    js, md = report.write(args.out, result, done)
    print(f"\nwrote {js} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
