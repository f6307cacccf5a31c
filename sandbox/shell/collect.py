"""One API-mode command read off the PTY: wait for C, body until D, probe until its D.

`Collect` is a state machine over bytes; it does no I/O itself. At each end marker it
asks an `EndChecks` (the prober, `probe.Prober`) whether bash is still the recorded one
and sends the probe line through it; the forged, out-of-order and malformed markers it
meets become `RawResult.tamper`. The Protocol keeps the arrow one way: this module
never imports the prober or the Shell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from .capture import Capture
from .marker import FORGED, HOOK_ATTEMPT_RE, HOOKS, MARKER_RE, Marker, parse_d, partial_start

BACKGROUND_CAP = 65536  # bytes of between-command output kept per command


class EndChecks(Protocol):
    """What the reader asks at an end marker (see `probe.Prober` for what each means)."""

    def identity_problems(self) -> list[str]: ...

    def input_problems(self) -> list[str]: ...

    def idle_problems(self) -> list[str]: ...

    def send_probe(self) -> bytes:
        """Send a probe line with a fresh token; return the token."""
        ...


@dataclass
class RawResult:
    """One command as the shell saw it; the session turns it into a CommandResult."""

    output: bytes
    exit_code: int | None
    started: float
    duration: float
    timed_out: bool = False
    truncated: bool = False
    output_bytes: int = 0
    forged: list[bytes] = field(default_factory=list)
    shell_exited: bool = False
    # (event kind, detail) for each sign of tampering with the recorder
    tamper: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # output that arrived between commands (background jobs), capped
    background: bytes = b""
    background_bytes: int = 0


class Collect:
    """The state of one API command: wait for C, body until D, probe until its D."""

    def __init__(self, nonce: bytes, max_output: int, checks: EndChecks) -> None:
        self.checks = checks
        self.nonce = nonce
        self.cap = Capture(max_output)
        self.bg = Capture(BACKGROUND_CAP)
        self.forged: list[bytes] = []
        self.tamper: list[tuple[str, dict[str, Any]]] = []
        self.phase = "wait_c"  # -> body -> probe -> done
        self.c_num: int | None = None
        self.code: int | None = None
        self.end_num: int | None = None
        self.after = bytearray()  # bytes after the accepted end, not yet attributed
        self.tokens: set[bytes] = set()
        self.probe_c = False
        self.reprobe = False

    def flag(self, kind: str, why: str, **detail: Any) -> None:
        if not any(d.get("why") == why for _, d in self.tamper):
            self.tamper.append((kind, {"why": why, **detail}))

    def text(self, data: bytes) -> None:
        if not data:
            return
        if self.phase == "wait_c":
            self.bg.add(data)
        elif self.phase == "body":
            self.cap.add(data)
        else:
            self.after += data

    def feed(self, buf: bytes) -> bytes:
        """Consume markers and text from `buf`; return what is left (an incomplete
        marker, or everything after the probe's D once done)."""
        safe = partial_start(buf)
        pos = 0
        for m in MARKER_RE.finditer(buf, 0, safe):
            self.text(buf[pos:m.start()])
            pos = m.end()
            self.marker(m)
            if self.phase == "done":
                return buf[pos:]
        self.text(buf[pos:safe])
        return buf[safe:]

    def marker(self, m: re.Match[bytes]) -> None:
        kind, fields = m.group(1), m.group(2).split(b";")
        at = 1 if kind == b"D" else 0
        if len(fields) <= at or fields[at] != self.nonce:
            if m.group(0) not in self.forged:
                self.forged.append(m.group(0))
            self.text(m.group(0))
            return
        if kind == b"C":
            self.on_c(Marker(kind, fields, m.group(0)))
        elif kind == b"D":
            self.on_d(Marker(kind, fields, m.group(0)))

    def send_probe(self) -> None:
        self.tokens.add(self.checks.send_probe())
        self.probe_c = False

    def on_c(self, mk: Marker) -> None:
        if self.phase == "wait_c":
            self.phase = "body"
            self.c_num = mk.num(1)
        elif self.phase == "probe" and not self.probe_c and mk.num(1) == self.end_num:
            self.probe_c = True
            # Whatever came between the end and the probe line: background output.
            self.bg.add(bytes(self.after))
            self.after.clear()
        else:
            self.flag(FORGED, "a second start marker: the command printed the "
                      "recorder's markers", marker=mk.raw.decode(errors="replace"))
            self.text(mk.raw)

    def on_d(self, mk: Marker) -> None:
        code, num, token, problems = parse_d(mk.fields)
        if self.phase == "wait_c":
            self.flag(FORGED, "an end marker arrived before the command started: an "
                      "earlier command's end was forged", marker=mk.raw.decode(errors="replace"))
            return
        if num is None:  # not bash's (bash always prints its command number): output
            self.flag(FORGED, "a malformed end marker in the command's output",
                      marker=mk.raw.decode(errors="replace"))
            self.text(mk.raw)
            return
        for why in problems:
            self.flag(HOOKS, why)
        if self.phase == "body":
            if self.c_num is not None and num != self.c_num + 1:
                self.flag(FORGED, f"end marker number {num} does not follow start "
                          f"{self.c_num}", marker=mk.raw.decode(errors="replace"))
            self.code, self.end_num = code, num
            for why in (self.checks.identity_problems() + self.checks.input_problems()
                        + self.checks.idle_problems()):
                self.flag(HOOKS, why)
            self.phase = "probe"
            self.send_probe()
            return
        # probe phase
        if self.probe_c:
            if token not in self.tokens:
                self.flag(HOOKS, "the probe was not echoed: the recorder's probe variable "
                          "was tampered with")
            for why in self.checks.input_problems() + self.checks.idle_problems():
                self.flag(HOOKS, why)
            self.end_num = num
            self.phase = "done"
            return
        # A second D before the probe was read: the first end was printed by the command
        # itself. This one is bash's: the real exit code, and the output ran on to here.
        self.flag(FORGED, "a second end marker: the command printed a forged end "
                  "marker (its exit code and output before it are not the real ones)",
                  marker=mk.raw.decode(errors="replace"))
        self.cap.add(bytes(self.after))
        self.after.clear()
        self.code, self.end_num = code, num
        if self.reprobe:
            self.reprobe = False
            self.send_probe()

    def result(self, timed_out: bool, shell_exited: bool = False) -> RawResult:
        if self.phase == "probe" and not self.probe_c:
            self.cap.add(bytes(self.after))  # the command kept writing after its end
        out, truncated = self.cap.result()
        bg, _ = self.bg.result()
        code = self.code if self.phase in ("probe", "done") else None
        for part in (self.cap.head, self.cap.tail[-4096:]):
            if b"__sbx_" not in part and b"enable:" not in part:
                continue
            m = HOOK_ATTEMPT_RE.search(part)
            if m is not None:
                self.flag(HOOKS, "the command tried to change the recorder's hooks: "
                          + m.group(0).decode(errors="replace"))
        return RawResult(out, code, 0.0, 0.0, timed_out, truncated, self.cap.total,
                         self.forged, shell_exited, self.tamper, bg, self.bg.total)
