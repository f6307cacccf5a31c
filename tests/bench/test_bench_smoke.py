"""The bench runs: its quickest mode, one row, writes JSON with numbers in it.

No timing assertions here: speed lives in `python -m bench`, never in the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_per_command_row_writes_numbers(tmp_path: Path) -> None:
    """`python -m bench --quick --only per_command` prints a table and writes figures."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "per_command", "--out",
         str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Per-command overhead" in proc.stdout
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["machine"]["cores"] and data["versions"]["firejail"]
    (row,) = data["rows"]
    assert row["key"] == "per_command"
    ours = next(ln for ln in row["lines"] if ln["name"].startswith("sandbox"))
    assert ours["stat"]["n"] > 0 and ours["stat"]["median"] > 0
    assert ours["goal"] and ours["met"] in (True, False)
    assert (tmp_path / "latest.md").read_text().startswith("Measured ")


@pytest.mark.slow
def test_quick_framework_door_rows_write_numbers(tmp_path: Path) -> None:
    """`--quick --only exec,many --many 4`: the exec row has its floor and both doors,
    the many row starts all 4 sandboxes and measures exec with them alive."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "exec,many", "--many", "4",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["command"].endswith("--many 4")
    rows = {r["key"]: r for r in data["rows"]}
    assert set(rows) == {"exec", "many"}
    lines = {ln["name"]: ln for ln in rows["exec"]["lines"]}
    for name in ("firejail --join floor", "Sandbox.exec(['true'])",
                 "AsyncSandbox.exec(['true'])"):
        assert lines[name]["stat"]["n"] > 0 and lines[name]["stat"]["median"] > 0, name
    assert lines["AsyncSandbox.exec(['true'])"]["met"] in (True, False)
    many = rows["many"]
    assert not any("row failed" in n for n in many["notes"]), many["notes"]
    names = [ln["name"] for ln in many["lines"] if ln["stat"]]
    assert "all 4 ready: total wall" in names, many["notes"]
    assert any(n.startswith("exec, round robin over") for n in names), names
    assert "memory per sandbox (PSS)" in names


@pytest.mark.slow
def test_quick_image_row_runs_and_reports(tmp_path: Path) -> None:
    """`--quick --only image --image-live 2`: the row runs tiny and reports. Where the host
    cannot run images (no root, chroot off, no cached rootfs) or podman is missing, the row
    says why instead of a number; no figure is ever compared to a speed."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "image", "--image-live", "2",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["command"].endswith("--image-live 2")
    (row,) = data["rows"]
    assert row["key"] == "image" and row["num"] == 15
    assert not any("row failed" in n for n in row["notes"]), row["notes"]
    lines = {ln["name"]: ln for ln in row["lines"]}
    ready = lines["cached image: start to ready"]
    if ready["stat"] is None:  # this host cannot run images: the row says why
        assert ready["reason"], ready
        return
    assert ready["stat"]["n"] > 0 and ready["met"] in (True, False)
    for name in ("host filesystem: start to ready",
                 "first import: `sandbox image import TAR NAME` (CLI)",
                 "disk per sandbox: its upper (`du` of uppers/<id>), 2 live",
                 "memory per sandbox (PSS), 2 live on the image"):
        assert lines[name]["stat"]["median"] > 0, name
    beyond = lines["disk per sandbox beyond its upper (image store growth / N)"]
    assert beyond["stat"] is not None and beyond["met"] in (True, False)
    podman = lines["`podman run --rm IMAGE true`"]
    assert podman["stat"] is not None or podman["reason"], podman
    docker = lines["`docker run --rm IMAGE true`"]
    assert docker["reason"], docker
