"""SWE-ReX peer, run by the bench inside SWE-ReX's own venv (bench/.peers/venv).

Used as its docs show: `LocalDeployment().start()`, `runtime.create_session(
CreateBashSessionRequest())`, `runtime.run_in_session(BashAction(command=...))`.
SWE-ReX's local runtime has no sandbox: the commands run directly on the host.
Prints one JSON object on stdout. Times exclude the interpreter start and imports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from importlib.metadata import version


async def one_start() -> tuple[float, float]:
    from swerex.deployment.local import LocalDeployment  # type: ignore[import-not-found, unused-ignore]
    from swerex.runtime.abstract import (  # type: ignore[import-not-found, unused-ignore]
        BashAction,
        CreateBashSessionRequest,
    )

    t0 = time.perf_counter()
    dep = LocalDeployment()
    await dep.start()
    await dep.runtime.create_session(CreateBashSessionRequest())
    await dep.runtime.run_in_session(BashAction(command="true"))
    ready = time.perf_counter() - t0
    await dep.stop()
    return ready, time.perf_counter() - t0


async def per_command(n: int, budget_s: float) -> list[float]:
    from swerex.deployment.local import LocalDeployment  # type: ignore[import-not-found, unused-ignore]
    from swerex.runtime.abstract import (  # type: ignore[import-not-found, unused-ignore]
        BashAction,
        CreateBashSessionRequest,
    )

    dep = LocalDeployment()
    await dep.start()
    out: list[float] = []
    try:
        await dep.runtime.create_session(CreateBashSessionRequest())
        end = time.monotonic() + budget_s
        while len(out) < n and time.monotonic() < end:
            t0 = time.perf_counter()
            await dep.runtime.run_in_session(BashAction(command="true"))
            out.append(time.perf_counter() - t0)
    finally:
        await dep.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=0)
    ap.add_argument("--commands", type=int, default=0)
    ap.add_argument("--budget", type=float, default=60.0)
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # its DEBUG logs would go to our pipe
    res: dict[str, object] = {"version": version("swe-rex")}
    ready, full = [], []
    for _ in range(args.starts):
        r, f = await one_start()
        ready.append(r)
        full.append(f)
    res["start_ready"], res["start_full"] = ready, full
    res["per_command"] = await per_command(args.commands, args.budget) if args.commands else []
    print("SWEREX_JSON " + json.dumps(res))


if __name__ == "__main__":
    asyncio.run(main())
