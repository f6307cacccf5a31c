"""GPUs as a granted, metered, enforced resource.

- `backend`: the four-call `GpuBackend` interface, `Device`, `GpuProcess`, `NvmlUnavailable`.
- `nvml`: the real backend (nvidia-ml-py); `fake`: `FakeNvml` for tests, shipped for users.
- `visibility`: a profile's [gpu] -> granted devices -> firejail args and env (pure).
- `monitor`: `GpuMonitor`, the poll loop: NVML readings -> `attribution` (which session
  owns each GPU process) -> `quota` (poll-and-kill enforcement and evidence events).

`get_backend()` gives the real backend or raises NvmlUnavailable with the fix. For tests
that run the CLI in a subprocess, `SANDBOX_FAKE_NVML=/path/scenario.json` makes it return a
`FakeNvml` loaded from that file instead (shape in `FakeNvml.from_scenario`); the file is
re-read when it changes. It disables real GPU accounting, so it logs a warning each time
a process first uses it.
"""

from __future__ import annotations

import logging
import os
import threading

from .attribution import DeviceUsage, SessionGpu, SessionsProvider, SessionUsage
from .backend import Device, GpuBackend, GpuProcess, NvmlUnavailable, ProcessType
from .fake import FakeNvml, FakeProcess, FakeStep, fake_device
from .monitor import GpuMonitor
from .quota import EmitFor, KillSession
from .visibility import (
    ALWAYS_HIDDEN,
    CONTROL_NODES,
    NO_GPU_ENV,
    Grant,
    Visibility,
    device_node,
    host_device_nodes,
    plan_visibility,
    resolve_grant,
    select_devices,
)

__all__ = [
    "ALWAYS_HIDDEN",
    "CONTROL_NODES",
    "FAKE_ENV",
    "NO_GPU_ENV",
    "Device",
    "DeviceUsage",
    "EmitFor",
    "FakeNvml",
    "FakeProcess",
    "FakeStep",
    "GpuBackend",
    "GpuMonitor",
    "GpuProcess",
    "Grant",
    "KillSession",
    "NvmlUnavailable",
    "ProcessType",
    "SessionGpu",
    "SessionUsage",
    "SessionsProvider",
    "Visibility",
    "device_node",
    "fake_device",
    "get_backend",
    "host_device_nodes",
    "plan_visibility",
    "resolve_grant",
    "select_devices",
]

FAKE_ENV = "SANDBOX_FAKE_NVML"

log = logging.getLogger(__name__)
class _Backends:
    """The process's GPU backends (the supervisor's): one FakeNvml per scenario file, and
    real NVML once it has been found to work."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fakes: dict[str, FakeNvml] = {}
        self.real: GpuBackend | None = None


def _backends() -> _Backends:
    from .. import supervisor

    return supervisor.current().shared("gpu backends", _Backends)


def get_backend(prefer_fake: FakeNvml | None = None) -> GpuBackend:
    """The GPU backend to use: `prefer_fake` if given, the `SANDBOX_FAKE_NVML` scenario if
    set, else real NVML. Raises NvmlUnavailable (a SetupError) when NVML cannot be used or
    sees no GPU, with what to install or check."""
    if prefer_fake is not None:
        return prefer_fake
    known = _backends()
    path = os.environ.get(FAKE_ENV)
    if path:
        with known.lock:
            fake = known.fakes.get(path)
            if fake is None:
                log.warning("%s=%s: using a FAKE GPU backend, real GPUs are not metered",
                            FAKE_ENV, path)
                fake = known.fakes[path] = FakeNvml.from_json(path)
        _check_has_gpus(fake)  # like the real one: unavailable or empty raises here
        return fake
    with known.lock:
        if known.real is None:
            from .nvml import NvmlBackend

            backend = NvmlBackend()
            _check_has_gpus(backend)
            known.real = backend
        return known.real


def _check_has_gpus(backend: GpuBackend) -> None:
    if not backend.devices():
        raise NvmlUnavailable("NVML works but reports no NVIDIA GPU on this host: check "
                              "`nvidia-smi -L` (a GPU passed through to this VM/container?)")
