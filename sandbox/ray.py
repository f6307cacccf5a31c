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
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import DependencyMissing, SessionClosed, SetupError
from .execute import ExecTimeout
from .pool import WarmPool, pool_key
from .profile import Profile
from .refill import Refill
from .result import CommandResult, ExecResult

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

log = logging.getLogger("sandbox")


def _ray() -> ModuleType:
    """Ray, imported on first use: `import sandbox.ray` works without the [ray] extra."""
    try:
        import ray
        import ray.util.placement_group
        import ray.util.scheduling_strategies
    except ImportError as e:
        raise DependencyMissing(
            f"sandbox.ray needs Ray: pip install 'ringfence[ray]' ({e})") from None
    return ray


def _pgs() -> ModuleType:
    """ray.util.placement_group, the module (`ray.util` has a function by that name)."""
    _ray()
    return importlib.import_module("ray.util.placement_group")


def _strategies() -> ModuleType:
    _ray()
    return importlib.import_module("ray.util.scheduling_strategies")


RESOURCE = "sandbox"
NODE_LABEL = "ray.io/node-id"
# Passed to every agent: where the one store is. Never SANDBOX_HOST_ID (each host's own).
ENV_PREFIX = "SANDBOX_"
ENV_NOT_PASSED = frozenset({"SANDBOX_HOST_ID"})
# `SandboxPool(host_id="{hostname}-{node}")`: the agent makes its own SANDBOX_HOST_ID.
HOST_ID_TEMPLATE = "SANDBOX_RAY_HOST_ID"


