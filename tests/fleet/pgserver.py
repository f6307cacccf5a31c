"""Moved to sandbox/pgserver.py (kept while a running bench imports it)."""

from sandbox.pgserver import PgServer, free_port, pg_bindir

__all__ = ["PgServer", "free_port", "pg_bindir"]
