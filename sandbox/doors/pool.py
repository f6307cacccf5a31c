"""Warm pools: sandboxes started ahead of need, so that acquiring one is a queue pop.

    pool = WarmPool()
    pool.warm(4, profile="default", network="none")   # keep 4 started and ready
    sb = await pool.acquire(profile="default")         # started, fresh workspace: ~µs
    r = await sb.exec(["pytest", "-q"])
    await pool.release(sb)                             # destroyed, never reused
    await pool.close()                                 # nothing left behind

A warm sandbox is never reused across episodes: each `acquire` hands out a sandbox no
episode has touched (its own fresh workspace, private /tmp and agent uid) and `release`
destroys it. After every acquire the pool starts a replacement in the background, so it
keeps `n` ready per profile. When a profile has none ready (or was never warmed),
`acquire` falls back to a cold start, counted in `stats()`. A warm sandbox that died while
it waited (a kill, a limit) is closed and skipped, never handed out.

The pool is asyncio-native and belongs to one event loop. From sync code, drive it on
the runtime's shared loop: `sandbox.doors.loop.call(pool.acquire())`, and the handle's
coroutines the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from ..jail.profile import Profile
from .aio import AsyncSandbox
from .options import SPEC_NAMES, SandboxSpec
from .refill import Refill

# The sandbox options a warm pool (and the Ray pool) passes on: the spec's, but not
# `workdir` (warm sandboxes always get a fresh workspace, or an episode could see the last
# one's files) nor `keep` (a released sandbox is destroyed: nobody commits its upper).
SANDBOX_OPTIONS = SPEC_NAMES - {"workdir", "keep"}


def pool_key(profile: Profile | str, image: str | None = None) -> str:
    """The key a profile's warm sandboxes are kept under: its name, and `@IMAGE` for
    sandboxes warmed in an image (one pool per image: `pool.stats("default@py")`)."""
    name = profile if isinstance(profile, str) else profile.name
    return f"{name}@{image}" if image else name


def check_options(kwargs: dict[str, Any]) -> SandboxSpec:
    """A pool's sandbox options as the spec it passes on (a copy); refuses `workdir`
    and names it does not pass on."""
    if "workdir" in kwargs:
        raise ValueError("a pooled sandbox always gets a fresh workspace: workdir is not "
                         "accepted (an episode must never see another's files)")
    bad = set(kwargs) - SANDBOX_OPTIONS
    if bad:
        raise TypeError(f"unknown sandbox option(s) {sorted(bad)}; "
                        f"accepted: {sorted(SANDBOX_OPTIONS)}")
    return cast(SandboxSpec, dict(kwargs))


class _Slot(Refill[AsyncSandbox]):
    """One profile's warm sandboxes and their counters."""

    def __init__(self, pool: WarmPool, key: str, profile: Profile | str,
                 kwargs: SandboxSpec) -> None:
        super().__init__(key, pool.parallel)
        self.pool, self.key, self.profile, self.kwargs = pool, key, profile, kwargs

    async def produce(self) -> AsyncSandbox:
        sb = AsyncSandbox(self.profile, **self.kwargs)
        try:
            await sb.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await sb.close()
            raise
        return sb

    async def discard(self, item: AsyncSandbox) -> None:
        await self.pool._destroy(item)


