"""Fixtures for real processes in real cgroups: every group and process is removed after."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from sandbox.events import ListEmit
from sandbox.jail.cgroup_layout import available
from sandbox.jail.cgroups import SessionCgroup
from sandbox.jail.profile import LimitsSection
from sandbox.monitor.procmon import ProcessMonitor


def new_id() -> str:
    return f"t-procs-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_cgroup() -> Iterator[object]:
    """make_cgroup(**limits) -> a fresh SessionCgroup; killed and removed at teardown."""
    ok, reason = available()
    if not ok:
        pytest.fail(f"cgroups unavailable: {reason}")
    made: list[SessionCgroup] = []

    def make(**limits: int) -> SessionCgroup:
        group = SessionCgroup.create(new_id(), LimitsSection(**limits))
        made.append(group)
        return group

    yield make
    for group in made:
        group.remove()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to put spawned processes in; each is killed and reaped at teardown."""
    spawned: list[subprocess.Popen[bytes]] = []
    yield spawned
    for p in spawned:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


@pytest.fixture
def emit() -> ListEmit:
    return ListEmit()


@pytest.fixture
def monitor() -> Iterator[ProcessMonitor]:
    mon = ProcessMonitor()
    yield mon
    mon.stop()


@pytest.fixture
def poll_monitor() -> Iterator[ProcessMonitor]:
    mon = ProcessMonitor(force_poll=True)
    yield mon
    mon.stop()
