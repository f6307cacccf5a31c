"""Kept for `sandbox/doctor.py` (`from .store_schema import SCHEMA_VERSION`): the store's
schema now lives in `sandbox.record.schema`."""

from __future__ import annotations

from .record.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION"]
