"""Ray placement on a real multi-node Ray cluster on this machine (`ray.cluster_utils`).

A head node with no slots (the driver's), and worker nodes offering the custom `sandbox`
resource; everything on loopback (node ip 127.0.0.1). Sandboxes are placed by Ray on
each node, owned there by that node's `HostAgent` actor (its own process, root, its own
supervisor), and recorded in the one store the driver reads. Each test's Ray processes
are shut down in a finalizer, and the module checks that no raylet of ours is left.
"""

from __future__ import annotations

import asyncio
import os
import shutil

# Before Ray is imported: on a host with a routable address Ray would rewrite 127.0.0.1 to
# it when connecting; this keeps the cluster on loopback (read once, at import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # the suite tests the [ray] extra: a missing Ray is a failure, not a skip
    pytest.fail("Ray is not installed: .venv/bin/pip install 'ringfence[ray]'", pytrace=False)

from sandbox import SessionClosed, Store
from sandbox.ray import SandboxPool
from tests.helpers import gone

LOOPBACK = {"node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": 80 << 20}
# Fast node-death detection (GCS health checks), still tolerant of a busy 2-core host.
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                 "health_check_timeout_ms": 2000, "health_check_failure_threshold": 3}


def _raylets() -> set[int]:
    out = set()
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].endswith("/raylet"):
            out.add(p.info["pid"])
    return out


@pytest.fixture(scope="module", autouse=True)
def no_ray_left() -> Iterator[None]:
    before = _raylets()
    yield
    deadline = time.monotonic() + 15
    while _raylets() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _raylets() - before, "raylet processes left behind"




