"""The attacker and benign libraries, evaluated as command text and as process evidence."""

from __future__ import annotations

import shlex

import pytest

from sandbox.guard import CommandText, ProcessExec, at_least, build_engine
from sandbox.guard.packs import all_rules
from sandbox.jail.profile import load

from .attacks import ATTACKS, TEXT_ONLY, Attack
from .benign import ALL_BENIGN, BENIGN, EXPECTED, LIVE_SUBSET, LOOKALIKES

ENGINE = build_engine()
# The strict profile raises whole packs to kill/block: mentions must stay below block.
STRICT = build_engine(load("strict").guard)
PACKS = ("tunnels", "recon", "mining", "secrets", "tamper", "escape")


def _hit(verdicts: list, attack: Attack) -> bool:
    return any(v.pack == attack.pack and at_least(v.action, attack.action) for v in verdicts)


def test_library_is_large_and_covers_every_pack() -> None:
    """At least 60 attacks, every pack represented, every one cited."""
    assert len(ATTACKS) >= 60
    assert {a.pack for a in ATTACKS} == set(PACKS)
    assert all(a.citation for a in ATTACKS + TEXT_ONLY)
    assert sum(1 for a in ATTACKS if a.process) >= 2


def test_library_is_safe_to_replay() -> None:
    """No real metadata address or private range is a target in the runnable library."""
    for a in ATTACKS:
        assert "169.254.169.254" not in a.command
        assert "metadata.google.internal" not in a.command
        for private in ("10.0.", "192.168.", "172.16."):
            assert private not in a.command


@pytest.mark.parametrize("attack", ATTACKS + TEXT_ONLY, ids=lambda a: a.command[:60])
def test_attack_text_is_caught(attack: Attack) -> None:
    """Each attack's text gets a verdict of its pack with at least the expected action."""
    verdicts = ENGINE.evaluate(CommandText(attack.command))
    assert _hit(verdicts, attack), [(v.rule_id, v.action) for v in verdicts]


@pytest.mark.parametrize(
    "attack", [a for a in ATTACKS if a.process], ids=lambda a: " ".join(a.process or ())[:60]
)
def test_renamed_binary_caught_by_process_evidence(attack: Attack) -> None:
    """A renamed binary is caught from its exec argv alone (behaviour, not name)."""
    assert attack.process is not None
    ev = ProcessExec(argv=attack.process, exe=attack.process[0], pid=42, ppid=1, uid=1001,
                     comm="kworker")
    verdicts = ENGINE.evaluate(ev)
    assert _hit(verdicts, attack), [(v.rule_id, v.action) for v in verdicts]


@pytest.mark.parametrize("command", ALL_BENIGN)
def test_benign_never_blocked_or_killed(command: str) -> None:
    """Benign commands are never blocked or killed; only documented ones fire at all."""
    verdicts = ENGINE.evaluate(CommandText(command))
    assert not [v for v in verdicts if v.stops]
    fired = {v.rule_id for v in verdicts}
    expected = EXPECTED.get(command, ("", ""))[0]
    assert fired <= ({expected} if expected else set()), fired


@pytest.mark.parametrize("command", LOOKALIKES)
def test_lookalikes_never_blocked_under_strict(command: str) -> None:
    """Strict raises whole packs to kill/block; a command that only mentions a tool,
    an address or a scheme still stops nothing. (Strict does stop real execs such as
    `sudo` or `docker`: that is its choice, on actions.)"""
    stops = [(v.rule_id, v.action) for v in STRICT.evaluate(CommandText(command)) if v.stops]
    assert not stops


@pytest.mark.parametrize("command", ALL_BENIGN)
def test_benign_as_process_evidence_never_stops(command: str) -> None:
    """The same words as an exec's argv (what the process monitor sees) stop nothing."""
    try:
        argv = tuple(shlex.split(command))
    except ValueError:
        pytest.skip("not one argv")
    ev = ProcessExec(argv=argv, exe="/usr/bin/" + argv[0].rsplit("/", 1)[-1], pid=7, ppid=1)
    engines = (ENGINE, STRICT) if command in LOOKALIKES else (ENGINE,)
    for engine in engines:
        assert not [(v.rule_id, v.action) for v in engine.evaluate(ev) if v.stops]


def test_benign_library_is_broad() -> None:
    """The benign library spans installs, git, tests, builds and shell habits, and at
    least 40 lookalikes of what the guard blocks when it runs."""
    assert len(BENIGN) >= 50
    assert len(LOOKALIKES) >= 40
    assert len(set(ALL_BENIGN)) == len(ALL_BENIGN)
    assert len(LIVE_SUBSET) >= 15


def test_mention_rules_cannot_block() -> None:
    """A pack rule over command text (a mention) flags at most, even when a profile
    raises its pack to kill; rules that block or kill match what runs."""
    for rule in all_rules():
        if rule.command:
            assert at_least("flag", rule.action), rule.id
            assert rule.with_action("kill").action in ("record", "flag"), rule.id
            assert rule.invocation == () and rule.process is None, rule.id
    assert STRICT.rule("mining.stratum_text").action == "flag"
    assert STRICT.rule("mining.stratum_url").action == "kill"
