"""The small interface every GPU backend implements (real NVML, or `FakeNvml` in tests).

Everything the runtime needs from NVML fits in four calls; keeping the interface this
narrow is what lets the fake stand in for the driver in tests without drifting from it.
PIDs are always host PIDs (NVML runs in the host PID namespace, and so does the monitor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..errors import SetupError

ProcessType = Literal["compute", "graphics"]


@dataclass(frozen=True)
class Device:
    """One GPU as NVML numbers it."""

    index: int
    """NVML index (PCI bus order), which is what `[gpu] devices = ["0"]` refers to."""
    uuid: str
    """Stable id, e.g. `GPU-5d3c...`; also accepted in `[gpu] devices`."""
    name: str
    """Marketing name, e.g. `NVIDIA H100 80GB HBM3`."""
    memory_total: int
    """Bytes of device memory."""
    minor_number: int
    """N in `/dev/nvidiaN`: the device node that grants access to this GPU."""


@dataclass(frozen=True)
class GpuProcess:
    """A process holding a context on one GPU."""

    pid: int
    """Host PID."""
    used_memory: int
    """Bytes of device memory; 0 where NVML cannot say (e.g. some vGPU/WDDM setups)."""
    type: ProcessType = "compute"


class NvmlUnavailable(SetupError):
    """NVML cannot be used here: no driver, no library, or no GPU. The message says which."""


@runtime_checkable
class GpuBackend(Protocol):
    """What the runtime asks of NVML."""

    def devices(self) -> list[Device]:
        """Every GPU NVML sees, by index."""
        ...

    def processes(self, index: int) -> list[GpuProcess]:
        """Compute and graphics processes on GPU `index`, one entry per PID."""
        ...

    def process_utilization(self, index: int, since: int = 0) -> dict[int, int]:
        """SM utilisation (percent) per PID from samples newer than `since`.

        `since` is a CPU timestamp in microseconds (NVML's convention); 0 = whatever the
        driver still buffers. A GPU with no recent samples (idle) gives `{}`, not an error.
        """
        ...

    def utilization(self, index: int) -> tuple[int, int]:
        """Device utilisation (gpu percent, memory-bandwidth percent)."""
        ...
