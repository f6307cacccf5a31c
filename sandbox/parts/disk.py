"""The workspace quota: a fresh workspace is a size-limited mount (`users.mount_quota`).

Writing past it fails in the jail with ENOSPC (a clean error for the agent); this part
turns "the workspace is full" into a flagged event, checked at every resource sample and
once more when the session ends, so a hit never goes unrecorded.
"""

from __future__ import annotations

import os
from typing import Any

from . import Part

FULL_AT = 0.98  # tmpfs keeps a little back: "full" is the last 2%


class DiskPart(Part):
    name = "disk"
    reported = False

    def _quota_path(self) -> str | None:
        placement = self.session.placement
        if placement is None or not placement.fresh or not self.session.profile.limits.disk_mib:
            return None
        return str(placement.workdir)

    def check(self) -> None:
        path = self._quota_path()
        if path is None or self.reported:
            return
        try:
            st = os.statvfs(path)
        except OSError:
            return
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        if total and (total - free) / total >= FULL_AT:
            self.reported = True
            self.session.emit("resource.disk_full", {
                "path": path, "quota_bytes": total, "used_bytes": total - free,
                "limit": "disk_mib", "disk_mib": self.session.profile.limits.disk_mib,
            }, severity="warning", action="flag", rule="limits.disk_quota")

    def on_event(self, row: dict[str, Any]) -> None:
        if row["kind"] == "resource.sample":
            self.check()
