"""GPU grants: device visibility in the jail, and NVML quotas enforced by poll-and-kill.

Every session gets a visibility plan (no `[gpu]` = every /dev/nvidia* hidden, `--no3d`,
CUDA_VISIBLE_DEVICES empty). When a GPU backend is available (NVML, or a FakeNvml given
as `Session.gpu_backend` / `SANDBOX_FAKE_NVML`), every session is registered with one
monitor per backend, grant or not, so a session granted none that still reaches a GPU is
`gpu.unauthorized`, not an anonymous `gpu.orphan`.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from ..gpu import (
    GpuMonitor,
    NvmlUnavailable,
    SessionGpu,
    get_backend,
    host_device_nodes,
    plan_visibility,
    resolve_grant,
)
from ..jail import JailSpec
from . import Part

_lock = threading.Lock()
_monitors: dict[int, GpuMonitor] = {}  # id(backend) -> its monitor
_sessions: dict[str, tuple[Any, SessionGpu]] = {}  # session id -> (Session, entry)
_no_backend = False  # NVML probed once per process and absent: do not probe per session


def _provider_for(backend: Any) -> Any:
    def provider() -> dict[str, SessionGpu]:
        with _lock:
            out = {}
            for sid, (session, entry) in _sessions.items():
                if session.gpu_part_backend is backend:
                    procs = session.hooks.part("procs")
                    extra = frozenset(procs.known_pids()) if procs is not None else frozenset()
                    out[sid] = replace(entry, extra_pids=extra)
            return out
    return provider


def _emit_for(sid: str) -> Any:
    item = _sessions.get(sid)
    return item[0].emit if item else None


def _kill(sid: str, reason: str) -> None:
    item = _sessions.get(sid)
    if item is not None:
        threading.Thread(target=item[0].kill, args=(reason,), daemon=True).start()


def _monitor(backend: Any, interval: float) -> GpuMonitor:
    with _lock:
        mon = _monitors.get(id(backend))
        if mon is None:
            mon = GpuMonitor(backend, interval, _emit_for, _kill, _provider_for(backend))
            mon.start()
            _monitors[id(backend)] = mon
        return mon


class GpuPart(Part):
    name = "gpu"

    def before_jail(self, spec: JailSpec) -> JailSpec:
        global _no_backend
        section = self.session.profile.gpu
        fake = self.session.gpu_backend
        backend: Any = None
        if fake is not None or section is not None or not _no_backend:
            try:
                backend = get_backend(fake)
            except NvmlUnavailable:
                _no_backend = fake is None
        grant = resolve_grant(section, backend if backend is not None else
                              (lambda: get_backend(fake)), in_use=())
        if grant.warning:
            self.session.emit("session.warning", {"reason": grant.warning}, severity="warning")
        vis = plan_visibility(grant, host_device_nodes())
        for warning in vis.warnings:
            self.session.emit("session.warning", {"reason": warning}, severity="warning")
        self.session.gpu_part_backend = backend
        self.entry = SessionGpu(0, section if grant.devices else None,
                                tuple(d.index for d in grant.devices))
        if grant.devices:
            self.session.emit("gpu.grant", {"devices": [d.uuid for d in grant.devices]})
        return replace(spec, gpu_args=tuple(vis.firejail_args), gpu_env=tuple(vis.env),
                       private_dev=spec.private_dev and vis.private_dev)

    def jail_started(self, jail_pid: int) -> None:
        backend = self.session.gpu_part_backend
        if backend is None:
            return
        section = self.session.profile.gpu
        interval = section.poll_interval_s if section is not None else 1.0
        with _lock:
            _sessions[self.session.id] = (self.session, replace(self.entry, root_pid=jail_pid))
        _monitor(backend, interval)

    def on_event(self, row: dict[str, Any]) -> None:
        if row["kind"] == "gpu.sample":
            detail = row["detail"]
            self.session.store.update_session(
                self.session.id, gpu_mem_bytes=detail.get("mem_bytes"),
                gpu_util=detail.get("util"))

    def teardown(self) -> None:
        backend = self.session.gpu_part_backend
        with _lock:
            _sessions.pop(self.session.id, None)
            idle = backend is not None and not any(
                s.gpu_part_backend is backend for s, _ in _sessions.values())
            mon = _monitors.pop(id(backend), None) if idle else None
        if mon is not None:
            mon.stop()  # no session left on this backend: no thread polling it
