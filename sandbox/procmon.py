"""Every exec in a session's process tree, seen from outside the sandbox, and usage samples.

`ProcessMonitor` watches all registered sessions of this process with one reader thread:

- **netlink** (root / CAP_NET_ADMIN): the kernel's proc connector multicasts every fork,
  exec and exit on the host. A pid belongs to a session when its parent did at fork time
  (so double-forked daemons stay attributed after they leave the tree), or when
  /proc/<pid>/cgroup puts it in the session's cgroup (the jail's first exec). argv is
  read from /proc right after the event; a process already gone keeps what was read.
- **poll** (anyone; `force_poll=True` in tests): every `poll_interval` the tree below the
  registered root, every live known pid and the cgroup's members are listed; a new pid or
  a changed comm is an exec. Processes shorter than the interval can be missed.

A second thread delivers `proc.exec` events and `on_exec` callbacks, so a slow store
never makes the reader drop kernel events. When the kernel does drop them (ENOBUFS
under a fork storm) the reader rescans every session and records what it finds.

`ResourceSampler` reads each session's cgroup every `interval` seconds: a
`resource.sample` at most every `sample_every` seconds, and a `resource.breach` when OOM
kills, memory-limit hits or pids-limit hits rise (each kind at most once per
`breach_every` seconds, OOM kills always).
"""

from __future__ import annotations

import contextlib
import errno
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import proctree
from .cgroups import SessionCgroup
from .events import Emit
from .proctree import ProcInfo

EmitFor = Callable[[str], Emit | None]  # session_id -> that session's Emit
OnExec = Callable[[str, ProcInfo], None]  # (session_id, info), e.g. feeds the guard

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
EV_FORK, EV_EXEC, EV_EXIT = 0x1, 0x2, 0x80000000
_NLMSG = struct.Struct("=IHHII")
_CNMSG = struct.Struct("=IIIIHH")
_EVHDR = struct.Struct("=IIQ")
_DATA_OFF = _NLMSG.size + _CNMSG.size + _EVHDR.size  # union proc_event.event_data
MAX_KNOWN = 100_000  # per session: a fork bomb must not grow the supervisor without bound


@dataclass
class _Tracked:
    session_id: str
    root_pid: int | None
    cgroup: SessionCgroup | None
    emit: Emit | None
    live: set[int] = field(default_factory=set)
    known: dict[int, ProcInfo] = field(default_factory=dict)
    seen: dict[int, tuple[str, str]] = field(default_factory=dict)  # pid -> (start, comm)
    ever: set[int] = field(default_factory=set)  # every pid adopted, forks without exec too


