r"""Invocations: what a command line actually runs, one string per simple command.

`command` regexes see every spelling of the text, so they also match text that only
*mentions* something (`grep -rn 'stratum+tcp' src/`, `which ssh`, `echo "use ssh -R"`).
`invocation` regexes see only what would run: one string per simple command, the
program's basename first, then its arguments and redirections. Wrappers (timeout, nice,
nohup, setsid, env, sudo, xargs, exec, command, strace...) are yielded whole and then
unwrapped; `sh -c SCRIPT`, `eval`, `su -c`, `watch`, `find -exec`, `$(...)`, backticks
and heredocs fed to a shell are parsed as scripts in turn. Arguments that are only text
(echo/printf's words, grep's pattern, the names given to which/man/type/apt-cache, a git
message) are dropped, redirections are kept (`echo 1 > /proc/sys/...` is a write).
Commands inside a loop body (for/while/until, xargs, parallel) are yielded a second time
prefixed with "loop: "; pipelines of two or more commands also as one string joined by
" | ". A quoted argument with blanks given to a program other than a shell or an
interpreter is one opaque word (its blanks shown as visible marks that `\s` does not
match). When a shell or interpreter runs text it did not get literally (a pipe into
`sh`, `bash -c "$(...)"`, `eval`, decoded payloads), every normalised variant of the text
is treated as a script too, and also kept whole, prefixed "payload: ".

Words come from `lexer`; what each program does with them (wrappers, `sh -c`,
text-only arguments) from `programs`. Results are cached per text and bounded
(`MAX_PARSE`, `_MAX_INVOCATIONS`, windows for long strings) so a hostile command
line costs the guard no more than a long benign one.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence

from .lexer import CLEAR, NAME_ASSIGN, Lexer, brace_expand, clear, expand, opaque
from .normalize import MAX_TEXT, WINDOW, windows
from .programs import INTERP, SHELLS, own_string, script_of, unwrap

MAX_PARSE = MAX_TEXT  # characters of one command text parsed for invocations (rest cut)
MAX_ARGV_PARSE = 16 * 1024  # characters of one exec's argv parsed (the monitor keeps 16 KiB)
_MAX_SCRIPT_DEPTH = 4
_MAX_INVOCATIONS = 512
PAYLOAD = "payload: "  # prefix of text a shell or interpreter runs that it did not get literally

_KEYWORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until",
                       "!", "{", "}", "time", "coproc", "function", "esac", "in", "[[", "]]"})
_DYNAMIC = re.compile(r"\$\(|`|b64decode|base64|fromhex|unhexlify|\bxxd\b|\brev\b|"
                      r"\bexec\s*\(|\beval\b|decode\s*\(|\bopenssl\s+(?:enc|base64)")


class _Invocations:
    """Collects the invocation strings of one evidence text (see the module docstring)."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.dynamic = False
        self.env: dict[str, str] = {}

    def add(self, text: str, loop: bool) -> None:
        if len(self.out) < _MAX_INVOCATIONS:
            self.out.append(text)
            if loop:
                self.out.append("loop: " + text)

    def script(self, text: str, depth: int, loop: bool = False) -> None:
        """Parse shell text and collect what it runs."""
        if depth > _MAX_SCRIPT_DEPTH or not text.strip():
            return
        lexer = Lexer(text[:MAX_PARSE])
        tokens = lexer.run()
        for sub in lexer.subs:
            self.script(sub, depth + 1, loop)
        pipeline: list[str] = []
        words: list[str] = []
        redirs: list[str] = []
        docs: list[str] = []
        loop_depth = 1 if loop else 0
        piped_in = False
        skip_list = False  # inside `for x in ...` / `case ... in`

        def finish(next_op: str) -> None:
            nonlocal piped_in, loop_depth
            while words and words[0] in _KEYWORDS:
                kw = words.pop(0)
                if kw == "do":
                    loop_depth += 1
                elif kw == "done":
                    loop_depth = max(0, loop_depth - 1)
            if words or redirs:
                inv = self.simple(words, redirs, docs, depth, loop_depth > 0,
                                  piped_in=piped_in)
                if inv:
                    pipeline.append(inv)
            if next_op in ("|", "|&"):
                piped_in = True
            else:
                if len(pipeline) > 1:
                    self.add(" | ".join(pipeline), loop_depth > 0)
                pipeline.clear()
                piped_in = False
            words.clear()
            redirs.clear()
            docs.clear()

        i = 0
        while i < len(tokens):
            kind, value = tokens[i]
            if kind == "op":
                if skip_list and value in (";",):
                    skip_list = False
                    i += 1
                    continue
                finish(value)
            elif kind == "redir":
                has_target = i + 1 < len(tokens) and tokens[i + 1][0] in ("w", "q")
                target = tokens[i + 1][1] if has_target else ""
                redirs.append(f"{value}{expand(target, self.env)}")
                i += 1 if has_target else 0
            elif kind == "doc":
                # The body belongs to the command before the newline: re-attach.
                if self.out and self._last_shell is not None:
                    self._doc_for_last(value, depth)
            else:
                if skip_list:
                    i += 1
                    continue
                if not words and value in ("for", "select", "case"):
                    skip_list = True
                    i += 1
                    continue
                if not words and value in ("do", "done"):
                    loop_depth += 1 if value == "do" else -1
                    loop_depth = max(0, loop_depth)
                    i += 1
                    continue
                value = expand(value, self.env)
                if kind == "w":  # unquoted: word splitting and brace expansion
                    for part in value.split() or [value]:
                        words.extend(brace_expand(part))
                else:
                    words.append(opaque(value))
            i += 1
        finish(";")

    _last_shell: tuple[str, bool] | None = None  # (program, loop) of the last <<-fed command

    def _doc_for_last(self, body: str, depth: int) -> None:
        assert self._last_shell is not None
        prog, loop = self._last_shell
        self._last_shell = None
        if prog in SHELLS:
            self.script(body, depth + 1, loop)
        else:  # an interpreter: its code is part of what it runs
            self.add(f"{prog} - {body}", loop)

    def simple(self, words: list[str], redirs: list[str], docs: list[str], depth: int,
               loop: bool, *, piped_in: bool = False) -> str:
        """Collect one simple command (and what it wraps); return its own string."""
        # Leading assignments: remembered for later words, and yielded on their own.
        k = 0
        while k < len(words) and NAME_ASSIGN.match(words[k]):
            m = NAME_ASSIGN.match(words[k])
            assert m is not None
            self.add(words[k], loop)
            self.env[m.group(1)] = m.group(3).translate(CLEAR)
            k += 1
        words = words[k:]
        if not words:
            if redirs:
                s = " ".join(redirs)
                self.add(s, loop)
                return s
            return ""
        return self.command(words, redirs, depth, loop, piped_in=piped_in)

    def command(self, words: list[str], redirs: list[str], depth: int, loop: bool, *,
                piped_in: bool = False) -> str:
        """Collect one command (program + arguments) and what it runs.

        A wrapper's string is the wrapper and its own options followed by the string of
        the command it runs, so text dropped there (echo's words) stays dropped. Returns
        the string of the innermost command (what a pipeline shows).
        """
        first = words[0].translate(CLEAR)
        prog = os.path.basename(first) or first
        args = words[1:]
        if prog in ("export", "declare", "local", "typeset", "readonly"):
            for a in args:
                m = NAME_ASSIGN.match(a)
                if m:
                    self.env[m.group(1)] = m.group(3).translate(CLEAR)
        inner = unwrap(prog, args)
        if inner is not None:
            inner_words, inner_loop = inner
            own_args = args[:len(args) - len(inner_words)] if inner_words else args
            if prog == "find":
                own_args = args[:next((j for j, a in enumerate(args) if a.startswith(
                    ("-exec", "-ok"))), len(args))]
            prefix = " ".join([prog, *own_args])
            if inner_words:
                inner_own = self.command(inner_words, redirs, depth, loop or inner_loop,
                                         piped_in=piped_in)
                self.add(prefix + " " + inner_own, loop)
                return inner_own  # a pipeline shows what runs: `env | curl`, `| bash`
            own = " ".join([prefix, *redirs])
            self.add(own, loop)
            return own
        script = script_of(prog, args)
        if script is not None:
            own_args = args[:args.index(script)] if script in args else []
            own = " ".join([prog, *own_args, *redirs])
            self.add(own, loop)
            script = script.translate(CLEAR)
            if _DYNAMIC.search(script):
                self.dynamic = True
            self.script(script, depth + 1, loop)
            return own
        if INTERP.match(prog):
            args = clear(args)  # the code is what runs
        own = own_string(prog, args, redirs)
        self.add(own, loop)
        if prog in SHELLS or INTERP.match(prog):
            for r in redirs:  # a here-string is what a shell or interpreter reads and runs
                m = re.match(r"\d*<<<(.*)", r, re.S)
                if m and prog in SHELLS:
                    self.script(m.group(1).translate(CLEAR), depth + 1, loop)
                elif m:
                    self.add(f"{prog} - {m.group(1).translate(CLEAR)}", loop)
            operands = [a for a in args if not a.startswith("-")]
            reads_stdin = not operands or "-s" in args or "-" in args
            if any(re.match(r"\d*<<(?!<)", r) for r in redirs):
                self._last_shell = (prog, loop)
            elif reads_stdin and piped_in:
                self.dynamic = True
            if INTERP.match(prog) and _DYNAMIC.search(" ".join(args)):
                self.dynamic = True
        return own


