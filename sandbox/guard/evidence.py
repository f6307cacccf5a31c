"""Evidence: what the rules look at, as small frozen dataclasses.

Seven kinds, one per producer:

    CommandText      the text of a command, before the shell runs it (shell / API)
    ProcessExec      one exec seen from outside the jail (process monitor)
    NetworkAttempt   one connection attempt, allowed or denied (egress gateway)
    ScanEvent        the gateway's verdict that a session is sweeping hosts or ports
    DnsQuery         one query to the allowlisting resolver (or a tunnel suspicion)
    ResourceSample   CPU / memory / pids / GPU use, averaged over a window (monitors)
    TamperSignal     the recorder noticed forged or missing shell markers, or the exec
                     monitor lost events (proc.lost)

`from_event` turns a stored event (the dicts `events.Emit` producers write, or store rows
whose `detail` is still JSON text) into evidence, so the same rules run live and over a
recorded session. Events the guard itself writes (`guard.verdict`, `honeytoken.touched`)
give `None`, so a verdict can never feed back into the rules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CommandText:
    """A command line as typed or sent by the agent, before it runs."""

    text: str


# The recorder's own shell (session.py starts it, API mode with --noediting; firejail
# execs it): not the agent's hookless shell. Only the session's first exec of this argv is
# exempt (the guard part marks it `recorder`): the agent can run nothing before it, and
# the same argv from a script later is the hookless shell it looks like.
RECORDER_SHELL = ("bash", "--noprofile", "--norc", "--noediting", "-i")
RECORDER_SHELLS = frozenset({RECORDER_SHELL, ("bash", "--noprofile", "--norc", "-i")})


@dataclass(frozen=True)
class ProcessExec:
    """One exec in the session's process tree, as the monitor saw it from outside."""

    argv: tuple[str, ...]
    exe: str = ""
    pid: int = 0
    ppid: int = 0
    uid: int = -1
    comm: str = ""
    argv_truncated: bool = False  # argv was over the monitor's cap: head and tail only
    # The session's own recorder bash (its first exec of that argv, marked by the guard
    # part from outside): the one `bash --noprofile --norc -i` that is not hookless.
    recorder: bool = False

    def names(self) -> set[str]:
        """Basenames this process goes by: exe, comm and argv[0] (they differ when renamed)."""
        out = {os.path.basename(self.exe), self.comm}
        if self.argv:
            out.add(os.path.basename(self.argv[0]))
        return {n for n in out if n}

    def command_line(self) -> str:
        """argv joined with spaces, argv[0] cut to its basename (so `^nc\\b` works)."""
        if not self.argv:
            return os.path.basename(self.exe)
        return " ".join([os.path.basename(self.argv[0]), *self.argv[1:]])


@dataclass(frozen=True)
class NetworkAttempt:
    """One outbound connection attempt through the egress gateway."""

    dst_ip: str
    dst_port: int
    protocol: str = ""  # what the gateway sniffed: tls, http, ssh, stratum, unknown
    name: str = ""  # TLS SNI / HTTP Host, when there was one
    verdict: str = "deny"  # "allow" or "deny"
    reason: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    payload: bytes = b""  # first bytes sent, when the gateway hands them over (not stored)


@dataclass(frozen=True)
class ScanEvent:
    """The gateway saw one session reach many distinct targets in a short window
    (`kind` "burst"), or a few control-plane ports of one address (`kind`
    "control_plane": Docker, kubelet, kube-apiserver, etcd, Elasticsearch, Redis)."""

    distinct_targets: int
    ports: tuple[int, ...] = ()
    window_s: float = 0.0
    kind: str = "burst"
    hosts: tuple[str, ...] = ()  # a sample of the addresses


@dataclass(frozen=True)
class DnsQuery:
    """One DNS question, or (verdict "tunnel") the resolver's suspicion of DNS tunnelling."""

    name: str
    qtype: str = ""
    verdict: str = ""  # "allow", "deny" or "tunnel"
    reason: str = ""


@dataclass(frozen=True)
class ResourceSample:
    """Resource use averaged over `window_s` seconds (0 = one instantaneous sample).

    `source` is the event kind it came from (resource.sample, resource.breach, gpu.sample,
    gpu.breach, gpu.unauthorized, gpu.orphan) so rules can tell a breach from a sample.
    """

    cpu_percent: float = 0.0
    mem_bytes: int = 0
    pids: int = 0
    gpu_util: float = 0.0
    gpu_mem_bytes: int = 0
    window_s: float = 0.0
    source: str = "resource.sample"
    gpu: str = ""
    limit: str = ""  # for breaches: which limit was crossed
    reason: str = ""  # and how (oom_kill, pids_max, shm, cpu_saturated, ...)


@dataclass(frozen=True)
class TamperSignal:
    """The recorder noticed tampering: kind is marker_forged, marker_missing or
    proc_lost (exec events dropped before the rules saw them)."""

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


