"""Every exec in a session's process tree, seen from outside the sandbox.

`ProcessMonitor` watches all registered sessions of this process with one reader:

- **netlink** (root / CAP_NET_ADMIN): the kernel's proc connector multicasts every fork,
  exec and exit on the host. A pid belongs to a session when its parent did at fork time
  (so double-forked daemons stay attributed after they leave the tree), or when
  /proc/<pid>/cgroup puts it in the session's cgroup (the jail's first exec). The
  events are read, and argv read from /proc right after each exec, by a small reader
  process (`procreader`: it shares no GIL with the supervisor's busy threads, so a
  process living a few milliseconds is still read in time; in-process if it cannot be
  started). At most `proctree.ARGV_CAP` bytes of argv are kept (head and tail, marked
  `argv_truncated`); a process already gone is marked `argv_unknown`.
- **poll** (anyone; `force_poll=True` in tests): every `poll_interval` the tree below the
  registered root, every live known pid and the cgroup's members are listed; a new pid or
  a changed comm is an exec. Processes shorter than the interval can be missed.

The reader thread only does bookkeeping: everything else (the store, the guard's
rules) runs on a small pool of delivery threads. Each session has its own bounded queue,
and the pool serves sessions round-robin, one event at a time, never two threads on one
session (its events stay in order): an exec flood in one session delays that session's
own events, not another's; within a session, execs of programs the rules name and execs
with small argv are served before big ones (`SessionQueue.lane_of`). A session's
delivery CPU (store + rules) is metered against `Budget.cpu_percent`; over it, the
session waits for its share and its queue fills.

Nothing is dropped silently. When a session's queue is full, or the kernel drops events
(ENOBUFS: the session cannot be known, so every live session is told, and every session
is rescanned off the reader thread), a `proc.lost` event with the counts is recorded for
the session (at most once a second, while it lasts). When a session records more
`proc.exec` events than its budget (`Budget.events_per_s`, `bytes_per_s`), the excess
is summarised in a `record.dropped` event with counts by kind, at least once a second;
the rules (`on_exec`) still see every exec.

The modules, each importing only those listed before it:

- `queueing`: one session's lanes, budget buckets and hold state (`Budget`); pure state.
- `delivery`: the worker pool that drains the queues, meters CPU and reports counts.
- `reader`: the proc connector's events, from the `procreader` child or in-process.
- `tracker`: `ProcessMonitor`: pids to sessions, scans and polling; wires the others.
"""

from .queueing import Budget
from .tracker import ProcessMonitor

__all__ = ["Budget", "ProcessMonitor"]