class RayCluster:
    """A head node (no slots) and slot nodes; the driver connected to the head."""

    def __init__(self) -> None:
        self.cluster = Cluster(initialize_head=True, head_node_args={
            **LOOPBACK, "num_cpus": 0, "_system_config": SYSTEM_CONFIG})
        self.nodes: list[Any] = []

    def add(self, slots: int = 2, cpus: int = 1) -> str:
        node = self.cluster.add_node(**LOOPBACK, num_cpus=cpus, resources={"sandbox": slots})
        self.nodes.append(node)
        return str(node.node_id)

    def connect(self) -> None:
        # Every added node registered with the head first: the pool adopts the nodes
        # alive when it starts (a loaded host once had only one of two by then).
        self.cluster.wait_for_nodes(timeout=60)
        ray.init(address=self.cluster.address, include_dashboard=False,
                 log_to_driver=False)

    def remove(self, node_id: str, graceful: bool = True) -> None:
        node = next(n for n in self.nodes if n.node_id == node_id)
        self.nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=graceful)

    def shutdown(self) -> None:
        head = self.cluster.head_node
        session_dir = head.get_session_dir_path() if head is not None else None
        try:
            ray.shutdown()
        finally:
            self.cluster.shutdown()
            if self.cluster.head_node is not None:
                self.cluster.remove_node(self.cluster.head_node)
            if session_dir:  # the run's Ray logs and sockets
                shutil.rmtree(session_dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[RayCluster]:
    rc = RayCluster()
    try:
        yield rc
    finally:
        rc.shutdown()


def run(coro: Any, timeout: float = 240) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_sandboxes_placed_on_each_node_by_slots_and_recorded_in_one_store(
        cluster: RayCluster) -> None:
    a, b = cluster.add(slots=2), cluster.add(slots=2)
    cluster.connect()

    async def main() -> None:
        pool = SandboxPool(placement_timeout=5)
        try:
            await pool.start()
            assert sorted(pool.nodes()) == sorted([a, b])
            infos = {n: await pool.agent_info(n) for n in (a, b)}
            assert infos[a]["pid"] != infos[b]["pid"] and infos[a]["uid"] == 0
            # 4 slots in all: Ray must put two on each node, whatever order it picks.
            boxes = await asyncio.gather(*(pool.acquire(cpus=0.25) for _ in range(4)))
            by_node = {n: [sb for sb in boxes if sb.node_id == n] for n in (a, b)}
            assert len(by_node[a]) == 2 and len(by_node[b]) == 2, by_node
            # The slots are really held: a fifth waits, and gives up after the timeout.
            with pytest.raises(Exception, match="no free"):
                await pool.acquire(cpus=0.25)
            store = Store()
            for node, sbs in by_node.items():
                for sb in sbs:
                    r = await sb.exec(["sh", "-c", "id -u; echo $$"])
                    assert r.returncode == 0 and r.stdout.split()[0] != "0", r
                    row = store.get_session(sb.id)
                    # Owned by that node's agent process; running; the exec recorded.
                    assert row["owner_pid"] == infos[node]["pid"] == sb.owner_pid
                    assert row["state"] == "running"
                    assert store.commands(sb.id)[-1]["source"] == "exec"
            # Files and the persistent shell through the handle.
            sb = by_node[b][0]
            await sb.write_file("notes/a.txt", "from the driver")
            assert await sb.read_file("notes/a.txt") == "from the driver"
            assert (await sb.run("cd notes && cat a.txt")).output.strip() == "from the driver"
            with pytest.raises(FileNotFoundError):
                await sb.read_file("no-such-file")
            from sandbox import ExecTimeout

            with pytest.raises(ExecTimeout) as info:
                await sb.exec("echo partial; sleep 30", timeout=1)
            assert info.value.result.stdout == "partial\n"
            # Close frees the slot: a new acquire on that node now fits.
            await pool.release(sb)
            assert store.get_session(sb.id)["state"] == "exited"
            assert not Path(sb.workdir).exists()
            with pytest.raises(SessionClosed):
                await sb.exec(["true"])
            again = await pool.acquire(cpus=0.25, node=b)
            assert again.node_id == b
            await by_node[a][0].kill("enough")
            assert store.get_session(by_node[a][0].id)["state"] == "killed"
        finally:
            await pool.close()
        assert not Store().list_sessions(live_only=True)

    run(main())


def test_warm_pool_on_the_cluster(cluster: RayCluster) -> None:
    cluster.add(slots=3)
    cluster.add(slots=3)
    cluster.connect()

    async def main() -> None:
        pool = SandboxPool()
        try:
            await pool.start()
            pool.warm(2, profile="default", cpus=0.25)
            await pool.wait_ready(timeout=120)
            seen = set()
            took = []
            for _ in range(5):
                t0 = time.perf_counter()
                sb = await pool.acquire(profile="default", cpus=0.25)
                took.append(time.perf_counter() - t0)
                assert sb.id not in seen
                seen.add(sb.id)
                assert "episode" not in (await sb.exec("cat mark 2>&1; true")).stdout
                await sb.write_file("mark", "episode")
                await pool.release(sb)
                await pool.wait_ready(timeout=120)
            # A queue pop and one liveness round trip to the agent, not a start.
            assert sorted(took)[2] < 0.05, took
            st = pool.stats()["warm"]["default/cpu=0.25/gpu=0"]
            assert st["warm_hits"] == 5 and st["cold_starts"] == 0 and st["ready"] == 2
            # A warm sandbox killed while it waits (here through the store) is skipped.
            victim = pool._warm[("default", 0.25, 0)].ready[0]
            Store().request_kill(victim.id, "operator")
            await wait_for(lambda: Store().get_session(victim.id)["state"] == "killed", 30,
                           "the kill")
            sb = await pool.acquire(profile="default", cpus=0.25)
            assert sb.id != victim.id and (await sb.exec(["true"])).returncode == 0
            seen.add(sb.id)
            assert pool.stats()["warm"]["default/cpu=0.25/gpu=0"]["dead_skipped"] == 1
        finally:
            await pool.close()
        states = {Store().get_session(s)["state"] for s in seen}
        assert states == {"exited"}
        print(f"ray warm acquire: median {sorted(took)[2] * 1000:.2f} ms of {len(took)}")

    run(main())


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "sigkill"])
def test_a_dead_node_fails_its_sessions_and_the_pool_replaces_capacity(
        cluster: RayCluster, graceful: bool) -> None:
    """sigterm: the raylet goes down and tells the GCS; sigkill: every process of the node
    is killed at once and the GCS finds out by its health checks."""
    a, b = cluster.add(slots=2), cluster.add(slots=2)
    cluster.connect()
    losses: list[Any] = []

    async def main() -> None:
        pool = SandboxPool(on_node_lost=losses.append)
        try:
            await pool.start()
            on_a = await pool.acquire(cpus=0.25, node=a)
            on_b = await pool.acquire(cpus=0.25, node=b)
            pool.warm(2, cpus=0.25)  # one slot left per node: one warm on each
            await pool.wait_ready(timeout=120)
            warm_b = [sb for sb in pool.sandboxes(b) if sb is not on_b]
            assert len(warm_b) == 1
            doomed = {on_b.id, warm_b[0].id}
            owner_b = on_b.owner_pid

            await asyncio.to_thread(cluster.remove, b, graceful)
            await wait_for(lambda: losses, 60, "the pool to see node b die")
            loss = losses[0]
            assert loss.node_id == b and set(loss.sessions) == doomed
            store = Store()
            for sid in doomed:
                row = store.get_session(sid)
                assert row["state"] == "failed", row
                assert b in row["reason"] and "died" in row["reason"], row["reason"]
            assert gone(owner_b)  # the agent process died with its node
            with pytest.raises(SessionClosed, match="died"):
                await on_b.exec(["true"])
            # The node a sandboxes carry on.
            assert (await on_a.exec(["echo", "still"])).stdout == "still\n"
            assert store.get_session(on_a.id)["state"] == "running"
            assert pool.nodes() == [a]
            assert pool.stats()["lost_nodes"][0]["sessions"]

            # New capacity joins: the pool starts an agent there and refills warm to 2.
            c = cluster.add(2)  # Ray starts node processes from the main thread only
            await wait_for(lambda: c in pool.nodes(), 60, "an agent on the new node")
            await pool.wait_ready(timeout=120)
            ready = [sb for sb in pool.sandboxes() if sb is not on_a]
            assert {sb.node_id for sb in ready} <= {a, c} and c in {sb.node_id for sb in ready}
            fresh = await pool.acquire(cpus=0.25)
            assert (await fresh.exec(["true"])).returncode == 0
        finally:
            await pool.close()

    run(main(), timeout=300)
    # The lost sessions' host resources (workspaces, cgroups) were removed on this host;
    # the module's leftover check covers the rest.
    for sid in losses[0].sessions:
        ws = Store().get_session(sid)["workdir"]
        assert not Path(ws).exists(), ws


