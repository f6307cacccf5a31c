"""The operator's terminal passed through to the jailed bash (`sandbox shell`).

pexpect's interact loop copies keys in and output out; `InteractiveParser` rides on its
filters and cuts the output stream into recorded commands by the C/D markers, reporting
what only a command could have printed as tampering. There is no probe round trip here
(the operator types, we cannot inject lines): the command numbers and the identity check
on each Enter are what keeps a forged row from passing unreported.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from typing import Any

from .capture import Capture
from .marker import FORGED, HOOKS, MARKER_RE, MISSING, Marker, c_text, parse_d, partial_start

OnCommand = Callable[[str, bytes, int | None, float, float], None]  # text, out, code, t0, s
OnTamper = Callable[[str, dict[str, Any]], None]  # kind, detail


def relay(child: Any, fd: int, first: bytes, parser: InteractiveParser) -> None:
    """Run the pass-through until the shell exits. `first` is what start-up read past
    the first prompt's marker (the prompt itself): parsed and shown before the loop."""
    parser.feed(first)
    with contextlib.suppress(OSError):
        os.write(1, first)  # the first prompt was read during start-up: show it
    os.set_blocking(fd, True)  # pexpect's interact loop expects a blocking fd
    child.interact(escape_character=None, output_filter=parser.feed,
                   input_filter=parser.typed)


class InteractiveParser:
    """Splits the interactive byte stream into commands using the C/D markers.

    Commands are the spans C(k) .. D(k+1) (bash's command number). A D with the number of
    the last one and no C before it is a re-prompt (an empty line, Ctrl-C). Anything else
    with the nonce (a second C, a D out of order, a D with no command, a malformed D) was
    printed by a command, and is reported through `on_tamper`, never recorded as a command.
    A forged D that looks right ends its command early; the real D that follows it is
    then out of order and reported, so a fake row never goes without an alert.
    """

    STALL_S = 3.0  # Enter at a prompt and no marker this long after: markers stopped

    def __init__(
        self,
        nonce: bytes,
        cap: int,
        on_command: OnCommand,
        on_tamper: OnTamper | None = None,
        identity_problems: Callable[[], list[str]] | None = None,
    ) -> None:
        self.nonce = nonce
        self.cap = cap
        self.on_command = on_command
        self.on_tamper = on_tamper
        self.identity_problems = identity_problems
        self.pending = b""
        self.capture: Capture | None = None
        self.started = 0.0
        self.c_num: int | None = None
        self.c_text = ""
        self.last_num: int | None = None
        self.enter_at = 0.0
        self.keys = 0  # Enter / Ctrl-C / Ctrl-D typed since the last C: re-prompts allowed
        self.reported: set[str] = set()

    def tamper(self, kind: str, why: str, **detail: Any) -> None:
        if self.on_tamper is not None:
            self.on_tamper(kind, {"why": why, **detail})

    def typed(self, data: bytes) -> bytes:
        """pexpect's input filter: note Enter at a prompt, and check that markers still
        come (a prompt whose hooks were removed prints none)."""
        now = time.monotonic()
        if self.enter_at and now - self.enter_at > self.STALL_S:
            self.enter_at = 0.0
            self._once(MISSING, "Enter at the prompt produced no marker: the shell's "
                       "prompt hooks no longer run (commands are not being recorded)")
        self.keys += sum(data.count(k) for k in (b"\r", b"\n", b"\x03", b"\x04"))
        if b"\r" in data or b"\n" in data:
            if not self.enter_at and self.capture is None:
                self.enter_at = now
            if self.identity_problems is not None:  # ~30 us a keypress
                for why in self.identity_problems():
                    self._once(HOOKS, why)
        return data

    def _once(self, kind: str, why: str) -> None:
        if why not in self.reported:
            self.reported.add(why)
            self.tamper(kind, why)

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        safe = partial_start(buf)
        self.pending = buf[safe:]
        pos = 0
        for m in MARKER_RE.finditer(buf, 0, safe):
            if self.capture is not None:
                self.capture.add(buf[pos:m.start()])
            pos = m.end()
            self._marker(m)
        if self.capture is not None:
            self.capture.add(buf[pos:safe])
        return data

    def _marker(self, m: re.Match[bytes]) -> None:
        kind, fields = m.group(1), m.group(2).split(b";")
        at = 1 if kind == b"D" else 0
        raw = m.group(0)
        if len(fields) <= at or fields[at] != self.nonce:
            self.tamper(FORGED, "a marker with a wrong nonce", marker=raw.decode(errors="replace"))
            if self.capture is not None:
                self.capture.add(raw)
            return
        self.enter_at = 0.0
        if kind == b"C":
            if self.capture is not None:
                self.tamper(FORGED, "a second start marker: a command printed the "
                            "recorder's markers", marker=raw.decode(errors="replace"))
                self.capture.add(raw)
                return
            self.capture = Capture(self.cap)
            self.started = time.time()
            self.keys = 0
            self.c_num = Marker(kind, fields, raw).num(1)
            self.c_text = c_text(fields)
        elif kind == b"D":
            self._on_d(fields, raw)

    def _on_d(self, fields: list[bytes], raw: bytes) -> None:
        code, num, _token, problems = parse_d(fields)
        if num is not None:  # a malformed D is not bash's: reported as forged below
            for why in problems:
                self.tamper(HOOKS, why)
        if self.capture is None:
            if num is not None and self.last_num is None:
                self.last_num = num  # the first prompt
                return
            if num is not None and num == self.last_num and self.keys > 0:
                self.keys -= 1  # a re-prompt: an empty line, Ctrl-C at the prompt
                return
            self.tamper(FORGED, "an end marker with no command (a second end for the same "
                        "command, or none ran): a command printed the recorder's markers",
                        marker=raw.decode(errors="replace"))
            if num is not None:
                self.last_num = num  # most likely bash's own, late: count from it
            return
        if num is None:
            self.tamper(FORGED, "a malformed end marker inside a command's output",
                        marker=raw.decode(errors="replace"))
            self.capture.add(raw)
            return
        if self.c_text.startswith("[history off]"):
            self.tamper(HOOKS, "history is off: the recorded command text may be stale")
        if self.c_num is None or num != self.c_num + 1 or (
                self.last_num is not None and num <= self.last_num):
            self.tamper(FORGED, f"end marker number {num} does not follow start "
                        f"{self.c_num}: a marker was forged", marker=raw.decode(errors="replace"))
        text = self.c_text
        out = self.capture.result()[0]
        self.capture = None
        self.last_num = num if self.last_num is None else max(num, self.last_num)
        self.on_command(text, out, code, self.started, time.time() - self.started)
