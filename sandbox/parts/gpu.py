"""GPU grants: device visibility in the jail, and NVML quotas enforced by poll-and-kill.

Every session gets a visibility plan (no `[gpu]` = every /dev/nvidia* hidden, `--no3d`,
CUDA_VISIBLE_DEVICES empty). When a GPU backend is available (NVML, or a FakeNvml given
as `Session.gpu_backend` / `SANDBOX_FAKE_NVML`), every session is registered with one
monitor per backend, grant or not, so a session granted none that still reaches a GPU is
`gpu.unauthorized`, not an anonymous `gpu.orphan`.

Count grants (`count = N`) take the first GPUs no other live session holds: the grants of
this process's sessions on the same backend, and the `gpu.grant` events of every live
session (starting or running) in the session's store, so sessions of other supervisor
processes sharing the store count too. Choosing and recording a grant happens under a
lock (a thread lock and an flock on `gpu-grants.lock` next to the store), so two
sessions starting at once never pick the same GPU. When too few are free, `require =
true` refuses to start naming the sessions that hold them; `require = false` starts
without a GPU and a warning. A crashed supervisor's sessions hold their GPUs until
`sandbox gc` (run at every session start) marks them ended. Named grants (`devices =
[...]`) are taken as asked, shared or not.

GPU processes of no session (`gpu.orphan`) have no session of their own to be recorded
in: the monitor's host sink logs them and records them in every live session on the same
backend (detail `host: true`; `was_session` names the ended session a process outlived,
which makes it an alert). The monitor runs only while such sessions exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import supervisor
from ..gpu import (
    GpuMonitor,
    NvmlUnavailable,
    SessionGpu,
    get_backend,
    host_device_nodes,
    plan_visibility,
    resolve_grant,
)
from ..jail import cgroup_layout
from ..jail.firejail import JailSpec
from . import Part

log = logging.getLogger(__name__)


class _Gpus:
    """This process's GPU bookkeeping (a shared service of the supervisor): the grants,
    the sessions on each backend, one monitor per backend."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.grant_lock = threading.Lock()
        self.monitors: dict[int, GpuMonitor] = {}  # id(backend) -> its monitor
        self.sessions: dict[str, tuple[Any, SessionGpu]] = {}  # session id -> (Session, entry)
        self.granted: dict[str, tuple[int, tuple[int, ...]]] = {}  # sid -> (id(backend), GPUs)
        self.no_backend = False  # NVML probed once and absent: do not probe per session

    def stop(self) -> None:
        with self.lock:
            monitors, self.monitors = list(self.monitors.values()), {}
        for mon in monitors:
            mon.stop()


def _gpus() -> _Gpus:
    return supervisor.current().shared("gpu grants", _Gpus, _Gpus.stop)


@contextlib.contextmanager
def _grant_guard(session: Any) -> Iterator[None]:
    """Serialise choosing + recording grants: threads here, processes through an flock."""
    with _gpus().grant_lock:
        path = session.store.path.parent / "gpu-grants.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield  # a read-only state dir: the thread lock still serialises this process
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _in_use(session: Any, backend: Any) -> dict[int, str]:
    """GPU index -> id of another live session holding it (this process's, and the store's)."""
    out: dict[int, str] = {}
    gpus = _gpus()
    with gpus.lock:
        for sid, (bid, indices) in gpus.granted.items():
            if bid == id(backend) and sid != session.id:
                for i in indices:
                    out.setdefault(i, sid)
    by_uuid = {d.uuid: d.index for d in backend.devices()}
    store = session.store
    for row in store.list_sessions(live_only=True, limit=100_000):
        if row["id"] == session.id:
            continue
        for event in store.events(row["id"], kinds=("gpu.grant",)):
            for uuid in event["detail"].get("devices") or []:
                if uuid in by_uuid:
                    out.setdefault(by_uuid[uuid], row["id"])
    return out


def _host_emit(backend: Any) -> Any:
    """The monitor's host sink: log, and record in every live session on `backend`."""

    def emit(kind: str, detail: dict[str, Any], *, severity: str = "info",
             action: str = "record", rule: str | None = None) -> None:
        gpus = _gpus()
        with gpus.lock:
            targets = [s for s, _ in gpus.sessions.values() if s.gpu_part_backend is backend]
        owner = _cgroup_session(int(detail.get("pid") or 0))
        if owner is not None and targets and _live_elsewhere(targets[0].store, owner):
            return  # a live session of another supervisor process: its own monitor's
        if owner is not None:
            detail = {**detail, "cgroup_session": owner}
        log.warning("%s (host): %s", kind, detail)
        note = {**detail, "host": True,
                "note": "a GPU process of no live session; recorded in every live session "
                        "on this GPU host"}
        for session in targets:
            try:
                session.emit(kind, note, severity=severity, action=action, rule=rule)
            except Exception as e:  # one ending session must not stop the rest
                log.warning("sandbox: recording %s in session %s: %s", kind, session.id, e)

    return emit


