"""Command text normalisation: the forms of one command line that text rules look at.

Text rules are best-effort. A shell has endless ways to spell a command (quotes inside
words, variables, encodings, interpreters), so `variants` undoes the cheap, common tricks:

- ANSI-C strings (`$'\\x6e\\x63'`), `${IFS}`, quotes and backslashes inside words
  (`n''c`, `\\nc`, `"n"c`) and runs of whitespace;
- simple assignments on the same line (`a=n; b=c; $a$b -e ...`), also `export`;
- brace lists (`{nc,-e,/bin/sh}`) and `rev`-ersed strings;
- the bodies of quoted strings on their own (`bash -c '...'`, `python -c '...'`,
  `perl -e '...'`, `eval "..."`), so rules anchored at a command start match inside them;
- payloads that are decoded on the spot: base64 (`echo ... | base64 -d | sh`,
  `b64decode(...)`), hex (`xxd -r -p`, `bytes.fromhex`) and `\\xNN` escapes.

Anything cleverer (a script written to a file and run later, a binary renamed to
`kworker`, a payload fetched over the network) is what process and network evidence is
for: the exec's argv and the gateway's protocol sniffing see the behaviour, not the text.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections import deque
from collections.abc import Iterator

MAX_VARIANTS = 24
_MAX_DEPTH = 3
# Bounded work per text, whatever the agent sends: every step below is at most linear in
# these sizes (the exec monitor calls this for every exec of every session).
MAX_TEXT = 65536
"""Characters of one text the rules see at all; the rest is cut (the caller says so)."""
MAX_NORMALIZE = 16384
"""Characters of a text that are normalised and decoded (longer texts: the head)."""
MAX_VARIANT_CHARS = 4 * MAX_NORMALIZE
"""All variants of one text together, in characters."""
MAX_NAMES = 32
"""Shell variables expanded per text."""
MAX_PAYLOADS = 16
"""Encoded payloads decoded per text and encoding."""
WINDOW = 2048
"""Rules search long texts in windows of this many characters (see `windows`)."""
OVERLAP = 512
"""Consecutive windows share this many characters: a match up to this long is never cut."""

_ANSI_C = re.compile(r"\$'((?:[^'\\]|\\.)*)'")
_IFS = re.compile(r"\$\{IFS\}|\$IFS\b")
_ASSIGN = re.compile(
    r"(?:^|[;&|\s(])(?:export\s+|local\s+|declare\s+(?:-\w+\s+)?)?([A-Za-z_][A-Za-z0-9_]*)="
    r"([^\s;&|()]*)"
)
_BRACES = re.compile(r"\{([^{}\s,]*(?:,[^{}\s,]*)+)\}")
_QUOTED = re.compile(r"'([^']*)'|\"((?:[^\"\\]|\\.)*)\"")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){8,}")
_XESC = re.compile(r"(?:\\x[0-9a-fA-F]{2}){2,}")
_SPACE = re.compile(r"\s+")


def _ansi_c(match: re.Match[str]) -> str:
    body = match.group(1)
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except (UnicodeDecodeError, ValueError):
        return body


def _strip_quoting(text: str) -> str:
    """Drop quote characters and word-internal backslashes; keep the characters quoted."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(" " if nxt == "\n" else nxt)
            i += 2
            continue
        if ch not in "'\"":
            out.append(ch)
        i += 1
    return "".join(out)


def _expand_vars(text: str) -> str:
    assigned: dict[str, str] = {}
    for m in _ASSIGN.finditer(text):
        if m.group(1) not in assigned and len(assigned) >= MAX_NAMES:
            break
        assigned[m.group(1)] = m.group(2).strip("'\"")
    if not assigned:
        return text
    names = "|".join(re.escape(n) for n in sorted(assigned, key=len, reverse=True))
    pattern = re.compile(r"\$\{(" + names + r")\}|\$(" + names + r")(?![A-Za-z0-9_])")
    for _ in range(3):
        before = text
        text = pattern.sub(lambda m: assigned[m.group(1) or m.group(2)], text)
        if text == before or len(text) > MAX_NORMALIZE * 2:
            break
    return text[:MAX_NORMALIZE * 2]


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text:
        return None
    good = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return text if good / len(text) >= 0.9 else None


def _decode_b64(token: str) -> str | None:
    token = token.rstrip("=")
    padded = token + "=" * (-len(token) % 4)
    try:
        if "-" in token or "_" in token:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable(raw)


def _first(found: Iterator[re.Match[str]]) -> list[str]:
    return [m.group(0) for m in itertools.islice(found, MAX_PAYLOADS)]


