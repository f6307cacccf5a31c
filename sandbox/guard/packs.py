"""The built-in rule packs: `packs/<name>.toml`, shipped as package data.

Each file holds `description = "..."` and a `[[rules]]` array. Rule ids start with the
pack name (`tunnels.ssh_forward`), so an id says where a rule lives.

A pack rule that looks at command text with `command` (what the text mentions) has no
other matcher and flags at most; it is capped there, so `[guard.actions] tunnels = "kill"`
does not turn `grep -rn 'ssh -R' docs/` into a kill. What a command runs is matched with
`invocation` (see `invocations`), and those rules may block or kill.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import replace
from importlib import resources

from ..errors import ProfileError
from .actions import rank
from .rule import Rule, parse_rule

PACKS: tuple[str, ...] = ("tunnels", "recon", "mining", "secrets", "tamper", "escape")


@functools.cache
def load_pack(name: str) -> tuple[Rule, ...]:
    """The rules of one built-in pack (parsed once per process)."""
    if name not in PACKS:
        raise ProfileError(f"unknown guard pack {name!r}; available: {', '.join(PACKS)}")
    ref = resources.files(__package__).joinpath("packs", f"{name}.toml")
    where = f"guard pack {name}"
    try:
        data = tomllib.loads(ref.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:  # pragma: no cover - shipped data
        raise ProfileError(f"{where}: cannot read {ref}: {e}") from e
    rules = tuple(
        parse_rule(r, pack=name, where=f"{where} rules[{i}]")
        for i, r in enumerate(data.get("rules", []))
    )
    out = []
    for rule in rules:
        if not rule.id.startswith(name + "."):  # pragma: no cover - shipped data
            raise ProfileError(f"{where}: rule id {rule.id!r} must start with {name + '.'!r}")
        if rule.command:
            _check_mention_rule(rule, where)
            rule = replace(rule, cap="flag")
        out.append(rule)
    return tuple(out)


def _check_mention_rule(rule: Rule, where: str) -> None:
    """Text mentions flag at most, and never share a rule with action matchers."""
    others = [k for k in ("invocation", "process", "network", "scan", "dns", "sample",
                          "tamper") if getattr(rule, k)]
    if others:  # pragma: no cover - shipped data
        raise ProfileError(f"{where}: rule {rule.id!r} mixes `command` (mentions) with "
                           f"{', '.join(others)}; split it in two")
    if rank(rule.action) > rank("flag"):  # pragma: no cover - shipped data
        raise ProfileError(f"{where}: rule {rule.id!r} would {rule.action} on a mention "
                           "in command text; use flag, or match what runs (`invocation`)")


def all_rules() -> tuple[Rule, ...]:
    """Every built-in rule of every pack."""
    return tuple(rule for name in PACKS for rule in load_pack(name))
