"""The end-marker grammar: what our OSC 133 markers look like and what their fields mean.

Pure bytes in, values out (no I/O): the regexes that find a marker and a marker's
still-incomplete tail, the D marker's fields, the quoting of a command line for
`\\__sbx_run`, and the tamper kinds both readers (`collect` for API mode, `relay` for the
operator's terminal) report. The markers themselves are printed by `shell_rc.bash`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OSC = b"\x1b]133;"
MARKER_RE = re.compile(rb"\x1b\]133;([ACDEP]);([^\x07\x1b]{0,4096})\x07")
# A trailing piece of a marker that more bytes could still complete.
_PARTIAL_RE = re.compile(
    rb"\x1b(?:\](?:1(?:3(?:3(?:;(?:[ACDEP](?:;[^\x07\x1b]{0,4096})?)?)?)?)?)?)?")
# What a recorder-hook change attempt prints (bash's own error messages).
# (Setting PS1 or PROMPT_COMMAND fails too, but tools such as conda do it innocently.)
HOOK_ATTEMPT_RE = re.compile(
    rb"\b__sbx_\w+[:=][^\n]{0,40}?(?:readonly (?:function|variable)|cannot unset)"
    rb"|\benable: command not found"
)

# A command whose last simple command is `exit` / `logout` (not `echo exit`, `(exit 3)`).
_EXIT_RE = re.compile(r"(?:^|[;&|\n]|&&|\|\|)\s*(?:exit|logout)(?:\s+[-+]?\w+)?\s*;?\s*\Z")

# Tamper kinds (event kinds, see session.Session.run).
FORGED = "shell.marker_forged"
HOOKS = "shell.recorder_hooks"
MISSING = "shell.marker_missing"


def quote_ansi_c(text: str) -> str:
    """Quote `text` as bash $'...': every byte survives, control bytes as \\xHH."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def is_exit_command(command: str) -> bool:
    """True when `command` ends by running the shell's own `exit` or `logout`: then a
    missing end marker is expected, not a sign of tampering."""
    return _EXIT_RE.search(command) is not None


def partial_start(buf: bytes) -> int:
    """Where a trailing, still incomplete marker begins in `buf` (len(buf) if none).

    Only the last ESC can start one: a marker's body holds no ESC. Anything that can no
    longer become a marker is plain output, so a stray `ESC]133;` never stalls a reader.
    """
    j = buf.rfind(b"\x1b", max(0, len(buf) - 4200))
    if j < 0 or buf.find(b"\x07", j) >= 0:  # a BEL after it: complete, or not a marker
        return len(buf)
    return j if _PARTIAL_RE.fullmatch(buf, j) else len(buf)


def ours_re(nonce: bytes) -> re.Pattern[bytes]:
    """A C or D marker with our nonce: read after a probe's end, it means the command
    answered the probe itself. Compiled once per shell (`re`'s cache holds 512 patterns:
    with hundreds of sessions each command compiled its own again, ~0.3 ms)."""
    return re.compile(rb"\x1b\]133;[CD];(?:[^\x07\x1b;]*;)?" + re.escape(nonce))


def prompt_re(nonce: bytes) -> re.Pattern[bytes]:
    """The D marker of a prompt with our nonce (group 1: bash's command number)."""
    return re.compile(rb"\x1b\]133;D;[^\x07\x1b;]*;" + nonce + rb";([0-9]+);[^\x07\x1b]*\x07")


@dataclass
class Marker:
    """One of our markers (nonce checked by the caller)."""

    kind: bytes
    fields: list[bytes]
    raw: bytes

    def num(self, i: int) -> int | None:
        try:
            return int(self.fields[i])
        except (IndexError, ValueError):
            return None


def parse_d(fields: list[bytes]) -> tuple[int | None, int | None, bytes, list[str]]:
    """(exit code, command number, token, problems) from D's fields after the kind.

    Fields: code; nonce; number; token; $-; POSIXLY_CORRECT's attributes; BASHOPTS.
    """
    problems = []
    try:
        code: int | None = int(fields[0])
    except (IndexError, ValueError):
        code = None
        problems.append("the exit code in the end marker is not a number "
                        f"({fields[0][:40]!r}): prompt expansion was changed")
    try:
        num: int | None = int(fields[2])
    except (IndexError, ValueError):
        num = None
        problems.append("the end marker has no command number")
    token = fields[3] if len(fields) > 3 else b""
    dash = fields[4] if len(fields) > 4 else b""
    attrs = fields[5] if len(fields) > 5 else b""
    opts = fields[6] if len(fields) > 6 else b""
    if len(fields) < 7:
        problems.append("the end marker lacks the shell state fields")
    if b"T" in dash:
        problems.append("functrace (set -T) is on: a DEBUG trap runs inside the recorder")
    if b"extdebug" in opts:
        problems.append("extdebug is on: a DEBUG trap can skip or replace commands")
    if b"r" in attrs or b"n" in attrs:
        problems.append("POSIXLY_CORRECT or __sbx_s was made readonly or a nameref: the "
                        "recorder's eval or exit status can be faked")
    return code, num, token, problems


def c_text(fields: list[bytes]) -> str:
    """The command text a shell-mode C carries (fields: nonce; number; text)."""
    return b";".join(fields[2:]).decode(errors="replace")
