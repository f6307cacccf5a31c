"""Rules: what to look for in each kind of evidence, and what to do when it is found.

A rule is data (the built-in packs are TOML files next to this module, profile rules are
TOML tables in `[[guard.rules]]`), with one matcher per evidence kind it cares about:

    id, description, action (record|flag|block|kill)       required
    severity, attack (ATT&CK ids), source (citation), pack optional
    command = [regex, ...]       command text (all normalised variants) and process argv
    process = {exe = [basename, ...], argv = [regex, ...]}  both must hold when both given
    network = {protocol, port, verdict, name, dst}           all given conditions must hold
    scan    = {min_targets, min_ports}
    dns     = {name, qtype, verdict}
    sample  = {source, cpu_percent, mem_bytes, pids, gpu_util, gpu_mem_bytes, min_window_s}
    tamper  = {kind = [...]}

A rule fires when any of its matchers matches. Regexes are Python `re`, case-sensitive
unless they say `(?i)`. `command` regexes also run over a process's argv (argv[0] cut to
its basename): a command started by a program, not typed, is still seen.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ProfileError
from .actions import ACTIONS, DEFAULT_SEVERITY, SEVERITIES
from .evidence import (
    CommandText,
    DnsQuery,
    Evidence,
    NetworkAttempt,
    ProcessExec,
    ResourceSample,
    ScanEvent,
    TamperSignal,
)
from .honeytokens import HoneytokenMatch

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _snippet(text: str, match: re.Match[str]) -> str:
    start, end = match.span()
    piece = text[max(0, start - 20):min(len(text), end + 20)]
    return piece if len(piece) <= 200 else piece[:197] + "..."


def search_any(patterns: Sequence[re.Pattern[str]], texts: Sequence[str]) -> str | None:
    """The text around the first match of any pattern in any text, or None."""
    for text in texts:
        for pattern in patterns:
            m = pattern.search(text)
            if m:
                return _snippet(text, m)
    return None


@dataclass(frozen=True)
class ProcessMatch:
    """Matches an exec by the names it goes by and/or its argv."""

    exe: frozenset[str] = frozenset()
    argv: tuple[re.Pattern[str], ...] = ()

    def match(self, ev: ProcessExec, argv_variants: Sequence[str]) -> str | None:
        why = []
        if self.exe:
            hit = ev.names() & self.exe
            if not hit:
                return None
            why.append("exe " + ",".join(sorted(hit)))
        if self.argv:
            found = search_any(self.argv, argv_variants)
            if found is None:
                return None
            why.append(found)
        return "; ".join(why) or None


@dataclass(frozen=True)
class NetworkMatch:
    """Matches a gateway connection attempt; every given condition must hold."""

    protocol: frozenset[str] = frozenset()
    port: frozenset[int] = frozenset()
    verdict: frozenset[str] = frozenset()
    name: tuple[re.Pattern[str], ...] = ()
    dst: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def match(self, ev: NetworkAttempt) -> str | None:
        if self.protocol and ev.protocol.lower() not in self.protocol:
            return None
        if self.port and ev.dst_port not in self.port:
            return None
        if self.verdict and ev.verdict not in self.verdict:
            return None
        if self.name and search_any(self.name, [ev.name]) is None:
            return None
        if self.dst:
            try:
                ip = ipaddress.ip_address(ev.dst_ip)
            except ValueError:
                return None
            if not any(ip in net for net in self.dst):
                return None
        target = f"{ev.name or ev.dst_ip}:{ev.dst_port}"
        return f"{ev.protocol or 'unknown'} to {target} ({ev.verdict})"


@dataclass(frozen=True)
class ScanMatch:
    """Matches the gateway's scan events above a size."""

    min_targets: int = 1
    min_ports: int = 0

    def match(self, ev: ScanEvent) -> str | None:
        if ev.distinct_targets < self.min_targets or len(ev.ports) < self.min_ports:
            return None
        return f"{ev.distinct_targets} targets, {len(ev.ports)} ports in {ev.window_s:g}s"


@dataclass(frozen=True)
class DnsMatch:
    """Matches DNS questions by name, type and resolver verdict."""

    name: tuple[re.Pattern[str], ...] = ()
    qtype: frozenset[str] = frozenset()
    verdict: frozenset[str] = frozenset()

    def match(self, ev: DnsQuery) -> str | None:
        if self.qtype and ev.qtype.upper() not in self.qtype:
            return None
        if self.verdict and ev.verdict not in self.verdict:
            return None
        if self.name and search_any(self.name, [ev.name.rstrip(".").lower()]) is None:
            return None
        return f"{ev.qtype or 'query'} {ev.name} ({ev.verdict or 'seen'})"


