"""Machine, versions, and the three outputs: the terminal table, latest.json, latest.md."""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import peers
from .core import Line, Row

REPO = Path(__file__).resolve().parent.parent


def _out(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (p.stdout or p.stderr).strip()


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    distro = ""
    with open("/etc/os-release") as fh:
        for line in fh:
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kib / 1048576, 1),
            "kernel": platform.release(), "os": distro, "hostname": platform.node()}


def versions() -> dict[str, str | None]:
    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    fj = re.search(r"firejail version (\S+)", _out(["firejail", "--version"]))
    head = _out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "sandbox": pkg("ringfence"), "git": head + ("+dirty" if dirty else ""),
        "python": platform.python_version(), "firejail": fj.group(1) if fj else None,
        "pexpect": pkg("pexpect"), "sqlite": sqlite3.sqlite_version,
        "srt": peers.srt_version(), "swe-rex": peers.swerex_version(),
        "bubblewrap": _out(["bwrap", "--version"]).replace("bubblewrap ", "") or None,
        "node": _out(["node", "--version"]) or None,
    }


def fmt_value(ln: Line) -> str:
    if ln.stat is None:
        return "n/a"
    s = ln.stat
    digits = 3 if s.median < 1 else (2 if s.median < 10 else (1 if s.median < 1000 else 0))
    return f"{s.median:.{digits}f} {ln.unit}"


def fmt_spread(ln: Line) -> str:
    if ln.stat is None or ln.stat.n < 2:
        return ""
    s = ln.stat
    digits = 3 if s.median < 1 else (2 if s.median < 10 else (1 if s.median < 1000 else 0))
    return f"{s.p10:.{digits}f}–{s.p90:.{digits}f} (n={s.n})"


def fmt_ratio(ln: Line) -> str:
    if ln.ratio is None:
        return ""
    if ln.ratio_kind == "inv":
        return f"{ln.ratio:.0f}x faster than {ln.baseline}"
    if ln.ratio_kind == "%":
        return f"{ln.ratio:.0f} % of {ln.baseline}"
    return f"{ln.ratio:.2f}x {ln.baseline}"


def fmt_status(ln: Line) -> str:
    if ln.goal is None:
        return ""
    if ln.stat is None:
        return f"{ln.goal.text}: not measured"
    if ln.met is None:
        return f"{ln.goal.text}: ?"
    return f"{ln.goal.text}: {'met' if ln.met else 'MISSED'}"


def table_text(rows: list[Row]) -> str:
    out: list[str] = []
    for row in rows:
        out.append(f"\n{row.num}. {row.title}  ({row.seconds:.0f} s)")
        for ln in row.lines:
            val = fmt_value(ln)
            out.append(f"   {ln.name[:58]:<58} {val:>12}  {fmt_spread(ln):<24} "
                       f"{fmt_ratio(ln)[:60]}")
            status = fmt_status(ln)
            if status:
                out.append(f"   {'':<58} {'':>12}  -> {status}")
            if ln.stat is None and ln.reason:
                out.append(f"   {'':<58} {'':>12}  why: {ln.reason}")
        for note in row.notes:
            out.append(f"   note: {note}")
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_md(result: dict[str, Any], rows: list[Row]) -> str:
    m, v = result["machine"], result["versions"]
    peer = ", ".join(f"{k} {v[k]}" for k in ("srt", "swe-rex") if v.get(k)) or "none installed"
    out = [
        f"Measured {result['date']} with `{result['command']}` on {m['cpu']} "
        f"({m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, {m['os']}); "
        f"sandbox {v['sandbox']} ({v['git']}), Python {v['python']}, firejail {v['firejail']}, "
        f"SQLite {v['sqlite']}; peers: {peer}. Median and p10–p90 over n runs; "
        "ratios against a baseline measured in the same run.",
        "",
        "| # | figure | median | p10–p90 (n) | vs baseline | goal |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(f"| **{row.num}** | **{_md_cell(row.title)}** | | | | |")
        for ln in row.lines:
            val = fmt_value(ln) if ln.stat else f"n/a: {ln.reason}"
            status = fmt_status(ln).replace(": met", ": **met**").replace(
                ": MISSED", ": **missed**")
            out.append(f"| | {_md_cell(ln.name)} | {_md_cell(val)} | {fmt_spread(ln)} | "
                       f"{_md_cell(fmt_ratio(ln))} | {_md_cell(status)} |")
        for note in row.notes:
            out.append(f"| | *{_md_cell(note)}* | | | | |")
    return "\n".join(out) + "\n"


def write(result_dir: Path, result: dict[str, Any], rows: list[Row]) -> tuple[Path, Path]:
    result_dir.mkdir(parents=True, exist_ok=True)
    js, md = result_dir / "latest.json", result_dir / "latest.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(table_md(result, rows))
    return js, md


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