def _decoded_payloads(text: str) -> list[str]:
    low = text.lower()
    out: list[str] = []
    if "base64" in low or "b64" in low or "openssl" in low:
        for token in _first(_B64.finditer(text)):
            decoded = _decode_b64(token)
            if decoded:
                out.append(decoded)
    if "xxd" in low or "fromhex" in low or "unhexlify" in low or "hex" in low:
        for token in _first(_HEX.finditer(text)):
            decoded = _printable(bytes.fromhex(token))
            if decoded:
                out.append(decoded)
    for token in _first(_XESC.finditer(text)):
        decoded = _printable(bytes.fromhex(token.replace("\\x", "")))
        if decoded:
            out.append(decoded)
    if re.search(r"\|\s*rev\b", text):
        for m in itertools.islice(_QUOTED.finditer(text), MAX_PAYLOADS):
            out.append((m.group(1) or m.group(2) or "")[::-1])
        words = (w for w in text.split() if len(w) > 4)
        out.extend(w[::-1] for w in itertools.islice(words, MAX_PAYLOADS))
    return out


def normalize(text: str) -> str:
    """One canonical spelling: ANSI-C decoded, quotes and backslashes gone, vars expanded."""
    text = _ANSI_C.sub(_ansi_c, text)
    text = _IFS.sub(" ", text)
    text = _strip_quoting(text)
    text = _expand_vars(text)
    text = _BRACES.sub(lambda m: " ".join(m.group(1).split(",")), text)
    return _SPACE.sub(" ", text).strip()


def variants(text: str) -> list[str]:
    """The raw text, its normal form, quoted bodies and decoded payloads (deduplicated).

    Bounded whatever the input: the raw text is cut to `MAX_TEXT`, only the first
    `MAX_NORMALIZE` characters of each text are normalised and decoded, and all variants
    together stay under `MAX_VARIANT_CHARS` (the raw text is always the first).
    """
    seen: dict[str, None] = {}
    budget = MAX_VARIANT_CHARS
    queue: deque[tuple[str, int]] = deque([(text[:MAX_TEXT], 0)])
    while queue and len(seen) < MAX_VARIANTS:
        current, depth = queue.popleft()
        if current in seen or not current.strip() or (seen and len(current) > budget):
            continue
        seen[current] = None
        budget -= len(current)
        head = current[:MAX_NORMALIZE]
        norm = normalize(head)
        if norm not in seen and len(norm) <= budget:
            seen[norm] = None
            budget -= len(norm)
        if depth >= _MAX_DEPTH or budget <= 0:
            continue
        inner = [m.group(1) if m.group(1) is not None else m.group(2) for m in
                 itertools.islice(_QUOTED.finditer(_ANSI_C.sub(_ansi_c, head)), MAX_PAYLOADS)]
        for candidate in [*inner, *_decoded_payloads(head), *_decoded_payloads(norm)]:
            if candidate.strip() and candidate not in seen:
                queue.append((candidate, depth + 1))
    return list(seen)[:MAX_VARIANTS]


def windows(text: str, size: int = WINDOW, overlap: int = OVERLAP) -> list[str]:
    """`text` cut into overlapping pieces of at most about `size` characters, so that one
    regex search costs at most a window's worth of work (backtracking patterns are
    quadratic in the length they scan), and the rule engine can give up the GIL in
    between. Short texts come back whole.

    Cuts fall on whitespace where there is some: every window after the first starts
    with the whitespace character before its first word (so `^` and the `(?:^|\\s)` style
    anchors of the packs behave as in the whole text) and ends before whitespace (so `$`
    behaves as a word end). A match longer than `overlap` may straddle two windows and be
    missed: long argv is best-effort, and it is marked cut in the event anyway.
    Identical windows are searched once (a flood of repeated bytes costs one window).
    """
    if len(text) <= size:
        return [text]
    out: dict[str, None] = {}
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = _last_space(text, start + size // 2, end)
            end = cut if cut > start else end
        out[text[start:end]] = None
        if end >= len(text):
            break
        nxt = max(start + 1, end - overlap)
        ws = _last_space(text, nxt - overlap // 2, nxt + 1)
        start = ws if ws > start else nxt
    return list(out)


def _last_space(text: str, lo: int, hi: int) -> int:
    """The index of the last whitespace character in text[lo:hi], or -1."""
    for i in range(min(hi, len(text)) - 1, max(lo, 0) - 1, -1):
        if text[i].isspace():
            return i
    return -1
