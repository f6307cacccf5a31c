"""The shell word lexer: command text in, words, operators, redirections and heredocs out.

The bottom of the guard's command parsing (`invocations` walks what this yields; the
`programs` tables say what each program does with its words). It reads text the way bash
would split it, well enough to tell what a command line runs: quotes removed, `$'...'`
decoded, `$(...)`/backticks/`<(...)` collected as scripts of their own, `${IFS}` read as a
blank. It never runs or expands anything but `{a,b}` braces and the variables a script
itself assigned (`expand`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_REDIR = re.compile(r"&?(?:>>|>&|>\||<>|<&|<<<|<<-|<<|>|<)")
# `NAME=value` (or `NAME+=value`) as a word: an assignment, not a program name.
NAME_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\+?=)(.*)$", re.S)
_BRACE_WORD = re.compile(r"^([^{}]*)\{([^{}\s]*,[^{}\s]*)\}([^{}]*)$")
# A quoted argument with spaces is one word: given to a program that is not a shell or an
# interpreter (`gh issue create --body "curl 169.254.169.254"`, `ssh host 'cat x'`) it is
# data, so its blanks are shown as visible marks that `\s` does not match; shells and
# interpreters get it back as it was (their code runs).
_OPAQUE = str.maketrans({" ": "\u2423", "\t": "\u21e5", "\n": "\u21b5"})
CLEAR = str.maketrans({"\u2423": " ", "\u21e5": "\t", "\u21b5": "\n"})
_BLANK = re.compile(r"\s")


def opaque(word: str) -> str:
    """The word with its blanks shown as marks (one opaque argument), when it has any."""
    return word.translate(_OPAQUE) if _BLANK.search(word) else word


def clear(words: Sequence[str]) -> list[str]:
    """The words with their blanks back (`opaque` undone): text a program will run."""
    return [w.translate(CLEAR) for w in words]


def _ansi_c_decode(body: str) -> str:
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except (UnicodeDecodeError, ValueError):
        return body


def _closing(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the `close` matching the `open_` before i (quotes respected)."""
    depth = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "'":
            j = text.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if ch == open_:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