class WarmPool:
    """Per-profile pools of started sandboxes; see the module docstring.

    `parallel`: how many warm starts run at once per profile (each start is a thread of
    the loop's executor; a 2-core host gains little past 2).
    """

    def __init__(self, *, parallel: int = 2) -> None:
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        self.parallel = parallel
        self._slots: dict[str, _Slot] = {}
        self._out: dict[str, AsyncSandbox] = {}  # acquired, not yet released
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.destroyed = 0

    # -- configuration ------------------------------------------------------------------

    def warm(self, n: int, profile: Profile | str = "default", **sandbox_kwargs: Any) -> None:
        """Keep `n` sandboxes of `profile` (with these sandbox options) started and ready.

        Filling starts at once when called inside a running loop, else on the first
        `acquire` / `wait_ready`. Calling it again for the same profile changes n and
        the options (sandboxes already warm stay; `n=0` stops refilling)."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        if n < 0:
            raise ValueError("n must be >= 0")
        spec = check_options(sandbox_kwargs)
        key = pool_key(profile, spec.get("image"))
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(self, key, profile, spec)
        else:
            slot.profile, slot.kwargs = profile, spec
        slot.target = n
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._kick(slot)

    async def wait_ready(self, profile: Profile | str | None = None,
                         timeout: float | None = None) -> None:
        """Wait until the profile (default: every warmed profile) has its n ready.
        Raises TimeoutError after `timeout` seconds."""
        slots = [self._slot(profile)] if profile is not None else list(self._slots.values())

        self._check_open()
        try:
            await asyncio.wait_for(asyncio.gather(*(s.until_ready() for s in slots)), timeout)
        except TimeoutError:
            raise TimeoutError(f"warm pool not ready in {timeout} s: "
                               f"{ {s.key: self.stats(s.key) for s in slots} }") from None

    # -- acquire / release ----------------------------------------------------------------

    async def acquire(self, profile: Profile | str = "default", **sandbox_kwargs: Any
                      ) -> AsyncSandbox:
        """A started sandbox of `profile` that no one has used: from the warm pool when one
        is ready (no await on that path), else a cold start (counted). `sandbox_kwargs`
        other than the ones the profile was warmed with always mean a cold start with
        them. The caller owns the sandbox until `release`."""
        self._check_open()
        spec = check_options(sandbox_kwargs)
        key = pool_key(profile, spec.get("image"))
        slot = self._slots.get(key)
        if slot is None:  # never warmed: a slot for its counters, with no options of its own
            slot = self._slots[key] = _Slot(self, key, profile, {})
        # Options other than the warm ones' need a sandbox of their own.
        while slot.ready and (not spec or spec == slot.kwargs):
            sb = slot.ready.popleft()
            if sb.is_alive():
                slot.warm_hits += 1
                self._kick(slot)
                self._out[sb.id] = sb
                return sb
            slot.dead_skipped += 1  # died while waiting (killed, limit): never handed out
            self._destroy_later(sb)
        self._kick(slot)
        # Explicit options make a sandbox of their own; else it is one like the warm ones.
        sb = (AsyncSandbox(profile, **spec) if spec
              else AsyncSandbox(slot.profile, **slot.kwargs))
        slot.cold_starts += 1
        await sb.start()
        self._out[sb.id] = sb
        return sb

    async def release(self, sb: AsyncSandbox, *, wait: bool = True) -> None:
        """Destroy a sandbox this pool handed out (any sandbox is accepted). `wait=False`
        destroys it in the background (`close()` still waits for it)."""
        self._out.pop(sb.id, None)
        if wait:
            await self._destroy(sb)
        else:
            self._destroy_later(sb)

    # -- the end --------------------------------------------------------------------------

    async def close(self, *, acquired: bool = True) -> None:
        """Stop refilling, wait for warm starts in flight, destroy every warm sandbox and
        (with `acquired`, the default) every sandbox handed out and not yet released."""
        self._closed = True
        doomed: list[AsyncSandbox] = []
        for ready in await asyncio.gather(*(s.stop() for s in self._slots.values())):
            doomed.extend(ready)
        if acquired:
            doomed.extend(self._out.values())
            self._out.clear()
        await asyncio.gather(*(self._destroy(sb) for sb in doomed), return_exceptions=True)
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def __aenter__(self) -> WarmPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self, profile: Profile | str | None = None) -> dict[str, Any]:
        """Counters per profile key (or one profile's): target, ready, starting, warm_hits,
        cold_starts, started, start_failures, dead_skipped, mean_start_s, last_error; plus
        `acquired` (handed out, not released) and `destroyed` overall."""
        if profile is not None:
            return self._slot(profile).counters()
        return {"profiles": {k: s.counters() for k, s in self._slots.items()},
                "acquired": len(self._out), "destroyed": self.destroyed,
                "closed": self._closed}

    def ready_count(self, profile: Profile | str = "default", image: str | None = None
                    ) -> int:
        slot = self._slots.get(pool_key(profile, image))
        return len(slot.ready) if slot else 0

    # -- inside -----------------------------------------------------------------------------

    def _slot(self, profile: Profile | str) -> _Slot:
        key = pool_key(profile)
        if key not in self._slots:
            raise KeyError(f"profile {key!r} was never warmed in this pool")
        return self._slots[key]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the pool is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a WarmPool belongs to the event loop that first used it")
        for slot in self._slots.values():
            if slot.target and slot.filler is None:
                self._kick(slot)

    def _kick(self, slot: _Slot) -> None:
        if not self._closed:
            self._loop = self._loop or asyncio.get_running_loop()
            slot.kick()

    async def _destroy(self, sb: AsyncSandbox) -> None:
        try:
            await sb.close()
        finally:
            self.destroyed += 1

    def _destroy_later(self, sb: AsyncSandbox) -> None:
        task = asyncio.get_running_loop().create_task(self._destroy(sb))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
