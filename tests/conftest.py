"""Shared fixtures: a private store and workspace per test, outside /tmp.

Workspaces and state live under /srv/sandbox-tests, not /tmp: the jail's private
/tmp would hide anything under /tmp anyway (and firejail mounts /var noexec), and a test
that passes only because of that could not fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_ROOT = Path("/srv/sandbox-tests")
REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the suite needs root: sudo scripts/test")


@pytest.fixture
def test_dir() -> Iterator[Path]:
    path = TEST_ROOT / uuid.uuid4().hex[:10]
    path.mkdir(parents=True, mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def state_dir(test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own store: SANDBOX_STATE_DIR for API, CLI and child processes."""
    state = test_dir / "state"
    monkeypatch.setenv("SANDBOX_STATE_DIR", str(state))
    monkeypatch.delenv("SANDBOX_DB", raising=False)
    return state


@pytest.fixture
def workspace(test_dir: Path) -> Path:
    """A workspace owned by the agent user (firejail makes only the owner's dirs writable)."""
    from tests.helpers import make_workspace

    return make_workspace(test_dir / "ws")


@pytest.fixture
def sb(workspace: Path) -> Iterator[object]:
    from sandbox import Sandbox

    box = Sandbox(workdir=workspace)
    box.start()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="session", autouse=True)
def no_leftover_cgroups() -> Iterator[None]:
    """After the run, remove empty session cgroups this run created (a test that SIGKILLs
    an owner on purpose leaves its cgroup to gc, and the test's store is gone by then).
    Only empty ones made since the run began: anything with processes is someone's."""
    import time

    from sandbox.jail import cgroups

    started = time.time()
    yield
    for res in cgroups.leftovers().values():
        dirs = [Path(d) for d in res.get("dirs", {}).values()]
        if dirs and all(d.exists() and d.stat().st_ctime >= started - 1 for d in dirs):
            group = cgroups.SessionCgroup.from_resources(res)
            if not group.pids():
                group.remove()


def _host_leftovers() -> set[str]:
    """Every host object a session makes, by name: netns, veth, nft table, cgroup, decoy
    home, fresh workspace, hide-list include file."""
    from sandbox import network
    from sandbox.jail import cgroups

    out = set(network.leftovers())
    out |= {f"cgroup:{sid}" for sid in cgroups.leftovers()}
    for root in (Path("/srv/sandbox/homes"), Path("/srv/sandbox/work"),
                 Path("/run/sandbox/jail")):
        if root.is_dir():
            out |= {f"file:{p}" for p in root.iterdir()}
    return out


@pytest.fixture(scope="module", autouse=True)
def no_leftovers_after_module() -> Iterator[None]:
    """Issue 11: after every test module, nothing a session made is left on the host.

    Compared with what existed when the module began (another run's live sessions are
    not ours); a teardown still finishing gets a few seconds. A test that kills an owner
    on purpose must reap it (`gc.collect`) itself.
    """
    import time

    before = _host_leftovers()
    yield
    deadline = time.monotonic() + 15
    new = _host_leftovers() - before
    while new and time.monotonic() < deadline:
        time.sleep(0.25)
        new = _host_leftovers() - before
    assert not new, f"host resources left behind by this module: {sorted(new)}"


# Session fixtures shared across directories live here, once: a session fixture imported
# into a second conftest or test module is a second fixture with a second set-up (the fake
# internet's host routes added twice: "File exists"; the image store wiped under a user).
@pytest.fixture(scope="session")
def fake_internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.network.conftest import fake_internet_up

    with fake_internet_up(tmp_path_factory) as inet:
        yield inet


@pytest.fixture(scope="session")
def images() -> Iterator[object]:
    from tests.images.conftest import images_built

    with images_built() as built:
        yield built
