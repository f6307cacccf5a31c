"""cgroup limits (memory, CPU, pids) for the whole session, sampled into the store.

Root: the cgroup is required (fail closed). Not root: rlimits only, with a warning event,
since an unprivileged user cannot create cgroups on most hosts.

Limit hits are `resource.breach` events (see `sandbox.monitor.sampler`): OOM kills, memory held
in /dev/shm and tmpfs, the pids limit, CPU-quota and all-cores saturation from the
cgroup; the file-size rlimit and the output cap from each finished command
(`command_finished`, which the session calls with the result), since no cgroup counter
sees those. A hit that ends the session is found by the sampler's last reading, taken in
`teardown` before the cgroup (and with it the kernel's counters) is removed.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence
from typing import Any

from .. import supervisor
from ..jail import cgroup_layout
from ..jail.cgroups import SessionCgroup
from ..jail.firejail import JailSpec
from ..monitor.sampler import ResourceSampler
from . import Part

SIGXFSZ_STATUS = 128 + signal.SIGXFSZ
"""bash's status for a command killed by SIGXFSZ (the RLIMIT_FSIZE signal): 153."""
_FSIZE_TEXT = re.compile(r"File size limit exceeded|File too large|\[Errno 27\]")
"""What bash (job killed by SIGXFSZ) and strerror(EFBIG) print; Python ignores SIGXFSZ,
so its writes fail with `OSError: [Errno 27] File too large` instead."""


_FORK_TEXT = re.compile(r"fork: (?:retry: )?Resource temporarily unavailable|Cannot fork"
                        r"|BlockingIOError: \[Errno 11\] Resource temporarily unavailable")
"""What bash, dash and Python print when fork() fails with EAGAIN (a process limit)."""


def command_breaches(*, exit_code: int | None, output: str, truncated: bool,
                     output_bytes: int, file_size_mib: int, max_output_bytes: int,
                     processes: int = 0, cgroup_counted_forks: bool = False,
                     ) -> list[tuple[str, dict[str, Any]]]:
    """(severity, resource.breach detail) for limits one finished command hit.

    The file-size limit: exit status 153 (SIGXFSZ), or the kernel's EFBIG text in the
    output. Best effort: a program that handles EFBIG quietly, or output sent elsewhere,
    leaves no trace outside the jail (the exec monitor's exit signals would see SIGXFSZ
    deaths of background processes). The output cap: the recorder cut the output.

    A process limit no counter saw: the output says fork() failed with EAGAIN while the
    group's pids.max failed none (`cgroup_counted_forks` False), so RLIMIT_NPROC did.
    It counts the agent user's tasks in every session that user runs, so it can bind
    before pids.max (which sits below it, see `cgroups.pids_max`) and leaves no trace
    but the message. Where pids.max counted, the sampler reports from its counter."""
    out: list[tuple[str, dict[str, Any]]] = []
    fork = _FORK_TEXT.search(output)
    if fork and not cgroup_counted_forks:
        out.append(("warning", {
            "limit": "pids", "reason": "pids_max", "rlimit": "RLIMIT_NPROC",
            "max": processes, "value": processes, "exit_code": exit_code,
            "message": f"pids limit (RLIMIT_NPROC {processes}) reached: forks fail, the "
                       f"output says {fork.group(0)!r}"}))
    match = _FSIZE_TEXT.search(output)
    if exit_code == SIGXFSZ_STATUS or match:
        why = (f"exit status {exit_code} (SIGXFSZ)" if exit_code == SIGXFSZ_STATUS
               else f"output says {match.group(0)!r}" if match else "")
        out.append(("warning", {
            "limit": "file_size", "reason": "file_size_limit", "max": file_size_mib << 20,
            "value": file_size_mib << 20, "exit_code": exit_code,
            "message": f"file-size limit ({file_size_mib} MiB) hit: {why}"}))
    if truncated:
        out.append(("warning", {
            "limit": "output", "reason": "output_truncated", "value": output_bytes,
            "max": max_output_bytes,
            "message": f"output cap ({max_output_bytes} bytes) hit: {output_bytes} bytes of "
                       f"output, the middle cut from the record"}))
    return out


def sampler() -> ResourceSampler:
    """The process's one resource sampler (a shared service of the supervisor)."""
    return supervisor.current().shared(
        "resource sampler", lambda: ResourceSampler(interval=1.0, sample_every=5.0),
        ResourceSampler.stop)


class LimitsPart(Part):
    name = "limits"
    cgroup: SessionCgroup | None = None

    def before_jail(self, spec: JailSpec) -> JailSpec:
        ok, reason = cgroup_layout.available()
        if not ok and os.geteuid() != 0:
            self.session.emit("session.warning", {
                "reason": f"no cgroup limits ({reason}); rlimits only"}, severity="warning")
            return spec
        self.cgroup = SessionCgroup.create(self.session.id, self.session.profile.limits)
        self.session.add_resource("cgroup", self.cgroup.resources)
        return spec

    def cgroup_files(self) -> Sequence[bytes]:
        return self.cgroup.enter_files if self.cgroup else ()

    def jail_started(self, jail_pid: int) -> None:
        if self.cgroup is not None:
            sampler().add(self.session.id, self.cgroup, self.session.emit)

    def command_finished(self, command: str, exit_code: int | None, output: str,
                         truncated: bool, output_bytes: int) -> None:
        """Record the rlimit / output-cap breaches of one finished command (any mode)."""
        profile = self.session.profile
        counted = self.cgroup is not None and self.cgroup.pids_max_hits() > 0
        for severity, detail in command_breaches(
                exit_code=exit_code, output=output, truncated=truncated,
                output_bytes=output_bytes, file_size_mib=profile.limits.file_size_mib,
                max_output_bytes=profile.recording.max_output_bytes,
                processes=profile.limits.processes, cgroup_counted_forks=counted):
            self.session.emit("resource.breach", {**detail, "command": command[:500]},
                              severity=severity)

    def on_event(self, row: dict[str, Any]) -> None:
        # The TUI and `sandbox ls` read live figures from the session row, not events;
        # a sample's cpu_percent is its window's average, cpu_percent_now the live one.
        if row["kind"] == "resource.sample":
            d = row["detail"]
            self.session.store.update_session(
                self.session.id, cpu_percent=d.get("cpu_percent_now", d.get("cpu_percent")),
                mem_bytes=d.get("mem_bytes"))

    _final_done = False

    def final_sample(self) -> None:
        """The last reading, once: an OOM kill, a fork bomb at pids.max or a busy stretch
        that ended the session within the last sampling interval is only in the group's
        counters, and those go with the group. The session calls it as soon as the jail
        is dead, so its breaches come before `session.end`; teardown makes sure."""
        if self.cgroup is None or self._final_done:
            return
        self._final_done = True
        try:
            sampler().finish(self.session.id)
        except Exception as e:  # the record of a breach must not block the clean-up
            self.session.emit("session.warning", {
                "reason": f"last resource sample failed: {e}"}, severity="warning")

    def teardown(self) -> None:
        if self.cgroup is not None:
            self.final_sample()
            self.cgroup.kill()
            self.cgroup.remove()
