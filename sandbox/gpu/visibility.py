"""Which GPUs a session gets, and the firejail arguments and env that show only those.

Device nodes are the hard boundary: a process that cannot open /dev/nvidiaN cannot use
GPU N whatever its environment says. CUDA_VISIBLE_DEVICES only keeps well-behaved code
from tripping over devices it may not open.

What firejail 0.9.72 does with the nodes (read from its fs_dev.c and checked by hand):
- `--private-dev` builds a fresh /dev and carries over /dev/nvidia0..nvidia9,
  /dev/nvidiactl, /dev/nvidia-modeset, /dev/nvidia-uvm and /dev/dri (the "3D" set), unless
  `--no3d` is given. It does NOT hide NVIDIA nodes on its own, and it never carries
  /dev/nvidia10 and up, /dev/nvidia-uvm-tools or /dev/nvidia-caps.
- `--no3d` hides that whole 3D set, with or without `--private-dev`.
- `--blacklist=/dev/nvidiaN` replaces one node by an empty, unreadable file; blacklisting
  a node that does not exist is a no-op, so the lists below may name absent nodes.

So: no grant -> `--no3d` plus a blacklist of every NVIDIA node (belt and braces, and the
only protection if the jail runs without --private-dev). A grant -> no `--no3d` (it would
hide the granted node too, and a blacklist cannot be undone by a later option), and a
blacklist of every NVIDIA node that is not granted, plus /dev/dri (render nodes of any GPU,
which would be unmetered). `--private-dev` stays on unless a granted GPU's node is
/dev/nvidia10 or higher, which firejail cannot carry; then `Visibility.private_dev` is
False and says so in `warnings`.

/dev/nvidia-uvm-tools (profilers only: CUPTI, Nsight) and /dev/nvidia-caps (MIG
capabilities; MIG slices are not grantable yet) stay hidden even with a grant: CUDA
programs do not need them, and firejail's --private-dev would not carry them anyway.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import SetupError
from ..jail.profile import GpuSection
from .backend import Device, GpuBackend, NvmlUnavailable

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-modeset")
"""Shown with any grant: CUDA opens these besides the GPU's own node."""
ALWAYS_HIDDEN = ("/dev/nvidia-uvm-tools", "/dev/nvidia-caps")
"""Hidden even with a grant (profiler and MIG nodes)."""
PRIVATE_DEV_MAX_MINOR = 9
"""Highest /dev/nvidiaN that firejail's --private-dev carries into the jail."""
NO_GPU_ENV = (("CUDA_VISIBLE_DEVICES", ""), ("NVIDIA_VISIBLE_DEVICES", "void"))
"""Env without a grant: "" hides every device from CUDA; "void" is nvidia-container's none."""


@dataclass(frozen=True)
class Grant:
    """The GPUs a session was granted (possibly none) and why none, if require=false."""

    section: GpuSection | None = None
    devices: tuple[Device, ...] = ()
    """Granted devices, in the order given."""
    all_devices: tuple[Device, ...] = ()
    """Every device the backend listed (so the others can be hidden)."""
    warning: str = ""
    """Why a `[gpu]` with require=false got nothing; record it as `session.warning`."""

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(d.index for d in self.devices)


@dataclass(frozen=True)
class Visibility:
    """What the jail builder needs: firejail options, env, and whether to keep private /dev."""

    firejail_args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    private_dev: bool
    """False only when a granted node is out of --private-dev's reach (see module doc)."""
    visible_nodes: tuple[str, ...]
    hidden_nodes: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def device_node(device: Device) -> str:
    return f"/dev/nvidia{device.minor_number}"


def host_device_nodes(pattern: str = "/dev/nvidia*") -> list[str]:
    """The NVIDIA nodes present on this host (impure; feed it to `plan_visibility`)."""
    return sorted(glob.glob(pattern))


def _describe(devices: Sequence[Device]) -> str:
    if not devices:
        return "this host has no GPUs"
    return "this host has " + ", ".join(f"{d.index} ({d.uuid}, {d.name})" for d in devices)


