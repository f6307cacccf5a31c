"""Kept for `sandbox/control.py` (`from .store_api import ControlListener,
StoreUnavailable`): the store's interface now lives in `sandbox.record.api`."""

from __future__ import annotations

from .record.api import ControlListener, StoreUnavailable

__all__ = ["ControlListener", "StoreUnavailable"]