_SAMPLE_FIELDS = ("cpu_percent", "mem_bytes", "pids", "gpu_util", "gpu_mem_bytes")


@dataclass(frozen=True)
class SampleMatch:
    """Matches resource samples at or over thresholds, held for at least min_window_s."""

    source: frozenset[str] = frozenset()
    thresholds: tuple[tuple[str, float], ...] = ()
    min_window_s: float = 0.0

    def match(self, ev: ResourceSample) -> str | None:
        if self.source and ev.source not in self.source:
            return None
        if ev.window_s < self.min_window_s:
            return None
        parts = []
        for name, minimum in self.thresholds:
            value = float(getattr(ev, name))
            if value < minimum:
                return None
            parts.append(f"{name}={value:g}")
        parts.append(f"over {ev.window_s:g}s")
        return f"{ev.source}: " + " ".join(parts)


@dataclass(frozen=True)
class TamperMatch:
    """Matches recorder tamper signals by kind."""

    kind: frozenset[str] = frozenset()

    def match(self, ev: TamperSignal) -> str | None:
        if self.kind and ev.kind not in self.kind:
            return None
        return ev.kind


@dataclass(frozen=True)
class Rule:
    """One detection rule. `severity` None means: derived from the action."""

    id: str
    pack: str
    description: str
    action: str
    severity: str | None = None
    attack: tuple[str, ...] = ()
    source: str = ""
    command: tuple[re.Pattern[str], ...] = ()
    process: ProcessMatch | None = None
    network: NetworkMatch | None = None
    scan: ScanMatch | None = None
    dns: DnsMatch | None = None
    sample: SampleMatch | None = None
    tamper: TamperMatch | None = None
    honeytokens: HoneytokenMatch | None = None
    event_kind: str = "guard.verdict"  # the event a verdict becomes

    @property
    def effective_severity(self) -> str:
        return self.severity or DEFAULT_SEVERITY[self.action]

    def with_action(self, action: str) -> Rule:
        """The same rule with another action (its severity follows the new action)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        return replace(self, action=action, severity=None)

    def match(
        self, evidence: Evidence, texts: Sequence[str], argv_texts: Sequence[str]
    ) -> str | None:
        """Why this rule matches the evidence (a short snippet), or None.

        `texts`: normalised variants of command text; `argv_texts`: of a process's argv.
        """
        if self.honeytokens is not None:
            why = self.honeytokens.match(
                evidence, argv_texts if isinstance(evidence, ProcessExec) else texts)
            if why:
                return why
        if isinstance(evidence, CommandText):
            return search_any(self.command, texts) if self.command else None
        if isinstance(evidence, ProcessExec):
            if self.process is not None:
                why = self.process.match(evidence, argv_texts)
                if why:
                    return why
            return search_any(self.command, argv_texts) if self.command else None
        if isinstance(evidence, NetworkAttempt):
            return self.network.match(evidence) if self.network else None
        if isinstance(evidence, ScanEvent):
            return self.scan.match(evidence) if self.scan else None
        if isinstance(evidence, DnsQuery):
            return self.dns.match(evidence) if self.dns else None
        if isinstance(evidence, ResourceSample):
            return self.sample.match(evidence) if self.sample else None
        if isinstance(evidence, TamperSignal):
            return self.tamper.match(evidence) if self.tamper else None
        return None  # pragma: no cover


# -- parsing and validation ------------------------------------------------------------

_RULE_KEYS = {
    "id", "pack", "description", "action", "severity", "attack", "source",
    "command", "process", "network", "scan", "dns", "sample", "tamper",
}
_MATCHER_KEYS = {
    "process": {"exe", "argv"},
    "network": {"protocol", "port", "verdict", "name", "dst"},
    "scan": {"min_targets", "min_ports"},
    "dns": {"name", "qtype", "verdict"},
    "sample": {"source", "min_window_s", *_SAMPLE_FIELDS},
    "tamper": {"kind"},
}


def _fail(where: str, message: str) -> ProfileError:
    return ProfileError(f"{where}: {message}")


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(where, f"unknown key {key!r}; allowed here: {', '.join(sorted(allowed))}")


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "expected a list of strings")
    return list(value)


def _regexes(value: Any, where: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for i, text in enumerate(_str_list(value, where)):
        try:
            out.append(re.compile(text))
        except re.error as e:
            raise _fail(f"{where}[{i}]", f"invalid regex {text!r}: {e}") from e
    return tuple(out)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {type(value).__name__}")
    return float(value)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data[key]
    if not isinstance(value, Mapping):
        raise _fail(f"{where}.{key}", "expected a table")
    _check_keys(value, _MATCHER_KEYS[key], f"{where}.{key}")
    if not value:
        raise _fail(f"{where}.{key}", "empty matcher matches nothing; remove it or add a condition")
    return value


def _ports(value: Any, where: str) -> frozenset[int]:
    if isinstance(value, int):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value
    ):
        raise _fail(where, "expected a list of port numbers (1-65535)")
    return frozenset(value)


def _networks(
    value: Any, where: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for text in _str_list(value, where):
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise _fail(where, f"not an address or CIDR: {text!r}") from e
    return tuple(out)


def parse_rule(data: Mapping[str, Any], *, pack: str = "custom", where: str = "rule") -> Rule:
    """Validate one rule table and build it; ProfileError names the bad key and the rule."""
    if not isinstance(data, Mapping):
        raise _fail(where, "a rule must be a table")
    rid = data.get("id")
    if isinstance(rid, str):
        where = f"{where} {rid!r}"
    _check_keys(data, _RULE_KEYS, where)
    for key in ("id", "description", "action"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(where, f"missing or empty {key!r} (a string)")
    rule_id = str(data["id"])
    if not _ID.match(rule_id):
        raise _fail(where, "id must be lower case letters, digits, '.', '_' or '-'")
    action = str(data["action"])
    if action not in ACTIONS:
        raise _fail(where, f"action {action!r} is not allowed; use one of {', '.join(ACTIONS)}")
    severity = data.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise _fail(where, f"severity {severity!r} is not allowed; use one of "
                           f"{', '.join(SEVERITIES)}")
    pack_name = data.get("pack", pack)
    if not isinstance(pack_name, str) or not _ID.match(pack_name):
        raise _fail(where, "pack must be a lower-case name")
    for key in ("source",):
        if key in data and not isinstance(data[key], str):
            raise _fail(where, f"{key!r} must be a string")

    kwargs: dict[str, Any] = {}
    if "command" in data:
        kwargs["command"] = _regexes(data["command"], f"{where}.command")
    if "process" in data:
        t = _table(data, "process", where)
        kwargs["process"] = ProcessMatch(
            exe=frozenset(_str_list(t.get("exe", []), f"{where}.process.exe")),
            argv=_regexes(t.get("argv", []), f"{where}.process.argv"),
        )
    if "network" in data:
        t = _table(data, "network", where)
        kwargs["network"] = NetworkMatch(
            protocol=frozenset(p.lower() for p in _str_list(t.get("protocol", []),
                                                             f"{where}.network.protocol")),
            port=_ports(t.get("port", []), f"{where}.network.port"),
            verdict=frozenset(_str_list(t.get("verdict", []), f"{where}.network.verdict")),
            name=_regexes(t.get("name", []), f"{where}.network.name"),
            dst=_networks(t.get("dst", []), f"{where}.network.dst"),
        )
    if "scan" in data:
        t = _table(data, "scan", where)
        kwargs["scan"] = ScanMatch(
            min_targets=int(_number(t.get("min_targets", 1), f"{where}.scan.min_targets")),
            min_ports=int(_number(t.get("min_ports", 0), f"{where}.scan.min_ports")),
        )
    if "dns" in data:
        t = _table(data, "dns", where)
        kwargs["dns"] = DnsMatch(
            name=_regexes(t.get("name", []), f"{where}.dns.name"),
            qtype=frozenset(q.upper() for q in _str_list(t.get("qtype", []),
                                                         f"{where}.dns.qtype")),
            verdict=frozenset(_str_list(t.get("verdict", []), f"{where}.dns.verdict")),
        )
    if "sample" in data:
        t = _table(data, "sample", where)
        kwargs["sample"] = SampleMatch(
            source=frozenset(_str_list(t.get("source", []), f"{where}.sample.source")),
            thresholds=tuple(
                (name, _number(t[name], f"{where}.sample.{name}"))
                for name in _SAMPLE_FIELDS if name in t
            ),
            min_window_s=_number(t.get("min_window_s", 0), f"{where}.sample.min_window_s"),
        )
    if "tamper" in data:
        t = _table(data, "tamper", where)
        kwargs["tamper"] = TamperMatch(
            kind=frozenset(_str_list(t.get("kind", []), f"{where}.tamper.kind")))
    if not kwargs:
        raise _fail(where, "a rule needs at least one matcher: "
                           "command, process, network, scan, dns, sample or tamper")
    return Rule(
        id=rule_id, pack=pack_name, description=str(data["description"]), action=action,
        severity=severity, attack=tuple(_str_list(data.get("attack", []), f"{where}.attack")),
        source=str(data.get("source", "")), **kwargs,
    )
