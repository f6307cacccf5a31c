"""The attacker and benign libraries, evaluated as command text and as process evidence."""

from __future__ import annotations

import pytest

from sandbox.guard import CommandText, ProcessExec, at_least, build_engine

from .attacks import ATTACKS, TEXT_ONLY, Attack
from .benign import BENIGN, EXPECTED

ENGINE = build_engine()
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


@pytest.mark.parametrize("command", BENIGN)
def test_benign_never_blocked_or_killed(command: str) -> None:
    """Benign commands are never blocked or killed; only documented ones fire at all."""
    verdicts = ENGINE.evaluate(CommandText(command))
    assert not [v for v in verdicts if v.stops]
    fired = {v.rule_id for v in verdicts}
    expected = EXPECTED.get(command, ("", ""))[0]
    assert fired <= ({expected} if expected else set()), fired


def test_benign_library_is_broad() -> None:
    """The benign library spans installs, git, tests, builds and shell habits."""
    assert len(BENIGN) >= 50
