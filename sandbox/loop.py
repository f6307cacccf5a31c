"""The event loop behind the sync API: one daemon thread per process, started on first use.

`Sandbox.exec`, its files and `spawn` run the same coroutines as `AsyncSandbox` on this
loop, so there is one implementation of each and a sync caller in many threads still
drives every exec from one thread (no thread per blocking call).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            threading.Thread(target=new.run_forever, name="sandbox-loop", daemon=True).start()
            _loop = new
        return _loop


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the shared loop and wait for its result (its exception raised here).
    Never call it from the loop's own thread (that would wait on itself)."""
    running = _loop is not None and _loop.is_running() and threading.current_thread().name \
        == "sandbox-loop"
    if running:
        coro.close()
        raise RuntimeError("sandbox: the sync API was called from inside its own loop")
    return asyncio.run_coroutine_threadsafe(coro, loop()).result()
