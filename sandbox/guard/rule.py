"""Rule: what to look for in each kind of evidence, what to do when found, and its TOML.

A rule is data (the built-in packs are TOML files next to this module, profile rules are
TOML tables in `[[guard.rules]]`), with one matcher per evidence kind it cares about:

    id, description, action (record|flag|block|kill)       required
    severity, attack (ATT&CK ids), source (citation), pack optional
    command = [regex, ...]       command text (all normalised variants) and process argv:
                                 what the text MENTIONS (grep patterns, echo, which ...)
    invocation = [regex, ...]    what the text or an exec RUNS: one string per simple
                                 command, program basename first (`invocations`)
    process = {exe = [basename, ...], argv = [regex, ...]}  both must hold when both given
    network = {protocol, port, verdict, name, dst, reason, payload}  all given must hold;
              or an array of such tables: any one of them
    scan    = {kind, min_targets, min_ports}   kind: burst (the default) or control_plane
    dns     = {name, qtype, verdict}
    sample  = {source, cpu_percent, mem_bytes, pids, gpu_util, gpu_mem_bytes, min_window_s}
    tamper  = {kind = [...]}
    egress_denied = true         with `invocation`: it matches only when a URL in the
                                 matched command names a host:port the session's egress
                                 policy does not allow (never when the engine has none)

A rule fires when any of its matchers matches. Regexes are Python `re`, case-sensitive
unless they say `(?i)`. `command` regexes also run over a process's argv (argv[0] cut to
its basename): a command started by a program, not typed, is still seen.

Mentions are not actions. `block` and `kill` are for what is done (an exec, a connection,
a read or write the command performs, a write to the recorder's hooks); a `command`
regex matches text that may only mention it (`grep -rn 'stratum+tcp' src/`, `which nc`,
`echo "use ssh -R" > notes.md`). So a built-in pack rule with a `command` matcher has
only that matcher and at most `flag`, and a `[guard.actions]` override cannot raise it
higher (`Rule.cap`). Rules that block or kill use `invocation`, `process`, `network`,
`scan`, `dns`, `sample` or `tamper`.

`parse_rule` turns one TOML table into a `Rule` (unknown keys, bad regexes, empty
matchers rejected with the key and the rule named); the matchers live in `matchers`,
what a command runs in `invocations`; `packs` and `engine` build on this module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ProfileError
from .actions import ACTIONS, DEFAULT_SEVERITY, SEVERITIES, rank
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
from .invocations import argv_invocations, invocations
from .matchers import (
    SAMPLE_FIELDS,
    DnsMatch,
    Egress,
    NetworkMatch,
    ProcessMatch,
    SampleMatch,
    ScanMatch,
    TamperMatch,
    search_any,
    snippet,
    url_targets,
)

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


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
    invocation: tuple[re.Pattern[str], ...] = ()
    cap: str = "kill"  # the strongest action overrides may give it (mentions: flag)
    egress_denied: bool = False  # invocation matches only toward a target egress denies

    @property
    def effective_severity(self) -> str:
        return self.severity or DEFAULT_SEVERITY[self.action]

    def with_action(self, action: str) -> Rule:
        """The same rule with another action (its severity follows the new action).

        Never above `cap`: a pack-wide `tunnels = "kill"` leaves the pack's mention rules
        at flag (their severity stays what the pack gave them).
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        if rank(action) > rank(self.cap):
            return replace(self, action=self.cap) if rank(self.action) < rank(self.cap) \
                else self
        return replace(self, action=action, severity=None)

    def match(
        self, evidence: Evidence, texts: Sequence[str], argv_texts: Sequence[str],
        egress: Egress | None = None,
    ) -> str | None:
        """Why this rule matches the evidence (a short snippet), or None.

        `texts`: normalised variants of command text; `argv_texts`: of a process's argv;
        `egress`: the session's egress policy, for `egress_denied` rules.
        """
        if self.honeytokens is not None:
            why = self.honeytokens.match(
                evidence, argv_texts if isinstance(evidence, ProcessExec) else texts)
            if why:
                return why
        if isinstance(evidence, CommandText):
            if self.invocation:
                why = self._invoked(invocations(evidence.text, texts), egress)
                if why:
                    return why
            return search_any(self.command, texts) if self.command else None
        if isinstance(evidence, ProcessExec):
            if self.process is not None:
                why = self.process.match(evidence, argv_texts)
                if why:
                    return why
            if self.invocation and not evidence.recorder:
                why = self._invoked(argv_invocations(evidence.argv), egress)
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

    def _invoked(self, invs: Sequence[str], egress: Egress | None) -> str | None:
        if not self.egress_denied:
            return search_any(self.invocation, invs)
        if egress is None:
            # No egress policy known (mode none, or an engine built without one): "not on
            # the allowlist" cannot be told from "allowed", so say nothing.
            return None
        for inv in invs:
            for pattern in self.invocation:
                m = pattern.search(inv)
                if not m:
                    continue
                denied = [f"{host}:{port}" for host, port in url_targets(inv)
                          if not egress(host, port)]
                if denied:
                    return f"{snippet(inv, m)} (egress does not allow {', '.join(denied[:3])})"
        return None


