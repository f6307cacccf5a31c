"""Agent-controlled text made safe for the operator's terminal, and storable in SQLite.

Everything a human view prints (command text, output, process argv, kill reasons, rule
evidence) went through the agent's hands. `visible()` renders every C0/C1 control
character, DEL, the bidi overrides and undecodable bytes as plain, visible text, so an
`ESC[2J`, an OSC 0/2 title, an OSC 52 clipboard write or an OSC 8 link reaches the
operator as `␛[2J`, `␛]52;…` and so on: shown, never acted on. JSON outputs do not use it:
they stay exact (json escapes controls itself).

`storable()` turns any `str` (lone surrogates from a non-UTF-8 argv, NULs) into text that
SQLite stores whole: surrogate-escaped bytes become `\\xNN`, NUL becomes `␀`.
"""

from __future__ import annotations

import re

ESC_PICTURE = "\u241b"  # ␛
NUL_PICTURE = "\u2400"  # ␀
NEWLINE_MARK = "\u23ce"  # ⏎, a newline in one-line views

# Bidi embeddings/overrides/isolates and line/paragraph separators: they reorder or
# break what the operator reads ("Trojan Source"), so they are shown by code point.
_INVISIBLE_FORMAT = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029, 0x200E,
                     0x200F, 0x061C, 0xFEFF}


def _one(ch: str, *, multiline: bool) -> str:
    o = ord(ch)
    if o < 0x20:
        if multiline and ch in "\n\t":
            return ch
        if ch == "\n":
            return NEWLINE_MARK
        if o == 0x1B:
            return ESC_PICTURE
        return chr(0x2400 + o)  # the Unicode control pictures: ␀ ␇ ␈ ␉ ␍ ...
    if o == 0x7F:
        return "\u2421"  # ␡
    if 0x80 <= o <= 0x9F:
        return f"\\x{o:02x}"
    if 0xDC80 <= o <= 0xDCFF:  # a byte surrogate-escaped from non-UTF-8 input
        return f"\\x{o - 0xDC00:02x}"
    if 0xD800 <= o <= 0xDFFF or o in _INVISIBLE_FORMAT:
        return f"\\u{o:04x}"
    return ch


_NEEDS = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff"
    + "".join(re.escape(chr(c)) for c in sorted(_INVISIBLE_FORMAT)) + "]"
)


def visible(text: object, *, multiline: bool = False) -> str:
    """`text` with every control character shown, never interpreted by a terminal.

    One-line (the default): a newline becomes `⏎` and a tab `␉`. `multiline=True` (whole
    outputs) keeps `\\n` and `\\t`, and a `\\r\\n` line end becomes `\\n`; a lone `\\r` (which
    would let later text overwrite a line) is still shown as `␍`.
    """
    s = "" if text is None else str(text)
    if _NEEDS.search(s) is None:
        return s
    if multiline:
        s = s.replace("\r\n", "\n")
    return _NEEDS.sub(lambda m: _one(m.group(), multiline=multiline), s)


def storable(text: str) -> str:
    """`text` as valid UTF-8 with no NUL: what SQLite keeps whole and `length()` counts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join(
            f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
            else f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c
            for c in text
        )
    return text.replace("\x00", NUL_PICTURE) if "\x00" in text else text


def raw_bytes(text: str) -> bytes:
    """The bytes a `str` stands for (surrogate-escaped bytes restored, NUL kept)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")