def test_one_postgresql_store_for_every_node(cluster: RayCluster, store_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """SANDBOX_STORE reaches the agents: both nodes' sessions, commands and a kill sent
    through the store live in the one PostgreSQL database."""
    monkeypatch.setenv("SANDBOX_STORE", store_url)
    a, b = cluster.add(slots=1), cluster.add(slots=1)
    cluster.connect()

    async def main() -> None:
        pool = SandboxPool()
        try:
            await pool.start()
            boxes = [await pool.acquire(cpus=0.25, node=n) for n in (a, b)]
            store = Store(store_url)
            assert store.key == Store().key  # the driver's Store() is the same database
            for sb in boxes:
                await sb.exec(["echo", f"on {sb.node_id[:8]}"])
                row = store.get_session(sb.id)
                assert row["state"] == "running" and row["owner_pid"] == sb.owner_pid
                assert store.commands(sb.id)[-1]["output"].startswith("on ")
            # An operator's kill through the store reaches the node that owns the sandbox.
            store.request_kill(boxes[1].id, "operator")
            await wait_for(lambda: store.get_session(boxes[1].id)["state"] == "killed", 30,
                           "the kill to reach the node")
            assert not await boxes[1].is_alive()
        finally:
            await pool.close()
        local = {s["id"] for s in Store(Path(os.environ["SANDBOX_STATE_DIR"]) / "sandbox.db")
                 .list_sessions()}
        assert not local & {sb.id for sb in boxes}  # nothing went to a node-local file

    run(main())


def test_gpus_are_placed_by_ray_and_granted_as_ray_assigned(
        cluster: RayCluster, test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node with 2 (declared) GPUs, the fake NVML on the agents: each `gpus=1` sandbox
    is granted the device Ray gave its bundle; a third waits for a GPU and times out."""
    import json

    scenario = test_dir / "fake-nvml.json"
    scenario.write_text(json.dumps({"devices": 2}))
    monkeypatch.setenv("SANDBOX_FAKE_NVML", str(scenario))
    g = cluster.add(slots=4, cpus=1)  # no GPUs here
    gnode = cluster.cluster.add_node(**LOOPBACK, num_cpus=1, num_gpus=2,
                                     resources={"sandbox": 4})
    cluster.nodes.append(gnode)
    cluster.connect()

    async def main() -> None:
        pool = SandboxPool(placement_timeout=5)
        try:
            await pool.start()
            one = await pool.acquire(gpus=1, cpus=0.25)
            two = await pool.acquire(gpus=1, cpus=0.25)
            assert one.node_id == two.node_id == gnode.node_id != g
            seen = []
            for sb in (one, two):
                r = await sb.exec("echo $CUDA_VISIBLE_DEVICES")
                seen.append(r.stdout.strip())
            assert len(set(seen)) == 2 and all(s.startswith("GPU-fake-") for s in seen), seen
            with pytest.raises(Exception, match="no free"):
                await pool.acquire(gpus=1, cpus=0.25)
            plain = await pool.acquire(cpus=0.25)
            assert (await plain.exec("echo [$CUDA_VISIBLE_DEVICES]")).stdout.strip() == "[]"
            await pool.release(one)  # its GPU is free again
            three = await pool.acquire(gpus=1, cpus=0.25)
            r = await three.exec("echo $CUDA_VISIBLE_DEVICES")
            assert r.stdout.strip() == seen[0]
        finally:
            await pool.close()

    run(main())


def test_sandboxes_in_a_task_image_are_placed_and_warmed_per_image(
        cluster: RayCluster, images: Any, state_dir: Path) -> None:
    """Ray placement with an image: the node's agent starts the sandbox in the stored image
    (its Env, its own /etc, a workspace inside it), warm sandboxes are kept per image and
    never handed to a request for another root, and release removes the upper layer."""
    node = cluster.add(slots=3)
    cluster.connect()

    async def main() -> None:
        pool = SandboxPool(placement_timeout=5)
        try:
            await pool.start()
            pool.warm(1, profile="default", cpus=0.25, image="deb")
            await pool.wait_ready(timeout=120)
            key = "default@deb/cpu=0.25/gpu=0"
            assert pool.stats()["warm"][key]["ready"] == 1
            sb = await pool.acquire(profile="default", cpus=0.25, image="deb")
            assert sb.node_id == node and pool.stats()["warm"][key]["warm_hits"] == 1
            r = await sb.exec(["sh", "-c", "echo $IMAGE_VAR; id -u; command -v python3"])
            var, uid, py = r.stdout.split()
            assert (var, py) == ("from-the-image", "/usr/bin/python3") and uid != "0", r
            await sb.write_file("in-image.txt", "from the driver")
            assert (await sb.run("cat in-image.txt")).output.strip() == "from the driver"
            (ev,) = Store().events(sb.id, kinds=("session.image",))
            assert ev["detail"]["image"] == "deb"
            # A request without an image is not handed the warm image sandbox: it gets the
            # host's root, where the image's variable does not exist.
            host = await pool.acquire(profile="default", cpus=0.25)
            assert (await host.exec("echo [${IMAGE_VAR:-}]")).stdout.strip() == "[]"
            assert (state_dir / "uppers" / sb.id).is_dir()
            await pool.release(sb)
            assert not (state_dir / "uppers" / sb.id).exists()
            await pool.release(host)
        finally:
            await pool.close()
        assert not Store().list_sessions(live_only=True)

    run(main())
