"""cgroup limits (memory, CPU, pids) for the whole session, sampled into the store.

Root: the cgroup is required (fail closed). Not root: rlimits only, with a warning event,
since an unprivileged user cannot create cgroups on most hosts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .. import cgroups
from ..cgroups import SessionCgroup
from ..jail import JailSpec
from ..sampler import ResourceSampler
from . import Part

_sampler: ResourceSampler | None = None
_lock = threading.Lock()


def sampler() -> ResourceSampler:
    global _sampler
    with _lock:
        if _sampler is None:
            _sampler = ResourceSampler(interval=1.0, sample_every=5.0)
        return _sampler


class LimitsPart(Part):
    name = "limits"
    cgroup: SessionCgroup | None = None

    def before_jail(self, spec: JailSpec) -> JailSpec:
        ok, reason = cgroups.available()
        if not ok and os.geteuid() != 0:
            self.session.emit("session.warning", {
                "reason": f"no cgroup limits ({reason}); rlimits only"}, severity="warning")
            return spec
        self.cgroup = SessionCgroup.create(self.session.id, self.session.profile.limits)
        self.session.add_resource("cgroup", self.cgroup.resources)
        return spec

    def preexec(self) -> Callable[[], None] | None:
        return self.cgroup.enter_current_process if self.cgroup else None

    def jail_started(self, jail_pid: int) -> None:
        if self.cgroup is not None:
            sampler().add(self.session.id, self.cgroup, self.session.emit)

    def on_event(self, row: dict[str, Any]) -> None:
        # The TUI and `sandbox ls` read live figures from the session row, not events;
        # a sample's cpu_percent is its window's average, cpu_percent_now the live one.
        if row["kind"] == "resource.sample":
            d = row["detail"]
            self.session.store.update_session(
                self.session.id, cpu_percent=d.get("cpu_percent_now", d.get("cpu_percent")),
                mem_bytes=d.get("mem_bytes"))

    def teardown(self) -> None:
        if self.cgroup is not None:
            sampler().remove(self.session.id)
            self.cgroup.kill()
            self.cgroup.remove()
