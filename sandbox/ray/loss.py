"""What a dead Ray node leaves behind, and how `sandbox.ray` records it: a `NodeLoss`
for the pool's callers, and the node's sessions failed in the store (with what they left
on this host removed, as `sandbox gc` would).

Store-side only: no Ray import here, so it runs in a thread off the pool's loop.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sandbox")


@dataclass
class NodeLoss:
    """What the pool saw when a node died."""

    node_id: str
    reason: str
    sessions: list[str]
    at: float


def death_reason(node_id: str, node: dict[str, Any]) -> str:
    """The reason recorded on each lost session, from the node's row in `ray.nodes()`."""
    why = node.get("DeathReasonMessage") or node.get("DeathReason") or "no reason given"
    return f"Ray node {node_id} died ({why}): its host agent and sandboxes are gone"


def fail_sessions(ids: list[str], reason: str) -> None:
    """The node's supervisor is gone: mark its live sessions failed with the reason, and
    where the store says they ran on this host, remove what they left (as gc would)."""
    from .. import owners, reap
    from ..record import Store

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