class Lexer:
    """A small shell tokenizer: words (quotes removed), operators, redirections, heredocs.

    Command and process substitutions found anywhere are collected in `subs` (to be
    parsed as scripts of their own); the word keeps their text.
    """

    def __init__(self, text: str) -> None:
        self.text = text.replace("${IFS}", " ").replace("$IFS", " ")
        self.subs: list[str] = []
        self.tokens: list[tuple[str, str]] = []  # ("w"|"op"|"redir"|"doc", text)

    def run(self) -> list[tuple[str, str]]:
        t = self.text
        i, n = 0, len(t)
        word: list[str] = []
        in_word = False
        quoted = False
        pending_docs: list[tuple[str, bool]] = []  # (delimiter, strip tabs)

        def end_word() -> None:
            nonlocal in_word, quoted
            if in_word:
                w = "".join(word)
                if self.tokens and self.tokens[-1][0] == "redir" and \
                        self.tokens[-1][1].endswith(("<<", "<<-")):
                    pending_docs.append((w, self.tokens[-1][1].endswith("-")))
                self.tokens.append(("q" if quoted else "w", w))
            word.clear()
            in_word = quoted = False

        while i < n:
            ch = t[i]
            if ch == "\n":
                end_word()
                self.tokens.append(("op", ";"))
                i += 1
                for delim, tabs in pending_docs:
                    body: list[str] = []
                    while i < n:
                        j = t.find("\n", i)
                        line = t[i:] if j < 0 else t[i:j]
                        i = n if j < 0 else j + 1
                        if (line.lstrip("\t") if tabs else line) == delim:
                            break
                        body.append(line)
                    self.tokens.append(("doc", "\n".join(body)))
                pending_docs.clear()
                continue
            if ch in " \t\r":
                end_word()
                i += 1
                continue
            if ch == "#" and not in_word:
                j = t.find("\n", i)
                i = n if j < 0 else j
                continue
            if ch == "\\":
                if i + 1 < n and t[i + 1] == "\n":
                    i += 2
                    continue
                word.append(t[i + 1] if i + 1 < n else "")
                in_word = True
                i += 2
                continue
            if ch == "'":
                j = t.find("'", i + 1)
                j = n if j < 0 else j
                word.append(t[i + 1:j])
                in_word = quoted = True
                i = j + 1
                continue
            if ch == "$" and t.startswith("$'", i):
                j = i + 2
                while j < n and t[j] != "'":
                    j += 2 if t[j] == "\\" else 1
                word.append(_ansi_c_decode(t[i + 2:j]))
                in_word = quoted = True
                i = j + 1
                continue
            if ch == '"':
                j = i + 1
                buf: list[str] = []
                while j < n and t[j] != '"':
                    if t[j] == "\\" and j + 1 < n:
                        nxt = t[j + 1]
                        buf.append(nxt if nxt in '"\\$`\n' else "\\" + nxt)
                        j += 2
                        continue
                    if t.startswith("$(", j) and not t.startswith("$((", j):
                        k = _closing(t, j + 2, "(", ")")
                        self.subs.append(t[j + 2:k - 1])
                        buf.append(t[j:k])
                        j = k
                        continue
                    if t[j] == "`":
                        k = t.find("`", j + 1)
                        k = n if k < 0 else k
                        self.subs.append(t[j + 1:k])
                        buf.append(t[j:k + 1])
                        j = k + 1
                        continue
                    buf.append(t[j])
                    j += 1
                word.append("".join(buf))
                in_word = quoted = True
                i = j + 1
                continue
            if ch == "$" and t.startswith("$((", i):
                k = _closing(t, i + 3, "(", ")")
                k = _closing(t, k, "(", ")") if k < n and t[k - 1] == ")" else k
                word.append(t[i:k])
                in_word = True
                i = k
                continue
            if (ch == "$" and t.startswith("$(", i)) or (ch in "<>" and t.startswith("(", i + 1)):
                k = _closing(t, i + 2, "(", ")")
                self.subs.append(t[i + 2:k - 1])
                word.append(t[i:k])
                in_word = True
                i = k
                continue
            if ch == "`":
                k = t.find("`", i + 1)
                k = n if k < 0 else k
                self.subs.append(t[i + 1:k])
                word.append(t[i:k + 1])
                in_word = True
                i = k + 1
                continue
            if ch in "<>" or (ch == "&" and i + 1 < n and t[i + 1] == ">"):
                prefix = "".join(word) if in_word and "".join(word).isdigit() else ""
                if prefix:
                    word.clear()
                    in_word = False
                else:
                    end_word()
                m = _REDIR.match(t, i)
                op = m.group(0) if m else ch
                self.tokens.append(("redir", prefix + op))
                i += len(op)
                continue
            if ch in ";&|()":
                end_word()
                two = t[i:i + 2]
                if two in ("&&", "||", ";;", "|&", ";&"):
                    self.tokens.append(("op", two if two != ";;" else ";"))
                    i += 2
                else:
                    self.tokens.append(("op", ch))
                    i += 1
                continue
            word.append(ch)
            in_word = True
            i += 1
        end_word()
        return self.tokens


def brace_expand(word: str) -> list[str]:
    """`pre{a,b}post` as bash expands it (one level, no `$` inside); else the word."""
    m = _BRACE_WORD.match(word)
    if not m or "$" in word:
        return [word]
    pre, body, post = m.groups()
    return [pre + part + post for part in body.split(",")]


def expand(word: str, env: dict[str, str]) -> str:
    """`$NAME` / `${NAME}` replaced by what the script assigned (three rounds at most)."""
    if "$" not in word or not env:
        return word
    for _ in range(3):
        before = word
        for name, value in env.items():
            word = re.sub(r"\$\{" + name + r"\}|\$" + name + r"(?![A-Za-z0-9_])",
                          value.replace("\\", "\\\\"), word)
        if word == before:
            break
    return word

