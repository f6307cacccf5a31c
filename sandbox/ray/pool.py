"""Ray placement: sandboxes across the nodes of a Ray cluster, one host agent per node.

    import ray
    from sandbox.ray import SandboxPool

    ray.init(address="auto")                      # nodes started with --resources '{"sandbox": 8}'
    pool = await SandboxPool().start()            # one HostAgent per node with `sandbox` slots
    pool.warm(8, profile="default")               # placed and started ahead of need
    sb = await pool.acquire(profile="default", cpus=1, gpus=0)
    r = await sb.exec(["pytest", "-q"])           # runs on sb.node_id, recorded in the store
    await pool.release(sb)                        # destroyed, its slot freed
    await pool.close()

Placement is Ray's: each sandbox holds a one-bundle placement group of
`{"sandbox": 1, "CPU": cpus, "GPU": gpus}` (zeros left out), so the cluster's other work
sees what sandboxes hold, and a sandbox waits for a free slot like any Ray task. The bundle
lands on a node with a host agent (a label selector on the node id); that node's
`HostAgent` (an async actor, `num_cpus=0`, pinned to the node) starts the sandbox with its
own supervisor, as root on the node, and owns it from then on. With `gpus=N`, the GPU grant
is the devices Ray assigned to the bundle (`gpu={"devices": [...]}`).

Every sandbox is recorded in one store: the driver passes `SANDBOX_*` (the store's
`SANDBOX_STORE` URL, or `SANDBOX_STATE_DIR` / `SANDBOX_DB` when all nodes share a
machine) to the agents through `runtime_env`, never `SANDBOX_HOST_ID` (each host its own).

A node that dies (Ray's GCS says so) takes its agent and sandboxes with it: the pool marks
each of that node's live sessions failed in the store with the reason (the node's own
supervisor is gone), fails their handles with that reason, frees their placement groups,
reports the loss (`lost_nodes`, `on_node_lost`), starts agents on nodes that join, and
refills its warm targets on the nodes left. On the driver's own host it also removes what
the sessions left (jails, cgroups, workspaces), as `sandbox gc` would.

Warm pools (`pool.warm(n, profile=..., cpus=..., gpus=...)`) keep n sandboxes placed and
started per (profile, cpus, gpus); acquiring one is a pop from the driver's queue, no
round trip. Each is used once: `release` destroys it and a replacement starts.

This module is the pool (placement, warm targets, node-loss watching); the rest lives
below it, each importable without Ray: `ray_agent` (the node side, `HostAgent`),
`ray_handle` (the driver side of one sandbox, `RaySandbox`), `ray_cluster` (Ray itself:
lazy import, bundles, placement) and `ray_loss` (`NodeLoss`, the store side of a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..doors.options import SandboxSpec
from ..doors.pool import check_options, pool_key
from ..doors.refill import Refill
from ..errors import SessionClosed, SetupError
from ..jail.profile import Profile
from .agent import HOST_ID_TEMPLATE, HostAgent, agent_class, store_env
from .cluster import RESOURCE, bundle, pgs, place, ray_module, strategies
from .handle import RaySandbox
from .loss import NodeLoss, death_reason, fail_sessions

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

__all__ = ["HostAgent", "NodeLoss", "RaySandbox", "SandboxPool"]

log = logging.getLogger("sandbox")


@dataclass
class _Agent:
    node_id: str
    handle: Any
    pid: int = 0
    alive: bool = True


class _Warm(Refill[RaySandbox]):
    """A (profile, cpus, gpus) warm target: placed, started sandboxes nobody has used."""

    def __init__(self, pool: SandboxPool, profile: Profile | str, cpus: float, gpus: int,
                 spec: SandboxSpec) -> None:
        super().__init__(f"{pool_key(profile, spec.get('image'))}/cpu={cpus:g}/gpu={gpus}",
                         pool.parallel)
        self.pool, self.profile, self.cpus, self.gpus = pool, profile, cpus, gpus
        self.spec = spec

    async def produce(self) -> RaySandbox:
        return await self.pool._start_on_cluster(
            self.profile, self.cpus, self.gpus, self.spec, None)

    async def discard(self, item: RaySandbox) -> None:
        await item.close()

    def can_fill(self) -> bool:
        return not self.pool._closed and bool(self.pool.nodes())


class SandboxPool:
    """Sandboxes across a Ray cluster; see the module docstring.

    `resource`: the custom slot resource nodes offer (`sandbox`); `env`: extra environment
    for the agents (on top of the driver's `SANDBOX_*`); `placement_timeout`: how long an
    acquire waits for a free slot before it raises; `monitor_interval`: how often node
    liveness is read from Ray; `on_node_lost`: called with each `NodeLoss`; `host_id`:
    each agent's host id in the store, a template of `{hostname}` and `{node}` (default:
    the node's hostname; several nodes on one machine need `"{hostname}-{node}"`).
    """

    def __init__(self, *, resource: str = RESOURCE, env: dict[str, str] | None = None,
                 placement_timeout: float = 60.0, monitor_interval: float = 0.5,
                 parallel: int = 2, on_node_lost: Callable[[NodeLoss], Any] | None = None,
                 host_id: str | None = None) -> None:
        self.resource = resource
        self.env = {**store_env(), **(env or {})}
        if host_id:  # "{hostname}" and "{node}" (the node id's first 8 characters)
            self.env[HOST_ID_TEMPLATE] = host_id
        self.placement_timeout = placement_timeout
        self.monitor_interval = monitor_interval
        self.parallel = max(1, parallel)
        self.on_node_lost = on_node_lost
        self.agents: dict[str, _Agent] = {}
        self.lost_nodes: list[NodeLoss] = []
        self._only: set[str] | None = None
        self._live: dict[str, RaySandbox] = {}  # started here, not yet closed (warm included)
        self._warm: dict[tuple[str, float, int], _Warm] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._checking: asyncio.Lock | None = None
        self._closed = False

    # -- start / nodes --------------------------------------------------------------------

    async def start(self, nodes: list[str] | None = None) -> SandboxPool:
        """Start one agent per node that offers the slot resource (or only on `nodes`, by
        Ray node id) and begin watching node liveness. Ray must be initialised."""
        if not ray_module().is_initialized():
            raise SetupError("ray is not initialised: call ray.init(address=...) first")
        self._only = set(nodes) if nodes is not None else None
        self._checking = asyncio.Lock()
        await self._adopt_nodes()
        if not self.agents:
            raise SetupError(f"no live Ray node offers the {self.resource!r} resource"
                             + (f" among {sorted(self._only)}" if self._only else ""))
        self._monitor = asyncio.get_running_loop().create_task(
            self._watch(), name="sandbox-ray-monitor")
        return self

    async def _adopt_nodes(self) -> list[str]:
        """Agents for live slot nodes that have none; returns their node ids."""
        new = []
        for node in await asyncio.to_thread(ray_module().nodes):
            nid = node["NodeID"]
            if not node.get("Alive") or nid in self.agents:
                continue
            if node.get("Resources", {}).get(self.resource, 0) <= 0:
                continue
            if self._only is not None and nid not in self._only:
                continue
            handle = agent_class().options(
                num_cpus=0, max_concurrency=1000, max_restarts=0,
                scheduling_strategy=strategies().NodeAffinitySchedulingStrategy(
                    nid, soft=False),
                runtime_env={"env_vars": dict(self.env)},
            ).remote(self.env)
            self.agents[nid] = _Agent(nid, handle)
            new.append(nid)
        infos = await asyncio.gather(*(self.agents[n].handle.info.remote() for n in new),
                                     return_exceptions=True)
        for nid, info in zip(new, infos, strict=True):
            if isinstance(info, BaseException):
                log.warning("sandbox: agent on node %s did not start: %s", nid, info)
                self.agents.pop(nid, None)
                continue
            if info["node_id"] != nid:  # cannot happen with a hard affinity
                raise SetupError(f"agent for node {nid} runs on {info['node_id']}")
            self.agents[nid].pid = info["pid"]
        return new

    def nodes(self) -> list[str]:
        """Node ids with a live agent."""
        return [n for n, a in self.agents.items() if a.alive]

    async def agent_info(self, node_id: str) -> dict[str, Any]:
        return await self.agents[node_id].handle.info.remote()  # type: ignore[no-any-return]

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.monitor_interval)
            try:
                await self._check_nodes()
            except Exception as e:  # the monitor must outlive a GCS hiccup
                log.warning("sandbox: node check failed: %s", e)

    async def _check_nodes(self) -> None:
        """Read node liveness from Ray: handle dead nodes, adopt new ones."""
        if self._checking is None or self._closed:
            return
        async with self._checking:
            table = await asyncio.to_thread(ray_module().nodes)
            dead = {n["NodeID"]: n for n in table if not n.get("Alive")}
            for nid, agent in list(self.agents.items()):
                if agent.alive and nid in dead:
                    await self._node_lost(nid, death_reason(nid, dead[nid]))
            if await self._adopt_nodes():
                self._kick_all()

    async def _node_lost(self, node_id: str, reason: str) -> None:
        agent = self.agents.pop(node_id)
        agent.alive = False
        lost = [sb for sb in self._live.values() if sb.node_id == node_id]
        ids = [sb.id for sb in lost]
        for sb in lost:
            sb.state, sb.reason = "failed", reason
            self._forget(sb)
            for w in self._warm.values():
                with contextlib.suppress(ValueError):
                    w.ready.remove(sb)
        await asyncio.to_thread(fail_sessions, ids, reason)
        loss = NodeLoss(node_id, reason, ids, time.time())
        self.lost_nodes.append(loss)
        log.warning("sandbox: %s; sessions failed: %s", reason, ", ".join(ids) or "none")
        if self.on_node_lost is not None:
            try:
                self.on_node_lost(loss)
            except Exception as e:
                log.warning("sandbox: on_node_lost callback: %s", e)
        self._kick_all()  # the warm targets refill on the nodes left (and any new ones)

    # -- placement ------------------------------------------------------------------------

    async def _place(self, cpus: float, gpus: int, node: str | None
                     ) -> tuple[PlacementGroup, str, list[str]]:
        """Reserve one bundle on a slot node; (group, node id, GPU ids). Any node with
        the slot resource, one that joins while this waits included (its agent starts
        then), unless the pool was limited to `nodes` or `node` pins it."""
        if node is not None and node not in self.agents:
            raise SetupError(f"no live sandbox node {node} in the pool "
                             f"(pool.nodes() lists them)")
        targets = [node] if node is not None else (
            sorted(self._only) if self._only is not None else None)
        return await place(bundle(self.resource, cpus, gpus), targets,
                           self.placement_timeout, f"node {node}" if node else "any node")

    async def _start_on_cluster(self, profile: Profile | str, cpus: float, gpus: int,
                                spec: SandboxSpec, node: str | None) -> RaySandbox:
        if gpus and "gpu" in spec:
            raise ValueError("gpus= sets the GPU grant (Ray's devices); do not pass gpu= too")
        pg, node_id, gpu_ids = await self._place(cpus, gpus, node)
        try:
            agent = self.agents.get(node_id)
            if agent is None:  # a node that joined since the last look: adopt it now
                await self._check_nodes()
                agent = self.agents.get(node_id)
            if agent is None:
                raise SessionClosed(f"node {node_id} has no live agent")
            kw = spec.copy()
            if gpus:
                kw["gpu"] = {"devices": gpu_ids}
            info = await agent.handle.start.remote(profile, kw)
        except BaseException:
            pgs().remove_placement_group(pg)
            raise
        res = {self.resource: 1.0, "CPU": float(cpus), "GPU": float(gpus)}
        sb = RaySandbox(self, agent.handle, node_id, info, pg, res)
        self._live[sb.id] = sb
        if self._closed or not agent.alive:
            await sb.close()
            raise SessionClosed(f"sandbox {sb.id}: the pool closed or node {node_id} died "
                                "while it started")
        return sb

    # -- acquire / warm -------------------------------------------------------------------

    def warm(self, n: int, profile: Profile | str = "default", *, cpus: float = 1,
             gpus: int = 0, **sandbox_kwargs: Any) -> None:
        """Keep n sandboxes of (profile, cpus, gpus) placed, started and unused."""
        if n < 0:
            raise ValueError("n must be >= 0")
        spec = check_options(sandbox_kwargs)
        key = (pool_key(profile, spec.get("image")), float(cpus), int(gpus))
        w = self._warm.get(key)
        if w is None:
            w = self._warm[key] = _Warm(self, profile, float(cpus), int(gpus), spec)
        else:
            w.profile, w.spec = profile, spec
        w.target = n
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            self._kick(w)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every warm target is met."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        try:
            await asyncio.wait_for(asyncio.gather(*(w.until_ready() for w in self._warm.values())),
                                   timeout)
        except TimeoutError:
            raise TimeoutError(f"warm targets not met in {timeout} s: "
                               f"{self.stats()['warm']}") from None

    async def acquire(self, profile: Profile | str = "default", *, gpus: int = 0,
                      cpus: float = 1, node: str | None = None, **sandbox_kwargs: Any
                      ) -> RaySandbox:
        """A started sandbox holding {sandbox: 1, CPU: cpus, GPU: gpus}: a warm one when
        ready (one liveness round trip to its agent), else placed and started now
        (counted as cold). `node` pins it
        to one node (never from the warm queue unless it sits there)."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        spec = check_options(sandbox_kwargs)
        key = (pool_key(profile, spec.get("image")), float(cpus), int(gpus))
        w = self._warm.get(key)
        if w is not None and (not spec or spec == w.spec):
            for sb in list(w.ready):
                if node is not None and sb.node_id != node:
                    continue
                with contextlib.suppress(ValueError):
                    w.ready.remove(sb)
                # One round trip to its agent: a sandbox that died while it waited (a
                # kill, a limit) is never handed out.
                if sb.state == "running" and await sb.is_alive():
                    w.warm_hits += 1
                    self._kick(w)
                    return sb
                w.dead_skipped += 1
                await sb.close()
            w.cold_starts += 1
            self._kick(w)
            spec = spec or w.spec
        return await self._start_on_cluster(profile, cpus, gpus, spec, node)

    async def release(self, sb: RaySandbox) -> None:
        """Destroy it (never reused) and free its slot."""
        await sb.close()

    def _kick_all(self) -> None:
        for w in self._warm.values():
            self._kick(w)

    def _kick(self, w: _Warm) -> None:
        if not self._closed:
            w.kick()

    # -- bookkeeping ----------------------------------------------------------------------

    def _forget(self, sb: RaySandbox) -> None:
        self._live.pop(sb.id, None)
        sb._free_slot()

    def sandboxes(self, node: str | None = None) -> list[RaySandbox]:
        """Live sandboxes this pool started (warm ones included), optionally on one node."""
        return [sb for sb in self._live.values() if node is None or sb.node_id == node]

    def stats(self) -> dict[str, Any]:
        per_node: dict[str, int] = {n: 0 for n in self.nodes()}
        for sb in self._live.values():
            per_node[sb.node_id] = per_node.get(sb.node_id, 0) + 1
        return {
            "nodes": per_node,
            "lost_nodes": [{"node_id": x.node_id, "reason": x.reason, "sessions": x.sessions}
                           for x in self.lost_nodes],
            "warm": {w.name: w.counters() for w in self._warm.values()},
            "live": len(self._live),
        }

    async def close(self) -> None:
        """Stop refilling and watching, close every sandbox, end the agents."""
        if self._closed:
            return
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        # the warm ones are in _live too: closed with the rest
        await asyncio.gather(*(w.stop() for w in self._warm.values()), return_exceptions=True)
        await asyncio.gather(*(sb.close() for sb in list(self._live.values())),
                             return_exceptions=True)
        agents = [a for a in self.agents.values() if a.alive]
        await asyncio.gather(*(a.handle.shutdown.remote() for a in agents),
                             return_exceptions=True)
        for a in agents:
            with contextlib.suppress(Exception):
                ray_module().kill(a.handle)
        self.agents.clear()

    async def __aenter__(self) -> SandboxPool:
        return self if self._monitor is not None else await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
