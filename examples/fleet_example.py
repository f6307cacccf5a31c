"""The fleet, on one machine: sandboxes across a 2-node Ray cluster, one PostgreSQL record.

    python -m sandbox.record.pgserver up          # a throwaway PostgreSQL on loopback; prints:
    export SANDBOX_STORE='postgresql://...'
    python examples/fleet_example.py --hold 600 &
    sandbox tui                            # HOST column (one host id per node); k, y kills
    sandbox ls; sandbox verify ID          # every session, from any host
    python -m sandbox.record.pgserver down

The cluster is `ray.cluster_utils.Cluster` (a head node and two nodes with 2 `sandbox` slots
each, all on 127.0.0.1); on a real fleet each node runs `ray start --resources
'{"sandbox": 16}'` and this script would `ray.init(address="auto")` instead. Each node's
host agent records under its own host id (`{hostname}-{node}`), as separate machines
would. The sandboxes run a small loop and stay up for `--hold` seconds, so the operator can
watch and kill them; then everything is closed and each session's chain is verified.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1

import ray
from ray.cluster_utils import Cluster

from sandbox import SessionClosed, Store
from sandbox.ray import RaySandbox, SandboxPool

LOOPBACK = {"node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": 80 << 20}


async def episode(sb: RaySandbox, i: int, hold: float) -> str:
    """What an RL rollout would do: write, run, keep going until killed or done."""
    await sb.write_file("task.py", f"print('episode {i} on', __import__('os').uname()[1])\n")
    r = await sb.exec(["python3", "task.py"])
    print(f"  {sb.id} on node {sb.node_id[:8]}: {r.stdout.strip()}")
    loop = f"for i in $(seq {int(hold)}); do echo tick $i; sleep 1; done"
    try:
        r = await sb.exec(["sh", "-c", loop], timeout=hold + 30)
    except SessionClosed as e:
        return f"killed ({e})"
    alive = await sb.is_alive()
    return f"done (exit {r.returncode})" if alive else f"killed (exit {r.returncode})"


async def main(args: argparse.Namespace) -> int:
    if not os.environ.get("SANDBOX_STORE", "").startswith("postgresql"):
        print("fleet: set SANDBOX_STORE first (python -m sandbox.record.pgserver up prints it); "
              "running with the local SQLite store instead")
    cluster = Cluster(initialize_head=True, head_node_args={**LOOPBACK, "num_cpus": 0})
    session_dir = cluster.head_node.get_session_dir_path()
    try:
        for _ in range(2):
            cluster.add_node(**LOOPBACK, num_cpus=2, resources={"sandbox": 2})
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        pool = await SandboxPool(host_id="{hostname}-{node}").start()
        try:
            boxes = [await pool.acquire(profile="default", cpus=0.5) for _ in range(4)]
            print(f"fleet: {len(boxes)} sandboxes on {len({b.node_id for b in boxes})} nodes; "
                  f"watch them: sandbox tui (holding {args.hold:.0f} s)")
            outcomes = await asyncio.gather(*(episode(b, i, args.hold)
                                              for i, b in enumerate(boxes)))
            for b, outcome in zip(boxes, outcomes, strict=True):
                await pool.release(b)
                ok, why = Store().verify(b.id)
                print(f"  {b.id}: {outcome}; verify: {'ok' if ok else 'FAILED'} {why}")
        finally:
            await pool.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(session_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hold", type=float, default=5.0,
                    help="seconds each sandbox keeps running (to watch and kill them)")
    raise SystemExit(asyncio.run(main(ap.parse_args())))
