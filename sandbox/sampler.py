"""`ResourceSampler`: each session's cgroup usage into the store, and limit breaches.

One thread per process reads every registered session's cgroup every `interval` seconds:
a `resource.sample` at most every `sample_every` seconds, and a `resource.breach` when OOM
kills, memory-limit hits or pids-limit hits rise (each kind at most once per
`breach_every` seconds, OOM kills always). Breaches are evidence for the guard.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from .cgroups import SessionCgroup
from .events import Emit


class ResourceSampler:
    """Samples each session's cgroup; emits resource.sample and resource.breach."""

    def __init__(self, interval: float = 1.0, sample_every: float = 5.0,
                 breach_every: float = 5.0) -> None:
        self.interval = interval
        self.sample_every = sample_every
        self.breach_every = breach_every
        self._groups: dict[str, tuple[SessionCgroup, Emit, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, session_id: str, cgroup: SessionCgroup, emit: Emit) -> None:
        with self._lock:
            self._groups[session_id] = (cgroup, emit, {"sampled": 0.0, "breach": {}})
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sandbox-resources",
                                            daemon=True)
            self._thread.start()

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._groups.pop(session_id, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """Sample every session once (the thread calls this; tests may too)."""
        with self._lock:
            groups = list(self._groups.values())
        for cgroup, emit, state in groups:
            with contextlib.suppress(Exception):  # a vanished cgroup ends its own session
                self._check(cgroup, emit, state)

    def _check(self, cgroup: SessionCgroup, emit: Emit, state: dict[str, Any]) -> None:
        s = cgroup.sample()
        now = time.monotonic()
        last = state.get("last") or {}
        state["last"] = s
        checks = [
            ("oom", "memory", s["oom_kills"] > last.get("oom_kills", 0), "alert"),
            ("memory", "memory", s["mem_failcnt"] > last.get("mem_failcnt", 0), "warning"),
            ("pids", "pids", s["pids_max_hits"] > last.get("pids_max_hits", 0)
             or 0 < s["pids_limit"] <= s["pids"], "alert"),
        ]
        for key, limit, hit, severity in checks:
            if not hit or (key != "oom" and now - state["breach"].get(key, -1e9)
                           < self.breach_every):
                continue
            state["breach"][key] = now
            value = s["mem_bytes"] if limit == "memory" else s["pids"]
            emit("resource.breach", {
                "limit": limit, "value": value,
                "max": s["mem_limit"] if limit == "memory" else s["pids_limit"],
                "oom_kills": s["oom_kills"], "mem_failcnt": s["mem_failcnt"],
                "pids_max_hits": s["pids_max_hits"], "reason": key,
            }, severity=severity)
        if now - state["sampled"] >= self.sample_every:
            state["sampled"] = now
            emit("resource.sample", s)
