"""Waiting on one fd with poll(), never select(): a process holding hundreds of sandboxes
has fds past 1024, which select() refuses ("filedescriptor out of range")."""

from __future__ import annotations

import select

READ, WRITE = select.POLLIN, select.POLLOUT


def ready(fd: int, events: int = READ, timeout: float | None = None) -> bool:
    """Whether `fd` is ready for `events` (or closed/errored) within `timeout` seconds."""
    p = select.poll()
    p.register(fd, events)
    return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))
