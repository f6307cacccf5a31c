"""Ray itself, as `sandbox.ray` uses it: imported on first use, one bundle placed per
sandbox, the GPUs Ray assigned to it.

The lowest floor of the Ray modules (`ray_agent`, `ray_handle` and `ray` all import it);
it knows nothing of sandboxes beyond the slot resource they hold.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import DependencyMissing, SetupError

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

RESOURCE = "sandbox"
NODE_LABEL = "ray.io/node-id"


def ray_module() -> ModuleType:
    """Ray, imported on first use: `import sandbox.ray` works without the [ray] extra."""
    try:
        import ray
        import ray.util.placement_group
        import ray.util.scheduling_strategies
    except ImportError as e:
        raise DependencyMissing(
            f"sandbox.ray needs Ray: pip install 'ringfence[ray]' ({e})") from None
    return ray


def pgs() -> ModuleType:
    """ray.util.placement_group, the module (`ray.util` has a function by that name)."""
    ray_module()
    return importlib.import_module("ray.util.placement_group")


def strategies() -> ModuleType:
    ray_module()
    return importlib.import_module("ray.util.scheduling_strategies")


def bundle(resource: str, cpus: float, gpus: int) -> dict[str, float]:
    """One sandbox's bundle: a slot, and its CPUs and GPUs (zeros left out, so a
    CPU-less or GPU-less node can still hold it)."""
    out = {resource: 1.0}
    if cpus:
        out["CPU"] = float(cpus)
    if gpus:
        out["GPU"] = float(gpus)
    return out


async def place(wanted: dict[str, float], targets: list[str] | None, timeout: float,
                where: str) -> tuple[PlacementGroup, str, list[str]]:
    """Reserve `wanted` as a one-bundle placement group on one of the `targets` node ids
    (None: any node); (group, node id, GPU ids). `where` names the targets in the error
    raised when no slot frees up within `timeout` seconds."""
    selector = None if targets is None else [{NODE_LABEL: targets[0] if len(targets) == 1
                                              else f"in({','.join(targets)})"}]
    pg = pgs().placement_group([wanted], strategy="STRICT_PACK",
                               bundle_label_selector=selector)
    try:
        await asyncio.wait_for(pg.ready(), timeout)
    except BaseException as e:
        pgs().remove_placement_group(pg)
        if isinstance(e, asyncio.TimeoutError):
            raise SetupError(f"no free {wanted} slot on {where} within {timeout:.0f} s "
                             "(release sandboxes, add nodes, or raise placement_timeout)"
                             ) from None
        raise
    table = await asyncio.to_thread(pgs().placement_group_table, pg)
    node_id: str = table["bundles_to_node_id"][0]
    gpus = int(wanted.get("GPU", 0))
    gpu_ids: list[str] = []
    if gpus:
        ids = await _gpu_task().options(
            num_gpus=gpus, num_cpus=0,
            scheduling_strategy=strategies().PlacementGroupSchedulingStrategy(pg, 0),
        ).remote()
        gpu_ids = [str(i) for i in ids]
    return pg, node_id, gpu_ids


def _gpu_ids() -> list[Any]:
    """Run inside a sandbox's bundle: the GPU ids Ray assigned to it."""
    return list(ray_module().get_gpu_ids())


_GPU_TASK: Any = None


def _gpu_task() -> Any:
    global _GPU_TASK
    if _GPU_TASK is None:
        _GPU_TASK = ray_module().remote(num_cpus=0)(_gpu_ids)
    return _GPU_TASK
