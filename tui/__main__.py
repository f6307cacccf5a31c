"""`python -m tui` (from the repo root) or `python -m sandbox_tui`: the operator TUI."""

from __future__ import annotations

import sys

from .app import run

if __name__ == "__main__":
    sys.exit(run())
