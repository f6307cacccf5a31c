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
import re

MAX_VARIANTS = 24
_MAX_DEPTH = 3

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
    for name, value in _ASSIGN.findall(text):
        assigned[name] = value.strip("'\"")
    if not assigned:
        return text
    for _ in range(3):
        before = text
        for name, value in assigned.items():
            pattern = re.compile(r"\$\{" + name + r"\}|\$" + name + r"(?![A-Za-z0-9_])")
            text = pattern.sub(value.replace("\\", "\\\\"), text)
        if text == before:
            break
    return text


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


def _decoded_payloads(text: str) -> list[str]:
    low = text.lower()
    out: list[str] = []
    if "base64" in low or "b64" in low or "openssl" in low:
        for token in _B64.findall(text):
            decoded = _decode_b64(token)
            if decoded:
                out.append(decoded)
    if "xxd" in low or "fromhex" in low or "unhexlify" in low or "hex" in low:
        for token in _HEX.findall(text):
            decoded = _printable(bytes.fromhex(token))
            if decoded:
                out.append(decoded)
    for token in _XESC.findall(text):
        decoded = _printable(bytes.fromhex(token.replace("\\x", "")))
        if decoded:
            out.append(decoded)
    if re.search(r"\|\s*rev\b", text):
        for a, b in _QUOTED.findall(text):
            out.append((a or b)[::-1])
        for word in text.split():
            if len(word) > 4:
                out.append(word[::-1])
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
    """The raw text, its normal form, quoted bodies and decoded payloads (deduplicated)."""
    seen: dict[str, None] = {}
    queue: list[tuple[str, int]] = [(text, 0)]
    while queue and len(seen) < MAX_VARIANTS:
        current, depth = queue.pop(0)
        if current in seen or not current.strip():
            continue
        seen[current] = None
        norm = normalize(current)
        if norm not in seen:
            seen[norm] = None
        if depth >= _MAX_DEPTH:
            continue
        inner = [a or b for a, b in _QUOTED.findall(_ANSI_C.sub(_ansi_c, current))]
        for candidate in [*inner, *_decoded_payloads(current), *_decoded_payloads(norm)]:
            if candidate.strip() and candidate not in seen:
                queue.append((candidate, depth + 1))
    return list(seen)[:MAX_VARIANTS]
