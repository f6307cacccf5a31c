"""The real backend: nvidia-ml-py (`pynvml`) over the driver's libnvidia-ml.so.1.

NVML is initialised once per process and never shut down: nvmlShutdown is reference
counted and the monitor thread, `sandbox doctor` and sessions may all hold a backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .backend import Device, GpuProcess, NvmlUnavailable, ProcessType

# Newest first: _v3 (driver >= 510) fills fields the older structs lack; a driver without
# the symbol answers FunctionNotFound and we step down.
_COMPUTE_CALLS = (
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses",
)
_GRAPHICS_CALLS = (
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetGraphicsRunningProcesses",
)

# NVML's own state is per process (nvmlInit/nvmlShutdown): this mirrors that library
# state, so it is the one flag that lives beside the C library rather than in the
# supervisor (a fresh Supervisor does not make NVML uninitialised).
_init_lock = threading.Lock()
_initialised = False


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise NvmlUnavailable(
            "nvidia-ml-py is not installed: pip install nvidia-ml-py"
        ) from e
    return pynvml


def explain(e: Exception, nv: Any) -> str:
    """A message for an NVML error that says what to install or check."""
    value = getattr(e, "value", None)
    if value == nv.NVML_ERROR_LIBRARY_NOT_FOUND:
        return ("NVML library libnvidia-ml.so.1 not found: no NVIDIA driver on this host. "
                "Install the NVIDIA driver (Debian: apt-get install nvidia-driver; or the "
                "CUDA repo's cuda-drivers) on a machine with an NVIDIA GPU")
    if value == nv.NVML_ERROR_DRIVER_NOT_LOADED:
        return ("NVIDIA kernel driver not loaded (no GPU, or the module is missing): "
                "check `nvidia-smi` and `modprobe nvidia`")
    if value == nv.NVML_ERROR_NO_PERMISSION:
        return "no permission to use NVML: the supervisor needs read/write on /dev/nvidiactl"
    if value == nv.NVML_ERROR_INSUFFICIENT_POWER or value == nv.NVML_ERROR_GPU_IS_LOST:
        return f"a GPU is in a bad state ({e}): check `nvidia-smi`"
    return f"NVML failed: {e}"


def init() -> Any:
    """Initialise NVML once for this process; the `pynvml` module, or NvmlUnavailable."""
    global _initialised
    nv = _import_pynvml()
    with _init_lock:
        if not _initialised:
            try:
                nv.nvmlInit()
            except nv.NVMLError as e:
                raise NvmlUnavailable(explain(e, nv)) from e
            _initialised = True
    return nv


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """`GpuBackend` over the real driver. Construction fails with NvmlUnavailable."""

    def __init__(self) -> None:
        self._nv = init()
        self._handles: dict[int, Any] = {}
        # Which of the versioned calls this driver answers, found on first use.
        self._calls: dict[str, Callable[[Any], Any]] = {}

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._call(self._nv.nvmlDeviceGetHandleByIndex, index)
        return self._handles[index]

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nv.NVMLError as e:
            raise NvmlUnavailable(explain(e, self._nv)) from e

    def devices(self) -> list[Device]:
        nv = self._nv
        out = []
        for index in range(self._call(nv.nvmlDeviceGetCount)):
            h = self._handle(index)
            try:
                minor = int(nv.nvmlDeviceGetMinorNumber(h))
            except nv.NVMLError:  # not supported on some platforms: index is the usual minor
                minor = index
            out.append(Device(
                index=index,
                uuid=_text(self._call(nv.nvmlDeviceGetUUID, h)),
                name=_text(self._call(nv.nvmlDeviceGetName, h)),
                memory_total=int(self._call(nv.nvmlDeviceGetMemoryInfo, h).total),
                minor_number=minor,
            ))
        return out

    def _running(self, kind: str, names: tuple[str, ...], h: Any) -> list[Any]:
        nv = self._nv
        if kind in self._calls:
            candidates: list[Callable[[Any], Any]] = [self._calls[kind]]
        else:
            candidates = [getattr(nv, n) for n in names if hasattr(nv, n)]
        last: Exception | None = None
        for fn in candidates:
            try:
                procs = list(fn(h))
            except nv.NVMLError as e:
                if e.value == nv.NVML_ERROR_FUNCTION_NOT_FOUND:
                    last = e
                    continue
                if e.value == nv.NVML_ERROR_NOT_SUPPORTED:
                    return []  # e.g. graphics processes on a compute-only board
                raise NvmlUnavailable(explain(e, nv)) from e
            self._calls[kind] = fn
            return procs
        raise NvmlUnavailable(f"this driver answers none of {', '.join(names)}: {last}")

    def processes(self, index: int) -> list[GpuProcess]:
        h = self._handle(index)
        seen: dict[int, GpuProcess] = {}
        kinds: tuple[tuple[ProcessType, tuple[str, ...]], ...] = (
            ("compute", _COMPUTE_CALLS), ("graphics", _GRAPHICS_CALLS))
        for kind, names in kinds:
            for p in self._running(kind, names, h):
                pid = int(p.pid)
                if pid in seen:  # a process with both contexts is listed twice, same memory
                    continue
                used = p.usedGpuMemory
                seen[pid] = GpuProcess(pid=pid, used_memory=int(used or 0), type=kind)
        return list(seen.values())

    def process_utilization(self, index: int, since: int = 0) -> dict[int, int]:
        nv = self._nv
        try:
            samples = nv.nvmlDeviceGetProcessUtilization(self._handle(index), since)
        except nv.NVMLError as e:
            # NotFound: no samples since `since` (idle GPU). pynvml also raises for a plain
            # SUCCESS with zero samples. NotSupported: pre-Maxwell boards. None is an error.
            if e.value in (nv.NVML_ERROR_NOT_FOUND, nv.NVML_SUCCESS, nv.NVML_ERROR_NOT_SUPPORTED):
                return {}
            raise NvmlUnavailable(explain(e, nv)) from e
        latest: dict[int, tuple[int, int]] = {}
        for s in samples:
            pid, ts, sm = int(s.pid), int(s.timeStamp), int(s.smUtil)
            if pid not in latest or ts >= latest[pid][0]:
                latest[pid] = (ts, sm)
        return {pid: sm for pid, (_, sm) in latest.items()}

    def utilization(self, index: int) -> tuple[int, int]:
        rates = self._call(self._nv.nvmlDeviceGetUtilizationRates, self._handle(index))
        return int(rates.gpu), int(rates.memory)