Evidence = (
    CommandText | ProcessExec | NetworkAttempt | ScanEvent | DnsQuery | ResourceSample
    | TamperSignal
)

EVIDENCE_TYPES: dict[str, type] = {
    "command": CommandText,
    "process": ProcessExec,
    "network": NetworkAttempt,
    "scan": ScanEvent,
    "dns": DnsQuery,
    "sample": ResourceSample,
    "tamper": TamperSignal,
}
_TYPE_NAMES = {cls: name for name, cls in EVIDENCE_TYPES.items()}


def type_name(evidence: Evidence) -> str:
    """The short name of an evidence kind: command, process, network, scan, dns, ..."""
    return _TYPE_NAMES[type(evidence)]


def to_dict(evidence: Evidence) -> dict[str, Any]:
    """Plain, JSON-able data for the verdict event (payload bytes cut to a short preview)."""
    data = asdict(evidence)
    for key, value in list(data.items()):
        if isinstance(value, bytes):
            data[key] = value[:256].decode("utf-8", "replace")
        elif isinstance(value, tuple):
            data[key] = list(value)
        elif isinstance(value, Mapping):
            data[key] = dict(value)
    data["type"] = type_name(evidence)
    return data


def _num(detail: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = detail.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            return float(value) if value is not None else default
        except (TypeError, ValueError):
            return default
    return float(value)


def _int(detail: Mapping[str, Any], key: str, default: int = 0) -> int:
    return int(_num(detail, key, float(default)))


def _str(detail: Mapping[str, Any], key: str) -> str:
    value = detail.get(key)
    return "" if value is None else str(value)


def from_event(event: Mapping[str, Any]) -> Evidence | None:
    """Evidence from an event dict (`{"kind": ..., "detail": {...}}`), or None if none."""
    kind = str(event.get("kind", ""))
    raw = event.get("detail") or {}
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, Mapping):
        return None
    d: Mapping[str, Any] = raw
    if kind == "net.attempt":
        return NetworkAttempt(
            dst_ip=_str(d, "dst_ip"), dst_port=_int(d, "dst_port"),
            protocol=_str(d, "protocol"), name=_str(d, "name"),
            verdict=_str(d, "verdict") or "deny", reason=_str(d, "reason"),
            bytes_up=_int(d, "bytes_up"), bytes_down=_int(d, "bytes_down"),
            payload=_str(d, "first_bytes").encode("latin-1", errors="replace"),
        )
    if kind == "net.scan":
        ports = d.get("ports") or []
        hosts = d.get("sample_hosts") or []
        return ScanEvent(
            distinct_targets=_int(d, "distinct_targets"),
            ports=tuple(int(p) for p in ports if isinstance(p, int | str) and str(p).isdigit()),
            window_s=_num(d, "window_s"),
            # Events recorded before kinds existed were all bursts.
            kind=_str(d, "kind") or "burst",
            hosts=tuple(str(h) for h in hosts[:10]) if isinstance(hosts, list) else (),
        )
    if kind == "dns.query":
        return DnsQuery(name=_str(d, "name"), qtype=_str(d, "qtype"), verdict=_str(d, "verdict"))
    if kind == "dns.tunnel":
        return DnsQuery(name=_str(d, "name"), verdict="tunnel", reason=_str(d, "reason"))
    if kind == "proc.exec":
        argv = d.get("argv") or []
        if isinstance(argv, str):
            argv = argv.split()
        exe = _str(d, "exe")
        return ProcessExec(
            argv=tuple(str(a) for a in argv), exe=exe, pid=_int(d, "pid"),
            ppid=_int(d, "ppid"), uid=_int(d, "uid", -1),
            comm=_str(d, "comm") or os.path.basename(exe),
            argv_truncated=d.get("argv_truncated") is True,
            recorder=d.get("recorder") is True,
        )
    if kind == "proc.lost":
        return TamperSignal(kind="proc_lost", detail=dict(d))
    if kind in ("resource.sample", "resource.breach"):
        return ResourceSample(
            cpu_percent=_num(d, "cpu_percent"), mem_bytes=_int(d, "mem_bytes"),
            pids=_int(d, "pids"), window_s=_num(d, "window_s"), source=kind,
            limit=_str(d, "limit"), reason=_str(d, "reason"),
        )
    if kind.startswith("gpu."):
        return ResourceSample(
            gpu_util=_num(d, "util"), gpu_mem_bytes=_int(d, "mem_bytes"),
            window_s=_num(d, "window_s"), source=kind, gpu=_str(d, "gpu"),
        )
    if kind in ("shell.marker_forged", "shell.marker_missing", "shell.recorder_hooks"):
        return TamperSignal(kind=kind.removeprefix("shell."), detail=dict(d))
    return None
