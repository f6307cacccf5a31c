"""A plain (non-editable) wheel carries everything a user needs at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_profiles_tui_rc_and_packs(test_dir: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(test_dir), str(REPO)], check=True, timeout=300,
                   capture_output=True)
    wheel = next(test_dir.glob("ringfence-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("sandbox/py.typed", "sandbox/shell_rc.bash",
                 "sandbox/profiles_builtin/default.toml", "sandbox/profiles_builtin/strict.toml",
                 "sandbox/guard/packs/mining.toml", "sandbox_tui/app.py", "sandbox_tui/app.tcss",
                 "sandbox/parts/guard.py", "sandbox/network/gateway.py", "sandbox/gpu/fake.py"):
        assert must in names, must
    assert not any(n.startswith("tui/") for n in names)  # no generic top-level `tui`
