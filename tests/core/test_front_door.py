"""The front door, tried as a new user would: the README's quick start and first API
example as pasted, the summary line against the README's sample, and what `ls` and
`show` say. Real sandboxes, real `scripts/sandbox`, no mocks."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Sandbox, SetupError
from tests.helpers import sandbox_cli

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _blocks(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _quick_start() -> tuple[list[str], list[str]]:
    """The quick start's first command (argv) and its sample summary (lines)."""
    quick = _section("Quick start")
    first = _blocks(quick, "sh")[0].splitlines()[0]
    sample = quick[quick.index("ends with a summary on stderr"):]
    return shlex.split(first, comments=True), _blocks(sample)[0].strip("\n").splitlines()


def _shape(line: str) -> str:
    """A summary line with its ids, hashes and numbers made generic."""
    line = re.sub(r"\b[0-9a-f]{8,}\b(\.\.\.)?", "HEX", line)
    return re.sub(r"\d+(\.\d+)?", "N", line)


def _summary(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("sandbox: session "))
    return lines[start:]


def _run_quick_start(checkout: Path) -> subprocess.CompletedProcess[str]:
    argv, _ = _quick_start()
    return subprocess.run(argv, cwd=checkout, capture_output=True, text=True, timeout=600,
                          check=False)


def test_readme_sample_summary_matches_a_real_run() -> None:
    """The quick start's command, run as the README writes it (from the checkout, which
    root owns: a fresh workspace), ends with a summary shaped like the README's sample."""
    argv, sample = _quick_start()
    assert argv[0] == "scripts/sandbox" and argv[1] == "run", argv
    r = _run_quick_start(REPO)
    assert r.returncode == 3 and r.stdout == "hi\n", r.stderr
    real = _summary(r.stderr)
    assert [_shape(ln) for ln in real] == [_shape(ln) for ln in sample], (real, sample)
    assert " exited with status 3 " in real[0] and " 1 command · " in real[0], real


def test_one_meaning_of_event() -> None:
    """The summary's event count is `show`'s: every row of the event log, each listed
    under events, network or processes."""
    r = sandbox_cli("run", "--", "sh", "-c", "echo hi; exit 3", cwd=REPO)
    assert r.returncode == 3, r.stderr
    line = _summary(r.stderr)[0]
    sid = line.split()[2]
    n = int(re.search(r"· (\d+) events? ·", line).group(1))  # type: ignore[union-attr]
    show = sandbox_cli("show", sid).stdout
    head = re.search(r"^events \((\d+): (.*)\):$", show, re.M)
    assert head, show
    assert int(head.group(1)) == n == len(json.loads(sandbox_cli("show", sid, "--json").stdout)["events"])
    parts = dict((p.split(" ", 1)[1], int(p.split(" ", 1)[0])) for p in head.group(2).split(", "))
    assert sum(parts.values()) == n, show
    assert parts["under processes"] == int(re.search(r"^processes \((\d+) execs", show, re.M).group(1))  # type: ignore[union-attr]
    listed = show.split(head.group(0))[1].split("\nprocesses (")[0].strip("\n").splitlines()
    assert len(listed) == parts["here"], show


def test_show_puts_firejails_own_processes_under_v() -> None:
    r = sandbox_cli("run", "-q", "--", "sh", "-c", "echo hi; exit 3", cwd=REPO)
    sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
    execs = [e for e in json.loads(sandbox_cli("show", sid, "--json").stdout)["events"]
             if e["kind"] == "proc.exec"]
    own = [e for e in execs if Path(e["detail"]["exe"]).name in ("firejail", "fnet", "fseccomp")]
    assert own and r.returncode == 3  # firejail's own are recorded (and stay in --json)
    plain, verbose = sandbox_cli("show", sid).stdout, sandbox_cli("show", "-v", sid).stdout
    procs = plain[plain.index("\nprocesses ("):]
    assert f"{len(own)} of them firejail's own: -v lists them" in procs, procs
    assert "/run/firejail/lib/" not in procs and "/usr/bin/firejail" not in procs, procs
    assert "sh -c echo hi; exit 3" in procs  # the user's command stays
    vprocs = verbose[verbose.index("\nprocesses ("):]
    assert "/run/firejail/lib/fseccomp" in vprocs and "/usr/bin/firejail" in vprocs, vprocs
    assert "sh -c echo hi; exit 3" in vprocs


def test_ls_says_when_it_cuts() -> None:
    for _ in range(3):
        assert sandbox_cli("run", "-q", "--", "true", cwd=REPO).returncode == 0
    cut = sandbox_cli("ls", "-n", "2").stdout.splitlines()
    assert len(cut) == 4 and cut[-1] == "2 of 3 sessions; -n 3 for more", cut
    whole = sandbox_cli("ls", "--limit", "3").stdout.splitlines()
    assert len(whole) == 4 and "for more" not in whole[-1], whole
    assert len(json.loads(sandbox_cli("ls", "--json", "-n", "2").stdout)) == 2


def test_readme_first_api_example_works_as_pasted(test_dir: Path) -> None:
    """Door 3's first example, pasted into python in a root-owned directory."""
    code = _blocks(_section("Door 3: the Python API"), "python")[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=test_dir, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("0 42"), r.stdout
    assert "/src" in r.stdout and "\n1\n" in r.stdout, r.stdout  # cd and export persisted
    assert lines[-1].endswith(" clean"), r.stdout


def test_api_errors_name_the_apis_words(test_dir: Path) -> None:
    """`workdir=` from the API, `--workdir` from the CLI, for the same mistakes."""
    missing, rootowned = test_dir / "missing", test_dir / "rootowned"
    rootowned.mkdir()
    for wd, fix in ((missing, "mkdir -p"), (rootowned, "chown -R")):
        with pytest.raises(SetupError) as e:
            Sandbox(workdir=wd).start()
        assert "workdir=" in str(e.value) and "--workdir" not in str(e.value), e.value
        assert fix in str(e.value), e.value
        r = sandbox_cli("run", "-q", "--workdir", str(wd), "--", "true")
        assert r.returncode == 2 and "--workdir" in r.stderr and "workdir=" not in r.stderr
        assert fix in r.stderr, r.stderr


@pytest.mark.slow
def test_fresh_checkout_quick_start_installs_the_core_only(test_dir: Path) -> None:
    """A fresh copy of the checkout: the quick start's command makes a venv with the core
    only (no test tools, no frameworks), runs, and is quiet the second time."""
    checkout = test_dir / "clone"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, checkout / name)
    first = _run_quick_start(checkout)
    assert first.returncode == 3 and first.stdout == "hi\n", first.stderr
    assert "bootstrap: installing sandbox (the core" in first.stderr, first.stderr
    venv = checkout / ".venv/bin/python"
    for extra in ("pytest", "ray", "inspect_ai"):
        probe = subprocess.run([str(venv), "-c", f"import {extra}"], cwd=test_dir, capture_output=True,
                               check=False, env={**os.environ, "PYTHONPATH": ""})
        assert probe.returncode != 0, f"{extra} was installed for the quick start"
    second = _run_quick_start(checkout)
    assert second.returncode == 3 and second.stdout == "hi\n"
    assert second.stderr.startswith("sandbox: session "), second.stderr  # nothing before
