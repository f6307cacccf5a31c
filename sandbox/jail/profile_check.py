"""A profile table checked against the schema, and built into the frozen dataclasses.

Generic over the dataclasses in `profile`: it reads their fields and type hints, so a new
key needs no code here. What a section adds beyond types it declares itself, as class
variables: `NOT_IN_FILES` (fields a file may not set, e.g. the profile's own name) and
`MINIMUM` (the smallest value a numeric key accepts). Errors name the file, the key and
what is allowed there.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal

from ..errors import ProfileError


def _check_minimums(values: dict[str, Any], minimum: dict[str, float], where: str,
                    file: str) -> None:
    for key, value in values.items():
        low = minimum.get(key)
        if low is not None and value < low:
            need = ("0 (no limit) or more" if low == 0 else
                    "more than 0" if isinstance(low, float) else f"at least {low:g}")
            raise ProfileError(f"{file}: {where}.{key} = {value!r} is not allowed: it must be "
                               f"{need}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ProfileError(f"{where}: {value!r} is not allowed; use one of {_type_name(tp)}")
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(f"{where}: expected a number, got {type(value).__name__}")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ProfileError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProfileError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileError(f"{where}: expected a table, got {type(value).__name__}")
        return {k: _check_value(v, args[1], f"{where}.{k}") for k, v in value.items()}
    raise ProfileError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _section_type(tp: Any) -> type | None:
    if isinstance(tp, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp if isinstance(tp, type) and is_dataclass(tp) else None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A profile dataclass's resolved annotations: fixed for the process, and resolving
    them (`typing.get_type_hints` evaluates each string) was ~0.5 ms a profile load."""
    return typing.get_type_hints(cls)


def validate_table(data: dict[str, Any], cls: type, where: str, file: str) -> dict[str, Any]:
    """`data` (a TOML table for `cls`) checked and normalised (ints to floats where a
    float is wanted); ProfileError naming `file` and the key on the first problem."""
    hints = _hints(cls)
    allowed = {f.name for f in fields(cls)} - getattr(cls, "NOT_IN_FILES", frozenset())
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in allowed:
            raise ProfileError(
                f"{file}: unknown key {name!r}; allowed here: {', '.join(sorted(allowed))}"
            )
        section = _section_type(hints[key])
        if section is not None:
            if not isinstance(value, dict):
                raise ProfileError(f"{file}: {name!r} must be a table ([{name}])")
            out[key] = validate_table(value, section, name, file)
            minimum = getattr(section, "MINIMUM", None)
            if minimum:
                _check_minimums(out[key], minimum, name, file)
        else:
            try:
                out[key] = _check_value(value, hints[key], name)
            except ProfileError as e:
                raise ProfileError(f"{file}: {e}") from None
    return out


def build(cls: type, data: dict[str, Any]) -> Any:
    """The `cls` instance for a checked table (sections built recursively)."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        section = _section_type(hints[key])
        kwargs[key] = build(section, value) if section is not None else value
    return cls(**kwargs)
