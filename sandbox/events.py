"""The event model shared by every part that produces evidence.

Producers (shell, network gateway and resolver, process monitor, GPU monitor, guard) never
touch the store directly: they get an `Emit` callable bound to their session, so they can
be tested with a plain list and the session decides what reaches the store and the rules.

Event kinds in use (`detail` keys in brackets):
- session.start / session.end / session.warning      [profile, reason, exit_code]
- command.blocked                                     [text, rule, message]
- shell.marker_forged / shell.marker_missing          [marker, command]
- shell.recorder_hooks  [check (what failed: hooks, image, fds, prompt read, input), command, seq]
- shell.background_output [output (up to 64 KiB), bytes, truncated, before_command]
- net.attempt  [dst_ip, dst_port, protocol (tls|http|ssh|mining|unknown|none), name,
                verdict ("allow"|"deny"), reason, bytes_up, bytes_down, duration, first_bytes]
- net.scan     [kind ("burst": many targets; "control_plane": a few control-plane ports
                of one address, with services and attempts), allowed_targets,
                distinct_targets, hosts, n_ports, ports (up to 50), sample_hosts, window_s]
- net.dropped  [counter values from nftables: udp, icmp, ipv6, other]
- dns.query    [name, qtype, verdict, answers]   dns.tunnel [name, reason]
- proc.exec    [pid, ppid, argv, exe, uid; argv_truncated + argv_bytes when cut to 16 KiB,
                argv_unknown when the process was gone before its argv could be read]
- proc.lost    [counts of exec events that could not be judged or recorded, by cause]
- record.dropped [counts by kind of events over the session's record budget, summarised]
- record.backpressure [holds, held_s, cpu_percent: the session was frozen until judged]
- resource.sample [cpu_percent, cpu_percent_now, mem_bytes, pids, window_s]
- resource.breach [limit, reason, value, max, message]
- resource.disk_full [path, quota_bytes, used_bytes, disk_mib]
- gpu.sample / gpu.breach / gpu.unauthorized / gpu.orphan  [gpu, pid, mem_bytes, util]
- guard.verdict [rule, pack, action, evidence, attack]  (rule decisions)
- honeytoken.touched [token, where]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Severity = str  # one of store.SEVERITIES: info < warning < alert < critical
Action = str  # one of store.ACTIONS: record < flag < block < kill


class Emit(Protocol):
    """Records one event for the session it is bound to."""

    def __call__(
        self,
        kind: str,
        detail: dict[str, Any],
        *,
        severity: str = "info",
        action: str = "record",
        rule: str | None = None,
    ) -> None: ...


class ListEmit:
    """An `Emit` that keeps events in a list: for tests and for users' own tests."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(
        self,
        kind: str,
        detail: dict[str, Any],
        *,
        severity: str = "info",
        action: str = "record",
        rule: str | None = None,
    ) -> None:
        self.events.append(
            {"kind": kind, "detail": detail, "severity": severity, "action": action, "rule": rule}
        )

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]


KillFn = Callable[[str], None]  # kill(reason): ends the session from a monitor thread
