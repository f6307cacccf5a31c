"""Waiting on one fd with poll(), never select(): a process holding hundreds of sandboxes
has fds past 1024, which select() refuses ("filedescriptor out of range")."""

from __future__ import annotations

import select

READ, WRITE = select.POLLIN, select.POLLOUT


def ready(fd: int, events: int = READ, timeout: float | None = None) -> bool:
    """Whether `fd` is ready for `events` (or closed/errored) within `timeout` seconds."""
    p = select.poll()
    p.register(fd, events)
    # poll() counts whole milliseconds: round a wait up (never return early), but a
    # timeout of 0 is a look, not a 1 ms sleep.
    ms = None if timeout is None else 0 if timeout <= 0 else int(timeout * 1000) + 1
    return bool(p.poll(ms))
