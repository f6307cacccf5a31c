"""The event store's rows, typed: what every backend (SQLite, PostgreSQL) returns.

Each row is a frozen dataclass (new code reads attributes: `row.state`, `row.seq`) that
is also a read-only `Mapping` over its fields, so `row["state"]`, `row.get("rule")`,
`dict(row)` and `{**row}` keep working for the code written against the dict rows the
store used to return. JSON: `json.dumps(dict(row))` (a Mapping is not a dict).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal, TypeVar

State = Literal["starting", "running", "exited", "killed", "failed"]
FinalState = Literal["exited", "killed", "failed"]
Severity = Literal["info", "warning", "alert", "critical"]
Action = Literal["record", "flag", "block", "kill"]
ControlAction = Literal["kill"]
RowKind = Literal["command", "event"]  # the two tables of a session's hash chain

_R = TypeVar("_R", bound="Row")


class Row(Mapping[str, Any]):
    """Mapping access over a dataclass's fields (those with `metadata={"key": False}`
    are attributes only)."""

    __slots__ = ()
    _keys: ClassVar[tuple[str, ...]] = ()
    _all: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: str) -> Any:
        if key in self._keys:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._keys)
        return f"{type(self).__name__}({body})"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the mapping fields (for JSON)."""
        return {k: getattr(self, k) for k in self._keys}

    @classmethod
    def from_db(cls: type[_R], values: Mapping[str, Any]) -> _R:
        """Build from a database row (extra columns are ignored)."""
        kw: dict[str, Any] = {k: values.get(k) for k in cls._all}
        return cls(**kw)


def _index(cls: type[Row]) -> None:
    """Note which of a row dataclass's fields the mapping shows."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    cls._all = tuple(f.name for f in fields)
    cls._keys = tuple(f.name for f in fields if f.metadata.get("key", True))


def _loads(text: Any) -> Any:
    if not isinstance(text, str | bytes):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class SessionRow(Row):
    """One session: its summary and the live counters the TUI reads."""

    id: str
    profile: str
    kind: str  # api | run | shell (adapters may add their own)
    state: State
    reason: str | None
    created: float
    ended: float | None
    exit_code: int | None
    owner_pid: int
    owner_start: str
    host: str
    user: str
    agent_uid: int | None
    workdir: str
    argv: list[Any]
    jail_name: str | None
    jail_pid: int | None
    resources: dict[str, Any]
    current_command: str | None
    n_commands: int
    n_events: int
    n_alerts: int
    n_denied: int
    max_severity: Severity
    cpu_percent: float | None
    mem_bytes: int | None
    gpu_mem_bytes: int | None
    gpu_util: float | None
    last_seq: int
    head_hash: str
    updated: float

    @classmethod
    def from_db(cls, values: Mapping[str, Any]) -> SessionRow:
        kw: dict[str, Any] = {k: values.get(k) for k in cls._all}
        argv, resources = _loads(kw["argv"]), _loads(kw["resources"] or "{}")
        kw["argv"] = argv if isinstance(argv, list) else []
        kw["resources"] = resources if isinstance(resources, dict) else {}
        return cls(**kw)

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")


@dataclasses.dataclass(frozen=True, eq=False)
class CommandRow(Row):
    """One recorded command (a link of the session's hash chain)."""

    id: int
    session_id: str
    seq: int
    text: str
    output: str
    output_raw: bytes | None
    exit_code: int | None
    started: float
    duration: float
    timed_out: int  # 0/1, as hashed
    truncated: int
    output_bytes: int
    source: str
    prev_hash: str
    hash: str
    host: str | None  # None: recorded before schema 3

    @classmethod
    def from_db(cls, values: Mapping[str, Any]) -> CommandRow:
        kw: dict[str, Any] = {k: values.get(k) for k in cls._all}
        if kw["output_raw"] is not None and not isinstance(kw["output_raw"], bytes):
            kw["output_raw"] = bytes(kw["output_raw"])  # a memoryview from some drivers
        return cls(**kw)

    def chain_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._all}


@dataclasses.dataclass(frozen=True, eq=False)
class EventRow(Row):
    """One recorded event. `detail` is decoded; `detail_json` is the exact recorded text
    (what the chain hashes), an attribute only."""

    id: int
    session_id: str
    seq: int
    ts: float
    kind: str
    severity: Severity
    action: Action
    rule: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    host: str | None
    detail_json: str = dataclasses.field(default="{}", metadata={"key": False}, repr=False)

    @classmethod
    def from_db(cls, values: Mapping[str, Any]) -> EventRow:
        kw: dict[str, Any] = {k: values.get(k) for k in cls._all}
        text = kw["detail"]
        decoded = _loads(text) if isinstance(text, str) else text
        kw["detail"] = decoded if isinstance(decoded, dict) else {}
        kw["detail_json"] = text if isinstance(text, str) else json.dumps(text, sort_keys=True,
                                                                           default=str)
        return cls(**kw)

    def chain_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._all if k != "detail_json"}
        out["detail"] = self.detail_json
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class ControlRow(Row):
    """A control request (a kill) from any process on any host."""

    id: int
    session_id: str
    ts: float
    action: ControlAction
    requested_by: str
    handled: float | None
    host: str | None


@dataclasses.dataclass(frozen=True)
class EventCursor:
    """Where a reader of `Store.events_after` is: past every event up to `id`, plus (in
    PostgreSQL) the commit-order watermark of that read: `xmin`, the oldest transaction
    still running then (a row it writes may have a lower id than rows already seen), and
    `seen`, the ids of rows from such transactions the reader has already had."""

    id: int = 0
    xmin: int | None = None
    seen: frozenset[int] = frozenset()


for _cls in (SessionRow, CommandRow, EventRow, ControlRow):
    _index(_cls)

ChainRow = tuple[RowKind, CommandRow | EventRow]


def as_dicts(rows: list[Any]) -> list[dict[str, Any]]:
    """Rows as plain dicts (for json.dumps)."""
    return [r.to_dict() if isinstance(r, Row) else dict(r) for r in rows]


__all__ = ["Action", "ChainRow", "CommandRow", "ControlAction", "ControlRow", "EventCursor",
           "EventRow",
           "FinalState", "Row", "RowKind", "SessionRow", "Severity", "State", "as_dicts",
           ]