def select_devices(section: GpuSection, devices: Sequence[Device],
                   in_use: Collection[int] = ()) -> tuple[Device, ...]:
    """The devices `section` grants out of `devices`; SetupError when it cannot be met.

    `devices` entries are indices ("0") or UUIDs (case-insensitive). `count` takes the
    first devices not in `in_use` (indices granted to other sessions; a Mapping index ->
    session id names the holders in the error). A [gpu] table
    with neither grants one GPU: writing the table is asking for a GPU.
    """
    if section.devices:
        if section.count and section.count != len(section.devices):
            raise SetupError(f"[gpu] names {len(section.devices)} devices but count = "
                             f"{section.count}: drop count, or make them agree")
        chosen: list[Device] = []
        for want in section.devices:
            key = want.strip()
            found = [d for d in devices
                     if (key.isdigit() and d.index == int(key)) or d.uuid.lower() == key.lower()]
            if not found:
                raise SetupError(f"[gpu] device {want!r} not found: {_describe(devices)}")
            if found[0] not in chosen:
                chosen.append(found[0])
        return tuple(chosen)
    count = section.count or 1
    free = [d for d in devices if d.index not in in_use]
    if len(free) < count:
        if isinstance(in_use, Mapping):  # index -> the session holding it
            held = ", ".join(f"GPU {i} by session {in_use[i]}" for i in sorted(in_use)) or "none"
        else:
            held = str(sorted(in_use) or "none")
        raise SetupError(f"[gpu] count = {count} but only {len(free)} GPU(s) free: "
                         f"{_describe(devices)}; in use by other sessions: {held}; "
                         "wait for one to end, or `sandbox gc` if its owner crashed")
    return tuple(free[:count])


def resolve_grant(section: GpuSection | None,
                  backend: GpuBackend | Callable[[], GpuBackend] | None,
                  in_use: Collection[int] = ()) -> Grant:
    """Resolve a profile's [gpu] against the backend; fail closed when `require`.

    `backend` may be a factory (e.g. `get_backend`) so a profile without [gpu] never
    touches NVML. NVML missing or the devices missing: `require = true` raises SetupError
    (NvmlUnavailable is one) naming the fix; `require = false` gives no grant and a
    `warning` for the session to record.
    """
    if section is None:
        return Grant()
    try:
        if backend is None:
            raise NvmlUnavailable("no GPU backend configured")
        be = backend if isinstance(backend, GpuBackend) else backend()
        devices = tuple(be.devices())
        return Grant(section=section, devices=select_devices(section, devices, in_use),
                     all_devices=devices)
    except SetupError as e:
        if section.require:
            raise type(e)(f"profile [gpu] requires GPUs (require = true): {e}") from e
        return Grant(section=section,
                     warning=f"[gpu] not granted, session runs without GPU: {e}")


def plan_visibility(grant: Grant, present_nodes: Iterable[str] = ()) -> Visibility:
    """Pure: firejail options and env showing exactly the granted GPUs' nodes.

    `present_nodes` are the host's /dev/nvidia* (see `host_device_nodes`); with the
    backend's devices they make the list of nodes to hide, so a device NVML does not
    list (or NVML being absent) still gets hidden.
    """
    known = set(present_nodes) | set(CONTROL_NODES) | set(ALWAYS_HIDDEN)
    known |= {device_node(d) for d in (*grant.all_devices, *grant.devices)}
    if not grant.devices:
        hidden = sorted(known)
        return Visibility(
            firejail_args=("--no3d", *(f"--blacklist={n}" for n in hidden)),
            env=NO_GPU_ENV, private_dev=True, visible_nodes=(), hidden_nodes=tuple(hidden),
        )
    visible = [device_node(d) for d in grant.devices] + list(CONTROL_NODES)
    hidden = sorted((known - set(visible)) | {"/dev/dri"})
    warnings: list[str] = []
    far = [d for d in grant.devices if d.minor_number > PRIVATE_DEV_MAX_MINOR]
    if far:
        warnings.append(
            f"granted {', '.join(device_node(d) for d in far)} is beyond what firejail's "
            "--private-dev carries (nvidia0-9): the jail runs without --private-dev, "
            "with the other NVIDIA nodes blacklisted")
    ids = ",".join(d.uuid for d in grant.devices)
    return Visibility(
        firejail_args=tuple(f"--blacklist={n}" for n in hidden),
        env=(("CUDA_VISIBLE_DEVICES", ids), ("NVIDIA_VISIBLE_DEVICES", ids)),
        private_dev=not far,
        visible_nodes=tuple(sorted(visible)),
        hidden_nodes=tuple(hidden),
        warnings=tuple(warnings),
    )
