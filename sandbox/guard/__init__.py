"""Guardrails: rules over evidence that record, flag, block or kill.

    from sandbox.guard import CommandText, build_engine
    engine = build_engine(profile.guard, honeytokens=planted)
    verdicts = engine.evaluate(CommandText("ssh -R 8080:localhost:80 203.0.113.9"))

Modules, from the bottom up: `actions` (record < flag < block < kill), `evidence` (what
rules see), `normalize` (command-text variants against evasion), `lexer` (shell words),
`programs` (what programs do with their arguments), `invocations` (what a command line
runs), `honeytokens` (decoys), `matchers` (one per evidence kind), `rule` (Rule and its
TOML), `packs` (the built-in TOML packs), `engine` (Engine, Verdict, build_engine),
`sampling` (windowed samples).
"""

from .actions import ACTIONS, at_least, rank, stronger
from .actions import strongest as strongest_action
from .engine import (
    HONEYTOKEN_EXFIL,
    HONEYTOKEN_TOUCH,
    Engine,
    Verdict,
    block_message,
    build_engine,
    strongest,
)
from .evidence import (
    CommandText,
    DnsQuery,
    Evidence,
    NetworkAttempt,
    ProcessExec,
    ResourceSample,
    ScanEvent,
    TamperSignal,
    from_event,
)
from .honeytokens import Token, plant, scan
from .packs import PACKS, load_pack
from .rule import Rule, parse_rule
from .sampling import SampleWindow

__all__ = [
    "ACTIONS",
    "HONEYTOKEN_EXFIL",
    "HONEYTOKEN_TOUCH",
    "PACKS",
    "CommandText",
    "DnsQuery",
    "Engine",
    "Evidence",
    "NetworkAttempt",
    "ProcessExec",
    "ResourceSample",
    "Rule",
    "SampleWindow",
    "ScanEvent",
    "TamperSignal",
    "Token",
    "Verdict",
    "at_least",
    "block_message",
    "build_engine",
    "from_event",
    "load_pack",
    "parse_rule",
    "plant",
    "rank",
    "scan",
    "stronger",
    "strongest",
    "strongest_action",
]