# -- parsing and validation ------------------------------------------------------------

_RULE_KEYS = {
    "id", "pack", "description", "action", "severity", "attack", "source",
    "command", "invocation", "process", "network", "scan", "dns", "sample", "tamper",
    "egress_denied",
}
_MATCHER_KEYS = {
    "process": {"exe", "argv"},
    "network": {"protocol", "port", "verdict", "name", "dst", "reason", "payload"},
    "scan": {"kind", "min_targets", "min_ports"},
    "dns": {"name", "qtype", "verdict"},
    "sample": {"source", "min_window_s", "reason", *SAMPLE_FIELDS},
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


def _network_match(value: Any, w: str) -> NetworkMatch:
    """One `network` table; `w` is where it is (`rule 'x'.network` or `...network[1]`)."""
    if not isinstance(value, Mapping):
        raise _fail(w, "expected a table")
    _check_keys(value, _MATCHER_KEYS["network"], w)
    if not value:
        raise _fail(w, "empty matcher matches nothing; remove it or add a condition")
    t = value
    return NetworkMatch(
        protocol=frozenset(p.lower() for p in _str_list(t.get("protocol", []),
                                                         f"{w}.protocol")),
        port=_ports(t.get("port", []), f"{w}.port"),
        verdict=frozenset(_str_list(t.get("verdict", []), f"{w}.verdict")),
        name=_regexes(t.get("name", []), f"{w}.name"),
        dst=_networks(t.get("dst", []), f"{w}.dst"),
        reason=_regexes(t.get("reason", []), f"{w}.reason"),
        payload=_regexes(t.get("payload", []), f"{w}.payload"),
    )


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
    if "invocation" in data:
        kwargs["invocation"] = _regexes(data["invocation"], f"{where}.invocation")
    if "process" in data:
        t = _table(data, "process", where)
        kwargs["process"] = ProcessMatch(
            exe=frozenset(_str_list(t.get("exe", []), f"{where}.process.exe")),
            argv=_regexes(t.get("argv", []), f"{where}.process.argv"),
        )
    if "network" in data:
        value = data["network"]
        if isinstance(value, list):
            if not value:
                raise _fail(f"{where}.network", "empty array matches nothing")
            kwargs["network"] = NetworkMatch(any_of=tuple(
                _network_match(t, f"{where}.network[{i}]") for i, t in enumerate(value)))
        else:
            kwargs["network"] = _network_match(value, f"{where}.network")
    if "scan" in data:
        t = _table(data, "scan", where)
        kwargs["scan"] = ScanMatch(
            min_targets=int(_number(t.get("min_targets", 1), f"{where}.scan.min_targets")),
            min_ports=int(_number(t.get("min_ports", 0), f"{where}.scan.min_ports")),
            kind=frozenset(_str_list(t.get("kind", []), f"{where}.scan.kind")),
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
                for name in SAMPLE_FIELDS if name in t
            ),
            min_window_s=_number(t.get("min_window_s", 0), f"{where}.sample.min_window_s"),
            reason=frozenset(_str_list(t.get("reason", []), f"{where}.sample.reason")),
        )
    if "tamper" in data:
        t = _table(data, "tamper", where)
        kwargs["tamper"] = TamperMatch(
            kind=frozenset(_str_list(t.get("kind", []), f"{where}.tamper.kind")))
    if not kwargs:
        raise _fail(where, "a rule needs at least one matcher: command, invocation, "
                           "process, network, scan, dns, sample or tamper")
    if "egress_denied" in data:
        if not isinstance(data["egress_denied"], bool):
            raise _fail(where, "'egress_denied' must be true or false")
        if data["egress_denied"] and "invocation" not in data:
            raise _fail(where, "'egress_denied' qualifies `invocation`; add one")
        kwargs["egress_denied"] = data["egress_denied"]
    return Rule(
        id=rule_id, pack=pack_name, description=str(data["description"]), action=action,
        severity=severity, attack=tuple(_str_list(data.get("attack", []), f"{where}.attack")),
        source=str(data.get("source", "")), **kwargs,
    )
