"""Fast exec: enter the jail once, fork many times (issue 20).

A per-command `firejail --join` re-reads firejail's configuration and re-applies the
jail every time (12-25 ms). Here one join, made when the session starts, runs a small
helper inside the jail that forks each command: it inherits everything the agent's shell
has (namespaces, seccomp filters, no capabilities, no-new-privs, cgroup, agent uid,
rlimits, the TIOCSTI filter), so nothing is re-applied per command and nothing can be
forgotten. The supervisor reaches it only over the socket that join inherited, never
over a path in the jail.

The helper is `sandbox-exec.c`, static, built once per host (`build`): on the host the
join execs it from a sealed memfd on its stdin (no path holds it), in an image from where
it is bound in read-only. A host without a C compiler gets `injail.py`, the same helper
in Python (same protocol, same checks), sent to the join's python3.

The helper shares the agent's uid, so its word is never the result:

- the command hands the supervisor its own pidfd before it execs (a byte on a socket
  made for it; the kernel attaches the sender's pidfd, SCM_PIDFD), and the kernel says
  whose child it is, whose uid and which cgroup (PIDFD_GET_INFO);
- its exit status is the kernel's (PIDFD_INFO_EXIT, once it is reaped), compared with the
  helper's claim: a claim that differs, a start the kernel does not confirm, or a helper
  that will not reap is a tamper alert, and the kernel's status is the result.

A helper that is dead, stopped, or not what the supervisor started is an alert and the
session falls back to the joined path for good (an `exec.fast_off` event says why);
where fast exec cannot work at all (a kernel without pidfd exit info; an image on a host
that cannot build the compiled helper) that is recorded once as info. The profile's
`[exec] fast` (on by default) decides.

Modules: `kernel` (pidfd info, SCM_PIDFD, /proc state, the support check), `helper`
(the join, its health, each command's vouched-for start), `proc` (a started command:
its status from the kernel, the `AsyncChild` face), `build` (the compiled helper's
cache), `sandbox-exec.c` (the helper), `injail` (the Python helper, run by the jail's
python3; standard library only).
"""

from __future__ import annotations

from . import build
from .helper import ExecRequest, Helper
from .kernel import PidInfo, pidfd_info, unsupported
from .proc import FastChild, FastProc

__all__ = ["ExecRequest", "FastChild", "FastProc", "Helper", "PidInfo", "build", "pidfd_info",
           "unsupported"]