def store_env() -> dict[str, str]:
    """The driver's `SANDBOX_*` settings the agents need to write to the same store."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(ENV_PREFIX) and k not in ENV_NOT_PASSED}


# -- the node side ------------------------------------------------------------------------


class HostAgent:
    """One per node: owns that node's sandboxes (started and closed here, as root, by this
    process's supervisor) and runs every call a `RaySandbox` forwards. Async Ray actor."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.node_id = _ray().get_runtime_context().get_node_id()
        template = os.environ.pop(HOST_ID_TEMPLATE, "")
        if template:  # several nodes on one machine (a demo, a test): a host id each
            os.environ["SANDBOX_HOST_ID"] = template.format(
                hostname=os.uname().nodename, node=self.node_id[:8])
        self.pool = WarmPool()
        self.boxes: dict[str, Any] = {}  # id -> AsyncSandbox

    async def info(self) -> dict[str, Any]:
        from .store import Store

        return {"node_id": self.node_id, "pid": os.getpid(), "uid": os.geteuid(),
                "host": os.uname().nodename, "store": Store().key,
                "sandboxes": sorted(self.boxes), "pool": self.pool.stats()}

    async def start(self, profile: Profile | str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Start a sandbox on this node; its id, workspace and owner."""
        sb = await self.pool.acquire(profile, **kwargs)
        self.boxes[sb.id] = sb
        return {"id": sb.id, "workdir": sb.workdir, "node_id": self.node_id,
                "pid": os.getpid(), "profile": sb.profile.name}

    def _box(self, sid: str) -> Any:
        sb = self.boxes.get(sid)
        if sb is None:
            raise SessionClosed(f"sandbox {sid} is not live on node {self.node_id}")
        return sb

    async def exec(self, sid: str, cmd: list[str] | str, kw: dict[str, Any]
                   ) -> tuple[str, str, ExecResult]:
        # ExecTimeout carries its partial result; sent as a value (it does not unpickle).
        try:
            return "ok", "", await self._box(sid).exec(cmd, **kw)
        except ExecTimeout as e:
            return "timeout", str(e), e.result

    async def run(self, sid: str, command: str, timeout: float | None, check: bool
                  ) -> CommandResult:
        return await self._box(sid).run(command, timeout, check=check)  # type: ignore[no-any-return]

    async def call(self, sid: str, method: str, args: tuple[Any, ...], kw: dict[str, Any]
                   ) -> Any:
        """The file operations and is_alive, by name."""
        if method not in _FORWARDED:
            raise ValueError(f"not forwarded: {method}")
        result = getattr(self._box(sid), method)(*args, **kw)
        return await result if asyncio.iscoroutine(result) else result

    async def kill(self, sid: str, reason: str) -> None:
        sb = self.boxes.pop(sid, None)
        if sb is not None:
            await sb.kill(reason)
            await self.pool.release(sb)

    async def close(self, sid: str) -> None:
        sb = self.boxes.pop(sid, None)
        if sb is not None:
            await self.pool.release(sb)

    async def shutdown(self) -> None:
        """Close every sandbox of this node (the driver then ends the actor)."""
        self.boxes.clear()
        await self.pool.close()


_FORWARDED = frozenset({"read_file", "write_file", "upload", "download", "export_tar",
                        "import_tar", "is_alive", "head_hash"})


# -- the driver side ----------------------------------------------------------------------


class RaySandbox:
    """A sandbox on some node of the cluster: the `AsyncSandbox` surface (exec, files, run,
    kill, close), each call forwarded to the node's agent. Host paths (`upload`,
    `download`) are paths on the sandbox's node; `export_tar`/`import_tar` carry bytes."""

    def __init__(self, pool: SandboxPool, agent: Any, node_id: str, info: dict[str, Any],
                 pg: PlacementGroup, resources: dict[str, float]) -> None:
        self._pool = pool
        self._agent = agent
        self._pg: PlacementGroup | None = pg
        self.id: str = info["id"]
        self.node_id = node_id
        self.workdir: str = info["workdir"]
        self.owner_pid: int = info["pid"]
        self.profile_name: str = info["profile"]
        self.resources = resources
        self.state = "running"
        self.reason: str | None = None

    def __repr__(self) -> str:
        return f"RaySandbox({self.id} on {self.node_id[:12]}, {self.state})"

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the agent's `method` for this sandbox, errors as the sandbox raises them."""
        if self.state != "running":
            raise SessionClosed(f"sandbox {self.id} is {self.state}: {self.reason or ''}")
        rx = _ray().exceptions
        try:
            return await getattr(self._agent, method).remote(self.id, *args)
        except rx.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (rx.RayActorError, rx.ActorUnavailableError) as e:
            await self._pool._check_nodes()
            raise SessionClosed(f"sandbox {self.id} on node {self.node_id} is gone: "
                                f"{self.reason or e}") from None

    async def exec(self, cmd: list[str] | str, **kw: Any) -> ExecResult:
        """As `AsyncSandbox.exec` (input, cwd, env, timeout, max_output, user)."""
        kind, msg, result = await self._call("exec", cmd, kw)
        if kind == "timeout":
            raise ExecTimeout(msg, result)
        return result  # type: ignore[no-any-return]

    async def run(self, command: str, timeout: float | None = None, *, check: bool = False
                  ) -> CommandResult:
        return await self._call("run", command, timeout, check)  # type: ignore[no-any-return]

    async def read_file(self, path: str, text: bool = True, **kw: Any) -> str | bytes:
        return await self._fwd("read_file", path, text, **kw)  # type: ignore[no-any-return]

    async def write_file(self, path: str, data: str | bytes) -> None:
        await self._fwd("write_file", path, data)

    async def upload(self, host_path: str | os.PathLike[str], path: str) -> None:
        await self._fwd("upload", os.fspath(host_path), path)

    async def download(self, path: str, host_path: str | os.PathLike[str]) -> None:
        await self._fwd("download", path, os.fspath(host_path))

    async def export_tar(self, path: str = ".") -> bytes:
        return await self._fwd("export_tar", path)  # type: ignore[no-any-return]

    async def import_tar(self, data: bytes, path: str = ".") -> None:
        await self._fwd("import_tar", data, path)

    async def is_alive(self) -> bool:
        if self.state != "running":
            return False
        try:
            return bool(await self._fwd("is_alive"))
        except SessionClosed:
            return False

    async def _fwd(self, method: str, *args: Any, **kw: Any) -> Any:
        return await self._call("call", method, args, kw)

    async def kill(self, reason: str = "killed by API") -> None:
        """End it now (recorded as killed with `reason`) and free its slot."""
        await self._end(lambda: self._agent.kill.remote(self.id, reason), "killed", reason)

    async def close(self) -> None:
        """End it (idempotent) and free its slot."""
        await self._end(lambda: self._agent.close.remote(self.id), "exited", "closed")

    async def _end(self, call: Callable[[], Any], state: str, reason: str) -> None:
        if self.state == "running":
            self.state, self.reason = state, reason
            rx = _ray().exceptions
            with contextlib.suppress(rx.RayActorError, rx.ActorUnavailableError):
                await call()
        self._pool._forget(self)

    def _free_slot(self) -> None:
        if self._pg is not None:
            pg, self._pg = self._pg, None
            with contextlib.suppress(Exception):
                _pgs().remove_placement_group(pg)

    async def __aenter__(self) -> RaySandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class _Agent:
    node_id: str
    handle: Any
    pid: int = 0
    alive: bool = True


