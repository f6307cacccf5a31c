"""Kept for `sandbox/api.py`, `sandbox/cli/running.py` and `tui/actions.py`: a session's
exports now live in `sandbox.record.export`."""

from __future__ import annotations

from .record.export import asciicast, json_row, jsonl, report

__all__ = ["asciicast", "json_row", "jsonl", "report"]
