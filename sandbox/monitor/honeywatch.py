"""Watch planted decoy files with inotify: any process that opens one is caught.

Text and exec rules see `cat ~/.ssh/id_rsa`, but not `open(os.path.expanduser(...))`
inside a Python script. The kernel does: IN_OPEN and IN_ACCESS on the decoy files fire
whoever reads them, from outside the jail. One reader thread per process serves every
session; ctypes keeps it dependency-free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
import threading
from collections.abc import Callable

from .. import fdwait

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

OnTouch = Callable[[str], None]  # called with the touched path

log = logging.getLogger("sandbox")


class HoneyWatch:
    """inotify watches on files; `watch(path, on_touch)` until `unwatch(path)`."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._by_wd: dict[int, tuple[str, OnTouch]] = {}
        self._by_path: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sandbox-honeywatch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def watch(self, path: str, on_touch: OnTouch) -> None:
        wd = self._add(self.fd, path.encode(), IN_OPEN | IN_ACCESS)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        with self._lock:
            self._by_wd[wd] = (path, on_touch)
            self._by_path[path] = wd

    def unwatch(self, path: str) -> None:
        with self._lock:
            wd = self._by_path.pop(path, None)
            if wd is not None:
                self._by_wd.pop(wd, None)
                self._rm(self.fd, wd)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not fdwait.ready(self.fd, fdwait.READ, 0.5):
                continue
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            touched: set[int] = set()
            while offset + _EVENT.size <= len(data):
                wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                touched.add(wd)
            for wd in touched:  # one alert per read burst and file, not per read() call
                with self._lock:
                    entry = self._by_wd.get(wd)
                if entry is not None:
                    try:
                        entry[1](entry[0])
                    except Exception as e:  # one session's callback must not stop the rest
                        log.warning("sandbox: honeytoken callback for %s failed: %s",
                                    entry[0], e)


def watcher() -> HoneyWatch:
    """The process's one honeytoken watcher (a shared service of the supervisor)."""
    from .. import supervisor

    return supervisor.current().shared("honeytoken watcher", HoneyWatch, HoneyWatch.stop)