def _bounded(strings: Sequence[str]) -> tuple[str, ...]:
    r"""Each string whole when short; long ones in windows (normalize.windows), each later
    window prefixed with the program (and "loop: "), so that `^prog\s.*-x` still means
    "prog run with -x" and no regex search scans more than a window."""
    out: dict[str, None] = {}
    for s in strings:
        if len(s) <= WINDOW:
            out[s] = None
            continue
        loop = "loop: " if s.startswith("loop: ") else ""
        head = loop + s[len(loop):].split(" ", 1)[0]
        for i, w in enumerate(windows(s)):
            out[w if i == 0 else head + w] = None
    return tuple(out)


@functools.lru_cache(maxsize=512)
def _invocations_cached(text: str, extra: tuple[str, ...]) -> tuple[str, ...]:
    inv = _Invocations()
    inv.script(text, 0)
    if inv.dynamic:
        for variant in extra:
            inv.script(variant, 1)
            inv.add(PAYLOAD + variant, False)
    return _bounded(list(dict.fromkeys(inv.out)))


def invocations(text: str, variants: Sequence[str] = ()) -> tuple[str, ...]:
    """What the command text runs: one string per simple command (module docstring).

    `variants` (normalised spellings of the same text) are used only when the text runs
    text it did not get literally: a pipe into a shell, `eval`, `bash -c "$(...)"`.
    """
    return _invocations_cached(text[:MAX_PARSE], tuple(v for v in variants if v != text))


def argv_invocations(argv: Sequence[str]) -> tuple[str, ...]:
    """What one exec runs: its argv as a simple command (wrappers and `sh -c` unwrapped)."""
    if not argv:
        return ()
    kept: list[str] = []
    budget = MAX_ARGV_PARSE
    for a in argv:
        if budget <= 0:
            break
        kept.append(a[:budget])
        budget -= len(kept[-1]) + 1
    return _argv_cached(tuple(kept))


@functools.lru_cache(maxsize=512)
def _argv_cached(argv: tuple[str, ...]) -> tuple[str, ...]:
    inv = _Invocations()
    inv.command([opaque(a) for a in argv], [], 0, False)
    return _bounded(list(dict.fromkeys(inv.out)))