class _Warm(Refill["RaySandbox"]):
    """A (profile, cpus, gpus) warm target: placed, started sandboxes nobody has used."""

    def __init__(self, pool: SandboxPool, profile: Profile | str, cpus: float, gpus: int,
                 kwargs: dict[str, Any]) -> None:
        super().__init__(f"{pool_key(profile, kwargs.get('image'))}/cpu={cpus:g}/gpu={gpus}",
                         pool.parallel)
        self.pool, self.profile, self.cpus, self.gpus = pool, profile, cpus, gpus
        self.kwargs = kwargs

    async def produce(self) -> RaySandbox:
        return await self.pool._start_on_cluster(
            self.profile, self.cpus, self.gpus, self.kwargs, None)

    async def discard(self, item: RaySandbox) -> None:
        await item.close()

    def can_fill(self) -> bool:
        return not self.pool._closed and bool(self.pool.nodes())


@dataclass
class NodeLoss:
    """What the pool saw when a node died."""

    node_id: str
    reason: str
    sessions: list[str]
    at: float


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
        if not _ray().is_initialized():
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
        for node in await asyncio.to_thread(_ray().nodes):
            nid = node["NodeID"]
            if not node.get("Alive") or nid in self.agents:
                continue
            if node.get("Resources", {}).get(self.resource, 0) <= 0:
                continue
            if self._only is not None and nid not in self._only:
                continue
            handle = _agent_class().options(
                num_cpus=0, max_concurrency=1000, max_restarts=0,
                scheduling_strategy=_strategies().NodeAffinitySchedulingStrategy(
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
            table = await asyncio.to_thread(_ray().nodes)
            dead = {n["NodeID"]: n for n in table if not n.get("Alive")}
            for nid, agent in list(self.agents.items()):
                if agent.alive and nid in dead:
                    await self._node_lost(nid, _death_reason(nid, dead[nid]))
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
        await asyncio.to_thread(_fail_sessions, ids, reason)
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
            raise SetupError(f"no live sandbox node {node} in the pool")
        bundle = {self.resource: 1.0}
        if cpus:
            bundle["CPU"] = float(cpus)
        if gpus:
            bundle["GPU"] = float(gpus)
        targets = [node] if node is not None else (
            sorted(self._only) if self._only is not None else None)
        selector = None if targets is None else [{NODE_LABEL: targets[0] if len(targets) == 1
                                                  else f"in({','.join(targets)})"}]
        pg = _pgs().placement_group(
            [bundle], strategy="STRICT_PACK", bundle_label_selector=selector)
        try:
            await asyncio.wait_for(pg.ready(), self.placement_timeout)
        except BaseException as e:
            _pgs().remove_placement_group(pg)
            if isinstance(e, asyncio.TimeoutError):
                raise SetupError(
                    f"no free {bundle} slot on {'node ' + node if node else 'any node'} "
                    f"within {self.placement_timeout:.0f} s") from None
            raise
        table = await asyncio.to_thread(_pgs().placement_group_table, pg)
        node_id: str = table["bundles_to_node_id"][0]
        gpu_ids: list[str] = []
        if gpus:
            ids = await _gpu_task().options(
                num_gpus=gpus, num_cpus=0,
                scheduling_strategy=_strategies().PlacementGroupSchedulingStrategy(
                    pg, 0),
            ).remote()
            gpu_ids = [str(i) for i in ids]
        return pg, node_id, gpu_ids

    async def _start_on_cluster(self, profile: Profile | str, cpus: float, gpus: int,
                                kwargs: dict[str, Any], node: str | None) -> RaySandbox:
        if gpus and "gpu" in kwargs:
            raise ValueError("gpus= sets the GPU grant (Ray's devices); do not pass gpu= too")
        pg, node_id, gpu_ids = await self._place(cpus, gpus, node)
        try:
            agent = self.agents.get(node_id)
            if agent is None:  # a node that joined since the last look: adopt it now
                await self._check_nodes()
                agent = self.agents.get(node_id)
            if agent is None:
                raise SessionClosed(f"node {node_id} has no live agent")
            kw = dict(kwargs)
            if gpus:
                kw["gpu"] = {"devices": gpu_ids}
            info = await agent.handle.start.remote(profile, kw)
        except BaseException:
            _pgs().remove_placement_group(pg)
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
        if "workdir" in sandbox_kwargs:
            raise ValueError("a pooled sandbox always gets a fresh workspace")
        key = (pool_key(profile, sandbox_kwargs.get("image")), float(cpus), int(gpus))
        w = self._warm.get(key)
        if w is None:
            w = self._warm[key] = _Warm(self, profile, float(cpus), int(gpus),
                                        dict(sandbox_kwargs))
        else:
            w.profile, w.kwargs = profile, dict(sandbox_kwargs)
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
        if "workdir" in sandbox_kwargs:
            raise ValueError("a pooled sandbox always gets a fresh workspace")
        key = (pool_key(profile, sandbox_kwargs.get("image")), float(cpus), int(gpus))
        w = self._warm.get(key)
        if w is not None and (not sandbox_kwargs or sandbox_kwargs == w.kwargs):
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
            kwargs = sandbox_kwargs or w.kwargs
        else:
            kwargs = sandbox_kwargs
        return await self._start_on_cluster(profile, cpus, gpus, kwargs, node)

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
                _ray().kill(a.handle)
        self.agents.clear()

    async def __aenter__(self) -> SandboxPool:
        return self if self._monitor is not None else await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_AGENT: Any = None


def _agent_class() -> Any:
    """`HostAgent` as a Ray actor class (made once per process)."""
    global _AGENT
    if _AGENT is None:
        _AGENT = _ray().remote(HostAgent)
    return _AGENT


def _gpu_ids() -> list[Any]:
    """Run inside a sandbox's bundle: the GPU ids Ray assigned to it."""
    return list(_ray().get_gpu_ids())


_GPU_TASK: Any = None


def _gpu_task() -> Any:
    global _GPU_TASK
    if _GPU_TASK is None:
        _GPU_TASK = _ray().remote(num_cpus=0)(_gpu_ids)
    return _GPU_TASK


def _death_reason(node_id: str, node: dict[str, Any]) -> str:
    why = node.get("DeathReasonMessage") or node.get("DeathReason") or "no reason given"
    return f"Ray node {node_id} died ({why}): its host agent and sandboxes are gone"


def _fail_sessions(ids: list[str], reason: str) -> None:
    """The node's supervisor is gone: mark its live sessions failed with the reason, and
    where the store says they ran on this host, remove what they left (as gc would)."""
    from . import owners, reap
    from .store import Store

    store = Store()
    for sid in ids:
        try:
            session = store.get_session(sid)
        except Exception as e:
            log.warning("sandbox: session %s of a lost node: %s", sid, e)
            continue
        if store.finish_session(sid, "failed", reason):
            with contextlib.suppress(Exception):
                store.add_event(sid, "session.end", {"state": "failed", "reason": reason},
                                severity="warning")
        if store.elsewhere(session):
            continue  # another host's jail: that host's gc removes it
        deadline = time.monotonic() + 10
        while (owners.alive(session["owner_pid"], session["owner_start"])
               and time.monotonic() < deadline):
            time.sleep(0.1)
        if owners.alive(session["owner_pid"], session["owner_start"]):
            continue  # the owner lives on (a partition): it or gc will clean up
        reap.reap(store, session, state="failed", reason=reason)
        res = dict(session.get("resources") or {})
        if res:
            store.update_session(sid, resources={**res, "released": True})
