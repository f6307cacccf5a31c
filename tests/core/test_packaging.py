"""A plain (non-editable) wheel carries everything a user needs at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_profiles_tui_rc_and_packs(test_dir: Path) -> None:
    # Built from a clean copy: setuptools' build/ in the checkout keeps every file an
    # earlier build had, which would hide a package dropped from pyproject's list.
    src = test_dir / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "bench", "tests", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(test_dir), str(src)], check=True, timeout=300,
                   capture_output=True)
    wheel = next(test_dir.glob("ringfence-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("sandbox/py.typed", "sandbox/shell_rc.bash",
                 "sandbox/profiles_builtin/default.toml", "sandbox/profiles_builtin/strict.toml",
                 "sandbox/guard/packs/mining.toml", "sandbox/jail/fastexec/sandbox-exec.c",
                 "sandbox_tui/app.py", "sandbox_tui/app.tcss",
                 "sandbox/parts/guard.py", "sandbox/network/gateway.py", "sandbox/gpu/fake.py"):
        assert must in names, must
    assert not any(n.startswith("tui/") for n in names)  # no generic top-level `tui`
    # Every module of the package, subpackages included: a package missing from
    # pyproject's list is absent from the wheel while an editable install hides it
    # (sandbox.jail.images was, until this check).
    missing = sorted(str(p.relative_to(REPO)) for p in (REPO / "sandbox").rglob("*.py")
                     if str(p.relative_to(REPO)) not in names)
    assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