def _cgroup_session(pid: int) -> str | None:
    """The sandbox session whose cgroup `pid` is in (any hierarchy), or None."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text() if pid > 0 else ""
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split(":", 2)[-1].strip("/").split("/")
        if len(parts) >= 2 and parts[0] == cgroup_layout.PARENT:
            return parts[1]
    return None


def _live_elsewhere(store: Any, sid: str) -> bool:
    """`sid` is live in the store but not a session of this process."""
    gpus = _gpus()
    with gpus.lock:
        if sid in gpus.sessions:
            return False
    try:
        return store.get_session(sid)["state"] in ("starting", "running")
    except Exception:  # unknown to this store: another store's, or long gone
        return False


def _provider_for(backend: Any) -> Any:
    def provider() -> dict[str, SessionGpu]:
        gpus = _gpus()
        with gpus.lock:
            items = [(sid, session, entry) for sid, (session, entry) in gpus.sessions.items()
                     if session.gpu_part_backend is backend]
        out = {}
        for sid, session, entry in items:
            # Every pid the exec monitor saw, and every member of the session's cgroup:
            # a process that left the jail's tree is still the session's.
            extra: set[int] = set()
            procs = session.hooks.procs
            if procs is not None:
                extra |= set(procs.known_pids())
            limits = session.hooks.limits
            group = limits.cgroup if limits is not None else None
            if group is not None:
                extra |= set(group.pids())
            out[sid] = replace(entry, extra_pids=frozenset(extra))
        return out
    return provider


def _emit_for(sid: str) -> Any:
    item = _gpus().sessions.get(sid)
    return item[0].emit if item else None


def _kill(sid: str, reason: str) -> None:
    item = _gpus().sessions.get(sid)
    if item is not None:
        supervisor.spawn(item[0].kill, reason, name="sandbox-gpu-kill")


def _monitor(backend: Any, interval: float) -> GpuMonitor:
    gpus = _gpus()
    with gpus.lock:
        mon = gpus.monitors.get(id(backend))
        if mon is None:
            mon = GpuMonitor(backend, interval, _emit_for, _kill, _provider_for(backend),
                             emit_host=_host_emit(backend))
            mon.start()
            gpus.monitors[id(backend)] = mon
        return mon


class GpuPart(Part):
    name = "gpu"

    def before_jail(self, spec: JailSpec) -> JailSpec:
        section = self.session.profile.gpu
        fake = self.session.gpu_backend
        backend: Any = None
        if fake is not None or section is not None or not _gpus().no_backend:
            try:
                backend = get_backend(fake)
            except NvmlUnavailable:
                _gpus().no_backend = fake is None
        with _grant_guard(self.session):
            grant = self._grant(section, backend, fake)
        if grant.warning:
            self.session.emit("session.warning", {"reason": grant.warning}, severity="warning")
        vis = plan_visibility(grant, host_device_nodes())
        for warning in vis.warnings:
            self.session.emit("session.warning", {"reason": warning}, severity="warning")
        self.session.gpu_part_backend = backend
        self.entry = SessionGpu(0, section if grant.devices else None,
                                tuple(d.index for d in grant.devices))
        return replace(spec, gpu_args=tuple(vis.firejail_args), gpu_env=tuple(vis.env),
                       private_dev=spec.private_dev and vis.private_dev)

    def _grant(self, section: Any, backend: Any, fake: Any) -> Any:
        """Resolve the grant against what other sessions hold, and record it (locked)."""
        in_use: dict[int, str] = {}
        if section is not None and not section.devices and backend is not None:
            with contextlib.suppress(NvmlUnavailable):  # resolve_grant reports it
                in_use = _in_use(self.session, backend)
        grant = resolve_grant(section, backend if backend is not None else
                              (lambda: get_backend(fake)), in_use=in_use)
        if grant.devices:
            gpus = _gpus()
            with gpus.lock:
                gpus.granted[self.session.id] = (id(backend), grant.indices)
            self.session.emit("gpu.grant", {"devices": [d.uuid for d in grant.devices],
                                            "indices": list(grant.indices)})
        return grant

    def jail_started(self, jail_pid: int) -> None:
        backend = self.session.gpu_part_backend
        if backend is None:
            return
        section = self.session.profile.gpu
        interval = section.poll_interval_s if section is not None else 1.0
        gpus = _gpus()
        with gpus.lock:
            gpus.sessions[self.session.id] = (self.session, replace(self.entry, root_pid=jail_pid))
        _monitor(backend, interval)

    def on_event(self, row: dict[str, Any]) -> None:
        if row["kind"] == "gpu.sample":
            detail = row["detail"]
            self.session.store.update_session(
                self.session.id, gpu_mem_bytes=detail.get("mem_bytes"),
                gpu_util=detail.get("util_now", detail.get("util")))  # util: window avg

    def teardown(self) -> None:
        backend = self.session.gpu_part_backend
        gpus = _gpus()
        with gpus.lock:
            gpus.sessions.pop(self.session.id, None)
            gpus.granted.pop(self.session.id, None)
            idle = backend is not None and not any(
                s.gpu_part_backend is backend for s, _ in gpus.sessions.values())
            mon = gpus.monitors.pop(id(backend), None) if idle else None
        if mon is not None:
            mon.stop()  # no session left on this backend: no thread polling it