def _cgroup_paths(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


def netlink_available() -> tuple[bool, str]:
    """Whether the proc connector can be subscribed to (root / CAP_NET_ADMIN)."""
    try:
        sock = _subscribe()
    except OSError as e:
        return False, f"proc connector unavailable ({e}); polling instead"
    sock.close()
    return True, "proc connector"


def _subscribe() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    try:
        with contextlib.suppress(OSError):  # a big buffer rides out fork storms
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        sock.bind((0, CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        cn = _CNMSG.pack(CN_IDX_PROC, 1, 0, 0, len(op), 0) + op
        sock.send(_NLMSG.pack(_NLMSG.size + len(cn), 3, 0, 0, 0) + cn)  # 3 = NLMSG_DONE
    except OSError:
        sock.close()
        raise
    return sock


class ProcessMonitor:
    """Records every exec in each registered session's process tree (one thread for all)."""

    def __init__(self, emit_for_session: EmitFor | None = None, on_exec: OnExec | None = None,
                 *, poll_interval: float = 0.05, force_poll: bool = False) -> None:
        self.emit_for_session = emit_for_session
        self.on_exec = on_exec
        self.poll_interval = poll_interval
        self.force_poll = force_poll
        self.mode = ""
        """"netlink" or "poll" once started."""
        self.lost_events = 0
        self._sessions: dict[str, _Tracked] = {}
        self._owner: dict[int, str] = {}  # live pid -> session id
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._out: queue.Queue[tuple[str, ProcInfo, str] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ProcessMonitor:
        if self._threads:
            return self
        if not self.force_poll:
            with contextlib.suppress(OSError):
                self._sock = _subscribe()
                self._sock.settimeout(0.2)
        self.mode = "netlink" if self._sock else "poll"
        reader = self._netlink_loop if self._sock else self._poll_loop
        self._threads = [
            threading.Thread(target=reader, name="sandbox-procmon", daemon=True),
            threading.Thread(target=self._deliver_loop, name="sandbox-procmon-out", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._out.put(None)
        for t in self._threads:
            t.join(timeout=2)
        if self._sock is not None:
            self._sock.close()

    def register(self, session_id: str, root_pid: int | None = None,
                 cgroup: SessionCgroup | None = None, *, emit: Emit | None = None) -> None:
        """Watch a session. Call again to add the root pid after registering the cgroup.

        Processes already running are recorded at once (source "scan").
        """
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                tr = self._sessions[session_id] = _Tracked(session_id, root_pid, cgroup, emit)
            tr.root_pid = root_pid or tr.root_pid
            tr.cgroup = cgroup or tr.cgroup
            tr.emit = emit or tr.emit
            if root_pid:
                self._adopt(tr, root_pid)
        self.start()
        self._scan(tr, "scan")

    def unregister(self, session_id: str) -> None:
        with self._lock:
            tr = self._sessions.pop(session_id, None)
            if tr is not None:
                for pid in tr.live:
                    if self._owner.get(pid) == session_id:
                        del self._owner[pid]

    def known_pids(self, session_id: str) -> set[int]:
        """Every pid seen in the session so far (live or exited, exec'd or only forked)."""
        with self._lock:
            tr = self._sessions.get(session_id)
            return set(tr.ever) | set(tr.known) if tr else set()

    def live_pids(self, session_id: str) -> set[int]:
        with self._lock:
            tr = self._sessions.get(session_id)
            return set(tr.live) if tr else set()

    def processes(self, session_id: str) -> list[ProcInfo]:
        """The last info recorded for every known pid of the session."""
        with self._lock:
            tr = self._sessions.get(session_id)
            return list(tr.known.values()) if tr else []

    # -- bookkeeping (under the lock) ---------------------------------------------------

    def _adopt(self, tr: _Tracked, pid: int) -> None:
        tr.live.add(pid)
        if len(tr.ever) < MAX_KNOWN:
            tr.ever.add(pid)
        self._owner[pid] = tr.session_id

    def _attribute(self, pid: int) -> _Tracked | None:
        """The session an exec'ing pid belongs to. Forks make most pids known already;
        /proc is read only while a session waits for its first process (registered with
        a cgroup and no live pid yet), so execs elsewhere on the host cost a dict lookup."""
        sid = self._owner.get(pid)
        if sid is None:
            waiting = {tr.cgroup.rel_path: tr for tr in self._sessions.values()
                       if tr.cgroup and not tr.live}
            for path in _cgroup_paths(pid) if waiting else ():
                for rel, tr in waiting.items():
                    if path == rel or path.startswith(rel + "/"):
                        sid = tr.session_id
        found = self._sessions.get(sid) if sid else None
        if found is not None:
            self._adopt(found, pid)
        return found

    def _record(self, tr: _Tracked, info: ProcInfo, source: str) -> None:
        with self._lock:
            if info.start and tr.known.get(info.pid) == info:
                return  # the register scan and the kernel event saw the same exec
            if info.start:
                tr.seen[info.pid] = (info.start, info.comm)
            if info.pid in tr.known or len(tr.known) < MAX_KNOWN:
                tr.known[info.pid] = info
        self._out.put((tr.session_id, info, source))

    # -- netlink ------------------------------------------------------------------------

    def _netlink_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the kernel dropped events: look again
                    self.lost_events += 1
                    self._rescan()
                    continue
                if self._stop.is_set():
                    return
                raise
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        off = 0
        while off + _DATA_OFF <= len(data):
            length = _NLMSG.unpack_from(data, off)[0]
            what = _EVHDR.unpack_from(data, off + _NLMSG.size + _CNMSG.size)[0]
            at = off + _DATA_OFF
            if what == EV_FORK:
                ppid, _ptgid, child, child_tgid = struct.unpack_from("=4I", data, at)
                if child == child_tgid:  # a process, not a thread
                    with self._lock:
                        sid = self._owner.get(ppid)
                        if sid is not None and sid in self._sessions:
                            self._adopt(self._sessions[sid], child)
            elif what == EV_EXEC:
                pid = struct.unpack_from("=I", data, at + 4)[0]
                with self._lock:
                    tr = self._attribute(pid) if self._sessions else None
                if tr is not None:
                    self._record(tr, proctree.info(pid), "netlink")
            elif what == EV_EXIT:
                pid, tgid = struct.unpack_from("=2I", data, at)
                if pid == tgid:
                    with self._lock:
                        sid = self._owner.pop(pid, None)
                        if sid is not None and sid in self._sessions:
                            self._sessions[sid].live.discard(pid)
                            self._sessions[sid].seen.pop(pid, None)
            off += max(length + 3 & ~3, _DATA_OFF)

    def _rescan(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for tr in sessions:
            self._scan(tr, "resync")

    # -- polling ------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            with self._lock:
                sessions = list(self._sessions.values())
            for tr in sessions:
                self._scan(tr, "poll")

    def _scan(self, tr: _Tracked, source: str) -> None:
        """Record new processes (and execs in place) in the session's tree and cgroup."""
        with self._lock:
            frontier = set(tr.live) | ({tr.root_pid} if tr.root_pid else set())
        pids = set(tr.cgroup.pids()) if tr.cgroup else set()
        todo = list(frontier | pids)
        found: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in found:
                continue
            found.add(pid)
            todo.extend(proctree.children(pid))
        alive: set[int] = set()
        for pid in found:
            stat = proctree.info_stat(pid)
            if stat is None:
                continue
            start, comm, ppid = stat
            alive.add(pid)
            prev = tr.seen.get(pid)
            if prev == (start, comm):
                continue
            info = proctree.info(pid, comm)
            parent = tr.known.get(ppid)
            forked = (prev is None and parent is not None and parent.argv == info.argv
                      and parent.exe == info.exe)
            if forked:
                with self._lock:  # a fork without exec (subshell): known, not an exec
                    tr.seen[pid] = (start, comm)
                    tr.known.setdefault(pid, info)
                continue
            self._record(tr, info, source)
        with self._lock:
            for pid in alive:
                self._adopt(tr, pid)
            if source == "poll":
                for pid in tr.live - alive:
                    tr.live.discard(pid)
                    tr.seen.pop(pid, None)
                    if self._owner.get(pid) == tr.session_id:
                        del self._owner[pid]

    # -- delivery -----------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                self._out.task_done()
                return
            sid, info, source = item
            self._deliver(sid, info, source)
            self._out.task_done()

    def _deliver(self, sid: str, info: ProcInfo, source: str) -> None:
            with self._lock:
                tr = self._sessions.get(sid)
            emit = (tr.emit if tr else None) or (
                self.emit_for_session(sid) if self.emit_for_session else None)
            with contextlib.suppress(Exception):  # a broken consumer must not stop recording
                if emit is not None:
                    emit("proc.exec", {**info.detail(), "source": source})
            with contextlib.suppress(Exception):
                if self.on_exec is not None:
                    self.on_exec(sid, info)

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until queued events are delivered (tests, session end)."""
        deadline = time.monotonic() + timeout
        while self._out.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
