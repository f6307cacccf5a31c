"""The peers users would pick instead, run exactly as their docs say, or why they cannot run.

- Anthropic's sandbox-runtime: `npm install -g @anthropic-ai/sandbox-runtime`, then
  `srt --settings FILE <command>` (Linux needs bubblewrap, socat and ripgrep).
- SWE-ReX: `pip install swe-rex` into its own venv (bench/.peers/venv); its LocalRuntime
  runs commands on the host with no sandbox at all. Driven by bench/swerex_peer.py.

`python -m bench --install-peers` installs both (root: apt-get for bwrap/socat/rg).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .core import Ctx

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
SWEREX_PY = PEERS / "venv" / "bin" / "python"
SRT_SETTINGS = {  # no network, write only the workspace: the closest to our `default`
    "network": {"allowedDomains": [], "deniedDomains": []},
    "filesystem": {"denyRead": ["~/.ssh", "~/.aws"], "allowWrite": ["."], "denyWrite": []},
}


def _run(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return 1, str(e)
    return p.returncode, (p.stdout + p.stderr)[-2000:]


def install() -> None:
    """Install both peers (best effort; each failure is printed, never fatal)."""
    PEERS.mkdir(exist_ok=True)
    if shutil.which("apt-get") and not all(shutil.which(x) for x in ("bwrap", "socat", "rg")):
        print("peers: apt-get install bubblewrap socat ripgrep (srt's Linux dependencies)")
        _run(["apt-get", "update", "-qq"])
        print(_run(["apt-get", "install", "-y", "-qq", "bubblewrap", "socat", "ripgrep"])[1])
    if shutil.which("npm"):
        print("peers: npm install -g @anthropic-ai/sandbox-runtime")
        print(_run(["npm", "install", "-g", "@anthropic-ai/sandbox-runtime"])[1])
    else:
        print("peers: npm not found; srt not installed (apt-get install nodejs npm)")
    if not SWEREX_PY.exists():
        _run([sys.executable, "-m", "venv", str(PEERS / "venv")])
    print("peers: pip install swe-rex (bench/.peers/venv)")
    print(_run([str(SWEREX_PY), "-m", "pip", "install", "-q", "swe-rex"])[1])


# -- srt ------------------------------------------------------------------------------


def srt_settings(ctx: Ctx) -> Path:
    path = ctx.root / "srt-settings.json"
    path.write_text(json.dumps(SRT_SETTINGS))
    return path


def srt_argv(ctx: Ctx, program: list[str]) -> list[str]:
    return ["srt", "--settings", str(srt_settings(ctx)), *program]


def srt_problem(ctx: Ctx, cwd: Path) -> str | None:
    """None when `srt true` works here, else why not."""
    if shutil.which("srt") is None:
        return "srt not installed (npm install -g @anthropic-ai/sandbox-runtime)"
    try:
        p = subprocess.run(srt_argv(ctx, ["true"]), capture_output=True, text=True,
                           timeout=30, cwd=cwd, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"srt cannot run: {e}"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return f"srt fails here: {last}"
    return None


def srt_version() -> str | None:
    if shutil.which("srt") is None:
        return None
    code, out = _run(["srt", "--version"], timeout=30)
    return out.strip() if code == 0 else None


# -- SWE-ReX --------------------------------------------------------------------------


def swerex_problem() -> str | None:
    if not SWEREX_PY.exists():
        return "SWE-ReX not installed (python -m bench --install-peers: venv in bench/.peers)"
    code, out = _run([str(SWEREX_PY), "-c", "import swerex.runtime.local"], timeout=60)
    return None if code == 0 else f"SWE-ReX does not import: {out.strip().splitlines()[-1:]}"


def swerex(starts: int, commands: int, budget_s: float) -> dict[str, Any]:
    """Run the SWE-ReX peer script; raises RuntimeError with the reason on failure."""
    argv = [str(SWEREX_PY), str(HERE / "swerex_peer.py"), "--starts", str(starts),
            "--commands", str(commands), "--budget", str(budget_s)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=budget_s + 120,
                           check=False)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"SWE-ReX peer timed out after {e.timeout:.0f}s") from e
    for line in p.stdout.splitlines():
        if line.startswith("SWEREX_JSON "):
            data: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            return data
    raise RuntimeError("SWE-ReX peer failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])


def swerex_version() -> str | None:
    if not SWEREX_PY.exists():
        return None
    code, out = _run([str(SWEREX_PY), "-c",
                      "from importlib.metadata import version; print(version('swe-rex'))"], 60)
    return out.strip() if code == 0 else None
