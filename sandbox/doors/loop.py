"""The event loop behind the sync API: one daemon thread per process, started on first use
(owned by the supervisor).

`Sandbox.exec`, its files and `spawn` run the same coroutines as `AsyncSandbox` on this
loop, so there is one implementation of each and a sync caller in many threads still
drives every exec from one thread (no thread per blocking call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .. import supervisor

T = TypeVar("T")
NAME = "sandbox-loop"  # the loop thread's name


def _start() -> asyncio.AbstractEventLoop:
    new = asyncio.new_event_loop()
    threading.Thread(target=new.run_forever, name=NAME, daemon=True).start()
    return new


def loop() -> asyncio.AbstractEventLoop:
    """The process's loop (its supervisor owns it); a new one if it was closed."""
    sup = supervisor.current()
    running = sup.shared("sync API loop", _start)
    if running.is_closed():
        sup.drop("sync API loop")
        running = sup.shared("sync API loop", _start)
    return running


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the shared loop and wait for its result (its exception raised here).
    Never call it from the loop's own thread (that would wait on itself)."""
    return submit(coro).result()


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """`coro` started on the shared loop: its future, for a caller in another thread."""
    if threading.current_thread().name == NAME:
        coro.close()
        raise RuntimeError("sandbox: the sync API was called from inside its own loop")
    return asyncio.run_coroutine_threadsafe(coro, loop())
