"""Clean up after sessions whose owner died: `sandbox gc`, and every session start.

A session's owner records every host resource it makes (jail pid, netns, veth, nft
table, cgroup) in the store before using it, so a crashed owner leaves a list of what
to remove. `reap.reap` ends the jail, removes those resources, and closes the session
row.

In a fleet's shared store (PostgreSQL) each host reaps only its own sessions (their
owner pids mean nothing elsewhere), and `mark_lost_hosts` closes the sessions of a host
that vanished: none of its processes beat for `reap.host_timeout()` seconds. Those
are marked failed ("host X lost") but their jails and resources, on that host, are
removed by that host's own next gc or start (`_unreleased`) if it ever comes back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path

from . import owners
from .jail import launch
from .reap import cleanup_resources, host_timeout, kill_jail, reap
from .record import FINAL_STATES, Store

log = logging.getLogger("sandbox")

GC_EVERY_S = 5.0  # an RL process starts sessions by the thousand: reap at most this often


class _Throttle:
    """When this process last collected (a supervisor-owned value, not a global)."""

    last = 0.0


def now_and_then(store: Store) -> None:
    """`collect`, at most every GC_EVERY_S in this process (each session start asks)."""
    from . import supervisor

    throttle = supervisor.current().shared("gc throttle", _Throttle)
    now = time.monotonic()
    if now - throttle.last >= GC_EVERY_S:
        throttle.last = now
        collect(store)


def collect(store: Store, *, deep: bool = False) -> list[str]:
    """Reap every live session whose owner process is gone; returns their ids.

    Every session start runs this (cheap: one query, a /proc look per live session).
    `deep` (what `sandbox gc` does) also sweeps host objects no session ever recorded:
    empty old cgroups and unused old network namespaces, nft tables and veths.
    """
    reaped = []
    if store.shared:
        try:  # ends a lost connection could not write, now that the store answers
            reaped += store.replay_lost()
        except Exception as e:
            log.warning("sandbox gc: replaying ends recorded locally: %s", e)
        reaped += mark_lost_hosts(store)
    for session in store.list_sessions(live_only=True, limit=10_000):
        if store.elsewhere(session):  # a shared store: another host's owner, not ours
            continue
        if owners.alive(session["owner_pid"], session["owner_start"]):
            continue
        reap(store, session, state="failed",
             reason=f"owner process {session['owner_pid']} died without closing the session")
        reaped.append(session["id"])
    _unreleased(store)
    if deep:
        _empty_leftover_cgroups(store)
        _orphan_networks(store)
        _old_includes()
    return reaped


def mark_lost_hosts(store: Store, timeout: float | None = None) -> list[str]:
    """Mark failed the live sessions of every other host that stopped beating: none of
    its supervisor processes wrote a heartbeat for `timeout` seconds (default
    `reap.host_timeout()`; never less than 3 of that host's own beat intervals), by
    the store's clock. A session touched within the timeout is left alone, and so is a
    host that never beat (an older sandbox: nothing says it is gone). Returns the ids."""
    if not store.shared:
        return []
    timeout = host_timeout() if timeout is None else timeout
    marked: list[str] = []
    try:
        hosts = store.host_status()
    except Exception as e:
        log.warning("sandbox gc: reading heartbeats: %s", e)
        return []
    for h in hosts:
        limit = max(timeout, 3 * h["beat"])
        if h["host"] == store.host or not h["live"] or h["age"] < limit:
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h["last_seen"]))
        reason = (f"host {h['host']} lost (no heartbeat since {since} UTC, "
                  f"timeout {limit:g}s)")
        now = h["last_seen"] + h["age"]  # the store's clock
        sessions = store.list_sessions(live_only=True, limit=10_000, host=h["host"])
        # Read again, after the sessions: a host that beat meanwhile is back.
        again = next((x for x in store.host_status() if x["host"] == h["host"]), None)
        if again is None or again["age"] < limit:
            continue
        for session in sessions:
            if session["updated"] > now - limit:  # written to lately: not silent
                continue
            if store.finish_session(session["id"], "failed", reason):
                try:
                    store.add_event(session["id"], "session.end",
                                    {"state": "failed", "reason": reason,
                                     "lost_host": h["host"], "last_heartbeat": h["last_seen"]},
                                    severity="warning")
                    store.mark_controls_handled(session["id"])
                except Exception as e:
                    log.warning("sandbox gc: %s: recording its end failed: %s",
                                session["id"], e)
                marked.append(session["id"])
    with contextlib.suppress(Exception):
        store.prune_heartbeats(max(86400.0, 10 * timeout))
    return marked


def _unreleased(store: Store, recent: int = 200) -> None:
    """Final sessions whose owner died before removing their host resources (a kill's
    teardown cut short): remove them now (M6). `released` is set by the owner once done."""
    for session in store.list_sessions(limit=recent):
        res = session.get("resources") or {}
        if session["state"] not in FINAL_STATES or not res or res.get("released"):
            continue
        if store.elsewhere(session):
            continue
        if owners.alive(session["owner_pid"], session["owner_start"]):
            continue  # its owner is still tearing it down
        kill_jail(session.get("jail_pid"), session.get("jail_name"))
        errors = cleanup_resources(res)
        store.update_session(session["id"], resources={**res, "released": True})
        if errors:
            log.warning("sandbox gc: %s: %s", session["id"], "; ".join(errors))


def _old_includes() -> None:
    """Hide-list include files of any store's sessions: firejail reads one only while
    its jail starts, so one older than a minute is never needed again."""
    from .jail.firejail import INCLUDE_DIR

    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(INCLUDE_DIR):
            with contextlib.suppress(OSError):
                if entry.name.endswith(".inc") and now - entry.stat().st_mtime > ORPHAN_AGE_S:
                    os.unlink(entry.path)


# A namespace younger than this may be a session (of any store) between setup and spawn.
ORPHAN_AGE_S = 60.0


def _leftover_key(item: str) -> str:
    kind, _, name = item.partition(":")
    if kind == "netns":
        return name.removeprefix("sbx-")
    if kind == "link":
        return name.removeprefix("sbx").removesuffix("h")
    return name.removeprefix("sbx_")


def _orphan_networks(store: Store) -> None:
    """Remove network objects no live session of this store owns and nothing uses.

    A namespace is garbage when it is older than a minute and holds no process (a live
    session, of any store, always has its jail inside); a veth or nftables table whose
    namespace is gone is crash residue (setup makes the namespace first, teardown removes
    it last).
    """
    try:
        from . import network
    except ImportError:  # pragma: no cover
        return
    if os.geteuid() != 0:
        return
    live = {s["id"] for s in store.list_sessions(live_only=True, limit=10_000)}
    try:
        items = network.leftovers()
        keys = {_leftover_key(i) for i in items} - live
        for key in keys:
            ns = Path("/run/netns") / f"sbx-{key}"
            if ns.exists() and (time.time() - ns.stat().st_mtime < ORPHAN_AGE_S
                                or _netns_pids(f"sbx-{key}")):
                continue
            network.cleanup(network.resources_for(key))
    except Exception as e:  # a sweep is best effort; the next gc tries again
        log.warning("sandbox gc: network sweep: %s", e)


def _netns_pids(name: str) -> bool:
    out = subprocess.run([launch.tool("ip"), "netns", "pids", name], capture_output=True,
                         text=True, timeout=10, check=False, env=launch.supervisor_env()).stdout
    return bool(out.strip())


def _empty_leftover_cgroups(store: Store) -> None:
    """Remove empty cgroups of sessions that are not live here.

    Only empty ones older than a minute: a cgroup may belong to a live session recorded
    in another store (another SANDBOX_STATE_DIR), and one that was just created is empty
    until its jail joins it; those are reaped through their own store.
    """
    from .jail import cgroups

    live = {s["id"] for s in store.list_sessions(live_only=True, limit=10_000)}
    now = time.time()
    try:
        for res in cgroups.leftovers(live).values():
            group = cgroups.SessionCgroup.from_resources(res)
            dirs = [Path(d) for d in res.get("dirs", {}).values()]
            old = all(now - d.stat().st_ctime > 60 for d in dirs if d.exists())
            if old and not group.pids():
                group.remove()
    except Exception as e:  # a sweep is best effort; the next gc tries again
        log.warning("sandbox gc: cgroup sweep: %s", e)
