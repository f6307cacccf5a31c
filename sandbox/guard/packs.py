"""The built-in rule packs: `packs/<name>.toml`, shipped as package data.

Each file holds `description = "..."` and a `[[rules]]` array. Rule ids start with the
pack name (`tunnels.ssh_forward`), so an id says where a rule lives.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

from ..errors import ProfileError
from .rules import Rule, parse_rule

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
    for rule in rules:
        if not rule.id.startswith(name + "."):  # pragma: no cover - shipped data
            raise ProfileError(f"{where}: rule id {rule.id!r} must start with {name + '.'!r}")
    return rules


def all_rules() -> tuple[Rule, ...]:
    """Every built-in rule of every pack."""
    return tuple(rule for name in PACKS for rule in load_pack(name))
