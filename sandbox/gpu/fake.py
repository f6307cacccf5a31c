"""`FakeNvml`: a scriptable GPU backend for tests (ours and users'), no driver needed.

It is the only stand-in in this project's tests: everything else (processes, sandboxes,
kills) is real, and the fake reports real host PIDs. Drive it with setters::

    fake = FakeNvml(devices=2)
    fake.set_process(0, pid=proc.pid, used_memory=3 << 30, sm_util=97)
    fake.set_utilization(0, gpu=97)
    fake.make_unavailable("NVIDIA driver not loaded")  # every call now raises

or with a timeline of snapshots (`FakeStep(at=seconds, processes=[...])`), or from a JSON
scenario (`FakeNvml.from_json`, used by the `SANDBOX_FAKE_NVML` hook; shape in
`from_scenario`). A process may name its PID directly, through a `pid_file` that the
workload writes, or by a `cmdline` substring matched against /proc: the last two let a
scenario written before a sandbox starts point at a process inside it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .backend import Device, GpuProcess, NvmlUnavailable, ProcessType

MIB = 1 << 20
GIB = 1 << 30


def fake_device(index: int, memory_total: int = 80 * GIB, name: str = "Fake NVIDIA GPU") -> Device:
    """A device with a recognisable, stable UUID (`GPU-fake-0000...<index>`)."""
    return Device(index=index, uuid=f"GPU-fake-{index:012d}", name=name,
                  memory_total=memory_total, minor_number=index)


@dataclass
class FakeProcess:
    """A process the fake reports on GPU `gpu`; give exactly one of pid, pid_file, cmdline."""

    gpu: int
    pid: int | None = None
    pid_file: str | None = None
    """Read the PID from this file at each query (skipped while missing or empty)."""
    cmdline: str | None = None
    """Report every process whose /proc cmdline contains this text (not the caller)."""
    used_memory: int = 0
    sm_util: int = 0
    type: ProcessType = "compute"

    def pids(self) -> list[int]:
        if self.pid is not None:
            return [self.pid]
        if self.pid_file is not None:
            try:
                return [int(Path(self.pid_file).read_text().split()[0])]
            except (OSError, ValueError, IndexError):
                return []
        if self.cmdline is not None:
            return _pids_with_cmdline(self.cmdline)
        return []


@dataclass
class FakeStep:
    """A snapshot applied once `at` seconds have passed since the timeline started."""

    at: float
    processes: list[FakeProcess] = field(default_factory=list)
    utilization: dict[int, tuple[int, int]] = field(default_factory=dict)


def _pids_with_cmdline(text: str) -> list[int]:
    out = []
    needle = text.encode()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if needle in cmd:
            out.append(int(name))
    return sorted(out)


class FakeNvml:
    """A `GpuBackend` whose devices, processes and utilisation are set by the test."""

    def __init__(self, devices: int | Sequence[Device] = 1, *, unavailable: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.RLock()
        self._devices = (
            [fake_device(i) for i in range(devices)] if isinstance(devices, int)
            else list(devices)
        )
        self._processes: list[FakeProcess] = []
        self._utilization: dict[int, tuple[int, int]] = {}
        self._timeline: list[FakeStep] = []
        self._started = 0.0
        self._clock = clock
        self.unavailable = unavailable
        """Non-empty: every call raises NvmlUnavailable with this message."""
        self.calls: list[str] = []
        """Names of the interface calls made, in order (for assertions)."""
        self._source: Path | None = None
        self._mtime = 0.0
        self.driver_files: list[str] = []
        """The driver's user-space files an image sandbox gets bound in (`gpu.driver`): the
        real NVML finds the host's; a test names stand-ins."""

    # -- scripting -------------------------------------------------------------------

    def set_process(self, gpu: int, pid: int, used_memory: int = 0, sm_util: int = 0,
                    type: ProcessType = "compute") -> None:
        """Report `pid` on GPU `gpu` (replacing what was reported for it there)."""
        with self._lock:
            self.remove_process(gpu, pid)
            self._processes.append(FakeProcess(gpu=gpu, pid=pid, used_memory=used_memory,
                                               sm_util=sm_util, type=type))

    def add(self, process: FakeProcess) -> None:
        """Report a process given as a FakeProcess (pid, pid_file or cmdline)."""
        with self._lock:
            self._processes.append(process)

    def remove_process(self, gpu: int, pid: int) -> None:
        with self._lock:
            self._processes = [p for p in self._processes if not (p.gpu == gpu and p.pid == pid)]

    def clear_processes(self, gpu: int | None = None) -> None:
        with self._lock:
            self._processes = [p for p in self._processes if gpu is not None and p.gpu != gpu]

    def set_utilization(self, gpu: int, util: int, mem: int = 0) -> None:
        """Device utilisation; unset, it is the sum of its processes' SM use (max 100)."""
        with self._lock:
            self._utilization[gpu] = (util, mem)

    def set_timeline(self, steps: Sequence[FakeStep]) -> None:
        """Replace the state by each step in turn as the clock passes its `at` (from now)."""
        with self._lock:
            self._timeline = sorted(steps, key=lambda s: s.at)
            self._started = self._clock()

    def make_unavailable(self, reason: str = "NVIDIA driver not loaded (fake)") -> None:
        self.unavailable = reason

    # -- scenarios -------------------------------------------------------------------

    @classmethod
    def from_scenario(cls, data: Mapping[str, Any]) -> FakeNvml:
        """A fake from a scenario dict (the JSON that `SANDBOX_FAKE_NVML` names)::

            {
              "unavailable": "",            # non-empty: every call raises NvmlUnavailable
              "devices": 2,                 # a count, or a list of
                                            # {"index", "uuid", "name", "memory_total_mib",
                                            #  "minor_number"} (all but index optional)
              "processes": [                # reported from the start
                {"gpu": 0, "pid": 1234,     # or "pid_file": "/path", or "cmdline": "text"
                 "used_mib": 512,           # or "used_bytes"
                 "sm_util": 90, "type": "compute"}
              ],
              "utilization": {"0": [95, 40]},   # device: [gpu %, memory %]; optional
              "timeline": [                 # optional snapshots replacing the state
                {"at": 5.0, "processes": [...], "utilization": {...}}
              ]
            }
        """
        raw_devices = data.get("devices", 1)
        if isinstance(raw_devices, int):
            devices = [fake_device(i) for i in range(raw_devices)]
        else:
            devices = []
            for d in raw_devices:
                i = int(d["index"])
                base = fake_device(i)
                devices.append(Device(
                    index=i, uuid=str(d.get("uuid", base.uuid)),
                    name=str(d.get("name", base.name)),
                    memory_total=int(d.get("memory_total_mib", base.memory_total // MIB)) * MIB,
                    minor_number=int(d.get("minor_number", i)),
                ))
        fake = cls(devices, unavailable=str(data.get("unavailable", "")))
        fake._processes = [_process(p) for p in data.get("processes", [])]
        fake._utilization = _utilization(data.get("utilization", {}))
        if data.get("timeline"):
            fake.set_timeline([
                FakeStep(at=float(s.get("at", 0)),
                         processes=[_process(p) for p in s.get("processes", [])],
                         utilization=_utilization(s.get("utilization", {})))
                for s in data["timeline"]
            ])
        return fake

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], *, reload: bool = True) -> FakeNvml:
        """A fake from a JSON scenario file; with `reload`, edits to the file take effect
        at the next call (the timeline restarts from the edit)."""
        p = Path(path)
        fake = _parse(cls, p)
        if reload:
            fake._source = p
            fake._mtime = p.stat().st_mtime
        return fake

    def _maybe_reload(self) -> None:
        if self._source is None:
            return
        try:
            mtime = self._source.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        try:
            fresh = _parse(FakeNvml, self._source)
        except NvmlUnavailable:
            return  # half-written file: keep the old state, try again next call
        self._mtime = mtime
        self._devices, self.unavailable = fresh._devices, fresh.unavailable
        self._processes, self._utilization = fresh._processes, fresh._utilization
        self._timeline, self._started = fresh._timeline, self._clock()

    # -- the GpuBackend interface ----------------------------------------------------

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        self._maybe_reload()
        if self.unavailable:
            raise NvmlUnavailable(self.unavailable)
        elapsed = self._clock() - self._started
        while self._timeline and self._timeline[0].at <= elapsed:
            step = self._timeline.pop(0)
            self._processes = list(step.processes)
            self._utilization = dict(step.utilization)

    def _device(self, index: int) -> Device:
        for d in self._devices:
            if d.index == index:
                return d
        raise NvmlUnavailable(f"no GPU with index {index} (fake has "
                              f"{[d.index for d in self._devices]})")

    def devices(self) -> list[Device]:
        with self._lock:
            self._enter("devices")
            return list(self._devices)

    def _resolved(self, index: int) -> list[tuple[int, FakeProcess]]:
        self._device(index)
        out: dict[int, FakeProcess] = {}
        for p in self._processes:
            if p.gpu == index:
                for pid in p.pids():
                    out.setdefault(pid, p)
        return list(out.items())

    def processes(self, index: int) -> list[GpuProcess]:
        with self._lock:
            self._enter("processes")
            return [GpuProcess(pid=pid, used_memory=p.used_memory, type=p.type)
                    for pid, p in self._resolved(index)]

    def process_utilization(self, index: int, since: int = 0) -> dict[int, int]:
        with self._lock:
            self._enter("process_utilization")
            # Like NVML: only processes with samples appear; an idle GPU gives {}.
            return {pid: p.sm_util for pid, p in self._resolved(index) if p.sm_util > 0}

    def utilization(self, index: int) -> tuple[int, int]:
        with self._lock:
            self._enter("utilization")
            if index in self._utilization:
                return self._utilization[index]
            return min(100, sum(p.sm_util for _, p in self._resolved(index))), 0


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NvmlUnavailable(f"fake NVML scenario {path} unreadable: {e}") from e
    if not isinstance(data, dict):
        raise NvmlUnavailable(f"fake NVML scenario {path}: expected a JSON object")
    return cast(dict[str, Any], data)


def _parse(cls: type[FakeNvml], path: Path) -> FakeNvml:
    try:
        return cls.from_scenario(_load(path))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise NvmlUnavailable(f"fake NVML scenario {path} malformed: {e!r}") from e


def _process(d: Mapping[str, Any]) -> FakeProcess:
    used = int(d["used_bytes"]) if "used_bytes" in d else int(d.get("used_mib", 0)) * MIB
    kind = d.get("type", "compute")
    if kind not in ("compute", "graphics"):
        raise NvmlUnavailable(f"fake NVML scenario: bad process type {kind!r}")
    return FakeProcess(
        gpu=int(d.get("gpu", 0)),
        pid=int(d["pid"]) if "pid" in d else None,
        pid_file=str(d["pid_file"]) if "pid_file" in d else None,
        cmdline=str(d["cmdline"]) if "cmdline" in d else None,
        used_memory=used, sm_util=int(d.get("sm_util", 0)), type=kind,
    )


def _utilization(d: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    return {int(k): (int(v[0]), int(v[1]) if len(v) > 1 else 0) for k, v in d.items()}
