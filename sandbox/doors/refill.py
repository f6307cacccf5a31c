"""Keep n things started ahead of need: the machinery under both warm pools.

`WarmPool` (sandboxes on this host) and `ray.SandboxPool` (sandboxes placed on a Ray
cluster) differ in how one is started and what acquiring one checks, not in how a
target is kept: one filler task per target, `parallel` starts at once, a failed batch
backing off so that a profile that cannot start does not spin the host, every start
counted. A subclass says how to make one (`produce`), how to throw one away
(`discard`) and when filling may go on (`can_fill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Generic, TypeVar

log = logging.getLogger("sandbox")

T = TypeVar("T")
MAX_BACKOFF_S = 5.0


class Refill(Generic[T]):
    """A target of `target` ready items; `ready` is theirs to take from (popleft)."""

    def __init__(self, name: str, parallel: int) -> None:
        self.name = name
        self.parallel = max(1, parallel)
        self.target = 0
        self.ready: deque[T] = deque()
        self.starting = 0
        self.filler: asyncio.Task[None] | None = None
        self.grew = asyncio.Event()  # set whenever an item is added (or filling stops)
        self.stopped = False
        # counters (`counters()`): what acquiring found, what starting cost
        self.warm_hits = 0
        self.cold_starts = 0
        self.started = 0
        self.start_failures = 0
        self.failures_in_a_row = 0
        self.dead_skipped = 0
        self.start_seconds = 0.0
        self.last_error = ""

    # -- the subclass's part ---------------------------------------------------------------

    async def produce(self) -> T:
        """Start one item (it is cleaned up by the subclass if this raises)."""
        raise NotImplementedError

    async def discard(self, item: T) -> None:
        """Throw away an item nobody will use."""
        raise NotImplementedError

    def can_fill(self) -> bool:
        return True

    # -- filling ---------------------------------------------------------------------------

    def kick(self) -> None:
        """Make sure a filler runs while the target is short (call on the loop)."""
        if self.stopped or len(self.ready) + self.starting >= self.target:
            return
        if self.filler is None or self.filler.done():
            self.filler = asyncio.get_running_loop().create_task(
                self._fill(), name=f"sandbox-warm-{self.name}")

    async def _fill(self) -> None:
        while not self.stopped and self.can_fill():
            missing = self.target - len(self.ready) - self.starting
            if missing <= 0:
                return
            batch = min(missing, self.parallel)
            self.starting += batch
            results = await asyncio.gather(*(self._one() for _ in range(batch)),
                                           return_exceptions=True)
            if any(isinstance(r, BaseException) for r in results):
                delay = min(MAX_BACKOFF_S, 0.1 * 2 ** min(self.failures_in_a_row, 6))
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(delay)

    async def _one(self) -> None:
        t0 = time.perf_counter()
        try:
            item = await self.produce()
        except BaseException as e:
            self.start_failures += 1
            self.failures_in_a_row += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("sandbox: warm start for %r failed: %s", self.name, self.last_error)
            raise
        finally:
            self.starting -= 1
        self.started += 1
        self.failures_in_a_row = 0
        self.start_seconds += time.perf_counter() - t0
        if self.stopped:  # the pool closed while it started
            await self.discard(item)
            return
        self.ready.append(item)
        self.grew.set()

    async def until_ready(self) -> None:
        """Until `target` items are ready; RuntimeError once stopped."""
        while len(self.ready) < self.target:
            if self.stopped:
                raise RuntimeError("the pool is closed")
            self.kick()
            self.grew.clear()
            await self.grew.wait()

    async def stop(self) -> list[T]:
        """Stop filling, wait for starts in flight, and hand back the ready items (for
        the owner to destroy)."""
        self.stopped = True
        self.grew.set()  # wake `until_ready` callers: they see it stopped
        if self.filler is not None:
            # A start in flight finishes (a jail start cannot be interrupted) and is
            # discarded by `_one`, which sees `stopped`.
            await asyncio.gather(self.filler, return_exceptions=True)
        items = list(self.ready)
        self.ready.clear()
        return items

    def counters(self) -> dict[str, Any]:
        return {
            "target": self.target, "ready": len(self.ready), "starting": self.starting,
            "warm_hits": self.warm_hits, "cold_starts": self.cold_starts,
            "started": self.started, "start_failures": self.start_failures,
            "dead_skipped": self.dead_skipped,
            "mean_start_s": self.start_seconds / self.started if self.started else None,
            "last_error": self.last_error,
        }
