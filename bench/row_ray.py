"""Row 14: `exec(["true"])` through a Ray handle against a local `AsyncSandbox`.

A `ray.cluster_utils.Cluster` on this machine (a head without slots and one node with 2
`sandbox` slots, all on 127.0.0.1), a `SandboxPool` with one `RaySandbox` placed on the
node, and a local `AsyncSandbox` in the driver; rounds alternate the two (a discarded
warm-up round first). The difference is what the fleet's placement costs per call: a Ray
actor call to the node's host agent and back. The cluster start (~10 s) is not timed.
"""

from __future__ import annotations

import os
import shutil
import time

from .core import Ctx, Deadline, Line, Row, run_async, stat, unavailable

MS = 1000.0
LOCAL = "local `AsyncSandbox.exec(['true'])`"


def run(ctx: Ctx) -> Row:
    row = Row("ray", "Fleet: exec through a Ray handle vs a local AsyncSandbox")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError as e:
        row.add(unavailable("exec through a RaySandbox", "ms", f"Ray not installed ({e})"))
        return row
    from sandbox import AsyncSandbox
    from sandbox.ray import SandboxPool

    n = ctx.reps(200, 30)
    dl = Deadline(180)
    s: dict[str, list[float]] = {"ray": [], "local": []}
    loopback = {"node_ip_address": "127.0.0.1", "include_dashboard": False,
                "object_store_memory": 80 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "num_cpus": 0})
    session_dir = cluster.head_node.get_session_dir_path()

    async def body() -> None:
        pool = await SandboxPool().start()
        local = AsyncSandbox()
        try:
            remote = await pool.acquire(profile="default", cpus=0.5)
            await local.start()
            for i in range(-1, n):
                if not dl.left():
                    break
                for key, box in (("ray", remote), ("local", local))[:: 1 if i % 2 else -1]:
                    t0 = time.perf_counter()
                    await box.exec(["true"])
                    if i >= 0:
                        s[key].append((time.perf_counter() - t0) * MS)
            await pool.release(remote)
        finally:
            await local.close()
            await pool.close()

    try:
        cluster.add_node(**loopback, num_cpus=2, resources={"sandbox": 2})
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        run_async(body(), 300)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(session_dir, ignore_errors=True)
    row.add(Line(LOCAL, "ms", stat(s["local"]), note="the driver's own sandbox"))
    row.add(Line("`RaySandbox.exec(['true'])` (host agent on a Ray node)", "ms",
                 stat(s["ray"]), baseline=LOCAL,
                 note="a Ray actor call to the node's agent, which runs the same exec"))
    return row
