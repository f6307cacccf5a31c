"""Fleet fixtures: a real PostgreSQL server for the whole run, a fresh database per test.

The server is started by the suite itself (`initdb` into a temporary directory as the
`postgres` OS user, loopback TCP on a free port, SCRAM password) and stopped and removed
afterwards, even when a test fails. `store_url` is a password URL to an empty database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sandbox.record.pgserver import PgServer, pg_bindir


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    if pg_bindir() is None:
        pytest.fail("PostgreSQL is not installed: scripts/bootstrap.sh installs `postgresql`")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def store_url(pg: PgServer) -> str:
    """A password URL (127.0.0.1, SCRAM) to a fresh, empty database."""
    return pg.createdb("t_" + uuid.uuid4().hex[:12])
