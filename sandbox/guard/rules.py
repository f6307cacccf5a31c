"""Rules: what to look for in each kind of evidence, and what to do when it is found.

A rule is data (the built-in packs are TOML files next to this module, profile rules are
TOML tables in `[[guard.rules]]`), with one matcher per evidence kind it cares about:

    id, description, action (record|flag|block|kill)       required
    severity, attack (ATT&CK ids), source (citation), pack optional
    command = [regex, ...]       command text (all normalised variants) and process argv:
                                 what the text MENTIONS (grep patterns, echo, which ...)
    invocation = [regex, ...]    what the text or an exec RUNS: one string per simple
                                 command, program basename first (see `invocations`)
    process = {exe = [basename, ...], argv = [regex, ...]}  both must hold when both given
    network = {protocol, port, verdict, name, dst, reason, payload}  all given must hold;
              or an array of such tables: any one of them
    scan    = {kind, min_targets, min_ports}   kind: burst (the default) or control_plane
    dns     = {name, qtype, verdict}
    sample  = {source, cpu_percent, mem_bytes, pids, gpu_util, gpu_mem_bytes, min_window_s}
    tamper  = {kind = [...]}
    egress_denied = true         with `invocation`: it matches only when a URL in the
                                 matched command names a host:port the session's egress
                                 policy does not allow (never when the engine has none)

A rule fires when any of its matchers matches. Regexes are Python `re`, case-sensitive
unless they say `(?i)`. `command` regexes also run over a process's argv (argv[0] cut to
its basename): a command started by a program, not typed, is still seen.

Mentions are not actions. `block` and `kill` are for what is done (an exec, a connection,
a read or write the command performs, a write to the recorder's hooks); a `command`
regex matches text that may only mention it (`grep -rn 'stratum+tcp' src/`, `which nc`,
`echo "use ssh -R" > notes.md`). So a built-in pack rule with a `command` matcher has
only that matcher and at most `flag`, and a `[guard.actions]` override cannot raise it
higher (`Rule.cap`). Rules that block or kill use `invocation`, `process`, `network`,
`scan`, `dns`, `sample` or `tamper`.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ProfileError
from .actions import ACTIONS, DEFAULT_SEVERITY, SEVERITIES, rank
from .evidence import (
    CommandText,
    DnsQuery,
    Evidence,
    NetworkAttempt,
    ProcessExec,
    ResourceSample,
    ScanEvent,
    TamperSignal,
)
from .honeytokens import HoneytokenMatch
from .normalize import MAX_TEXT, WINDOW, windows

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _snippet(text: str, match: re.Match[str]) -> str:
    start, end = match.span()
    piece = text[max(0, start - 20):min(len(text), end + 20)]
    return piece if len(piece) <= 200 else piece[:197] + "..."


def search_any(patterns: Sequence[re.Pattern[str]], texts: Sequence[str]) -> str | None:
    """The text around the first match of any pattern in any text, or None."""
    for text in texts:
        for pattern in patterns:
            m = pattern.search(text)
            if m:
                return _snippet(text, m)
    return None


# -- simple commands: what a command line actually runs ---------------------------------
#
# `command` regexes see every spelling of the text, so they also match text that only
# *mentions* something (`grep -rn 'stratum+tcp' src/`, `which ssh`, `echo "use ssh -R"`).
# `invocation` regexes see only what would run: one string per simple command, the
# program's basename first, then its arguments and redirections. Wrappers (timeout, nice,
# nohup, setsid, env, sudo, xargs, exec, command, strace...) are yielded whole and then
# unwrapped; `sh -c SCRIPT`, `eval`, `su -c`, `watch`, `find -exec`, `$(...)`, backticks
# and heredocs fed to a shell are parsed as scripts in turn. Arguments that are only text
# (echo/printf's words, grep's pattern, the names given to which/man/type/apt-cache, a git
# message) are dropped, redirections are kept (`echo 1 > /proc/sys/...` is a write).
# Commands inside a loop body (for/while/until, xargs, parallel) are yielded a second time
# prefixed with "loop: "; pipelines of two or more commands also as one string joined by
# " | ". A quoted argument with blanks given to a program other than a shell or an
# interpreter is one opaque word (its blanks shown as visible marks that `\s` does not
# match). When a shell or interpreter runs text it did not get literally (a pipe into
# `sh`, `bash -c "$(...)"`, `eval`, decoded payloads), every normalised variant of the text
# is treated as a script too, and also kept whole, prefixed "payload: ".

# The recorder's own shell (session.py starts it, API mode with --noediting; firejail
# execs it): not the agent's hookless shell. Only the session's first exec of this argv is
# exempt (the guard part marks it `recorder`): the agent can run nothing before it, and
# the same argv from a script later is the hookless shell it looks like.
RECORDER_SHELL = ("bash", "--noprofile", "--norc", "--noediting", "-i")
RECORDER_SHELLS = frozenset({RECORDER_SHELL, ("bash", "--noprofile", "--norc", "-i")})
MAX_PARSE = MAX_TEXT  # characters of one command text parsed for invocations (rest cut)
MAX_ARGV_PARSE = 16 * 1024  # characters of one exec's argv parsed (the monitor keeps 16 KiB)
_MAX_SCRIPT_DEPTH = 4
_MAX_INVOCATIONS = 512

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "fish"})
_INTERP = re.compile(r"^(?:python[\d.]*|pypy[\d.]*|perl[\d.]*|ruby[\d.]*|php[\d.]*|node|nodejs"
                     r"|deno|bun|lua[\d.]*|luajit|tclsh|jshell|osascript|Rscript|julia)$")
# Programs whose arguments are text or names, never something they act on.
_ALL_TEXT = frozenset({
    "echo", "printf", "which", "whereis", "type", "man", "info", "apropos", "whatis", "help",
    "apt-cache", "git", "hg", "svn", "tldr", "dpkg-query", "hash", "alias", "complete",
    "compgen", "read", "getent", "dig", "host", "nslookup", ":", "true", "false", "test", "[",
    "[[", "let", "logger", "notify-send", "wall", "say", "figlet", "cowsay", "yes",
})
_PATTERN_FIRST = frozenset({"grep", "egrep", "fgrep", "zgrep", "rg", "ag", "ack", "sed",
                            "ugrep", "awk", "gawk", "mawk", "jq", "yq"})
_PKG = frozenset({"apt", "apt-get", "dpkg", "pip", "pip3", "npm", "yarn", "brew", "dnf", "yum",
                  "apk", "conda", "cargo", "gem", "pacman", "snap", "flatpak"})
_KEYWORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until",
                       "!", "{", "}", "time", "coproc", "function", "esac", "in", "[[", "]]"})
_REDIR = re.compile(r"&?(?:>>|>&|>\||<>|<&|<<<|<<-|<<|>|<)")
_NAME_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\+?=)(.*)$", re.S)
_BRACE_WORD = re.compile(r"^([^{}]*)\{([^{}\s]*,[^{}\s]*)\}([^{}]*)$")
# A quoted argument with spaces is one word: given to a program that is not a shell or an
# interpreter (`gh issue create --body "curl 169.254.169.254"`, `ssh host 'cat x'`) it is
# data, so its blanks are shown as visible marks that `\s` does not match; shells and
# interpreters get it back as it was (their code runs).
_OPAQUE = str.maketrans({" ": "\u2423", "\t": "\u21e5", "\n": "\u21b5"})
_CLEAR = str.maketrans({"\u2423": " ", "\u21e5": "\t", "\u21b5": "\n"})
_BLANK = re.compile(r"\s")
PAYLOAD = "payload: "  # prefix of text a shell or interpreter runs that it did not get literally


def _opaque(word: str) -> str:
    return word.translate(_OPAQUE) if _BLANK.search(word) else word


def _clear(words: Sequence[str]) -> list[str]:
    return [w.translate(_CLEAR) for w in words]


_DYNAMIC = re.compile(r"\$\(|`|b64decode|base64|fromhex|unhexlify|\bxxd\b|\brev\b|"
                      r"\bexec\s*\(|\beval\b|decode\s*\(|\bopenssl\s+(?:enc|base64)")


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


class _Lexer:
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


def _brace_expand(word: str) -> list[str]:
    m = _BRACE_WORD.match(word)
    if not m or "$" in word:
        return [word]
    pre, body, post = m.groups()
    return [pre + part + post for part in body.split(",")]


def _expand(word: str, env: dict[str, str]) -> str:
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


def _command_option(args: list[str]) -> str | None:
    """The value of `-c CMD`, `-qcCMD`, `--command CMD` or `--command=CMD` (getopt rules:
    in a cluster of short flags, `c` takes the rest of the cluster or the next word)."""
    for j, a in enumerate(args):
        if a == "--":
            return None
        if a in ("--command", "-c"):
            return args[j + 1] if j + 1 < len(args) else ""
        if a.startswith("--command="):
            return a.split("=", 1)[1]
        if a.startswith("-") and not a.startswith("--") and "c" in a[1:]:
            rest = a[a.index("c", 1) + 1:]
            return rest or (args[j + 1] if j + 1 < len(args) else "")
    return None


class _Invocations:
    """Collects the invocation strings of one evidence text (see the section comment)."""

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
        lexer = _Lexer(text[:MAX_PARSE])
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
                redirs.append(f"{value}{_expand(target, self.env)}")
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
                value = _expand(value, self.env)
                if kind == "w":  # unquoted: word splitting and brace expansion
                    for part in value.split() or [value]:
                        words.extend(_brace_expand(part))
                else:
                    words.append(_opaque(value))
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
        while k < len(words) and _NAME_ASSIGN.match(words[k]):
            m = _NAME_ASSIGN.match(words[k])
            assert m is not None
            self.add(words[k], loop)
            self.env[m.group(1)] = m.group(3).translate(_CLEAR)
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
        first = words[0].translate(_CLEAR)
        prog = os.path.basename(first) or first
        args = words[1:]
        if prog in ("export", "declare", "local", "typeset", "readonly"):
            for a in args:
                m = _NAME_ASSIGN.match(a)
                if m:
                    self.env[m.group(1)] = m.group(3).translate(_CLEAR)
        inner = self._unwrap(prog, args)
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
        script = self._script_of(prog, args)
        if script is not None:
            own_args = args[:args.index(script)] if script in args else []
            own = " ".join([prog, *own_args, *redirs])
            self.add(own, loop)
            script = script.translate(_CLEAR)
            if _DYNAMIC.search(script):
                self.dynamic = True
            self.script(script, depth + 1, loop)
            return own
        if _INTERP.match(prog):
            args = _clear(args)  # the code is what runs
        own = self._own_string(prog, args, redirs)
        self.add(own, loop)
        if prog in SHELLS or _INTERP.match(prog):
            for r in redirs:  # a here-string is what a shell or interpreter reads and runs
                m = re.match(r"\d*<<<(.*)", r, re.S)
                if m and prog in SHELLS:
                    self.script(m.group(1).translate(_CLEAR), depth + 1, loop)
                elif m:
                    self.add(f"{prog} - {m.group(1).translate(_CLEAR)}", loop)
            operands = [a for a in args if not a.startswith("-")]
            reads_stdin = not operands or "-s" in args or "-" in args
            if any(re.match(r"\d*<<(?!<)", r) for r in redirs):
                self._last_shell = (prog, loop)
            elif reads_stdin and piped_in:
                self.dynamic = True
            if _INTERP.match(prog) and _DYNAMIC.search(" ".join(args)):
                self.dynamic = True
        return own

    @staticmethod
    def _own_string(prog: str, args: list[str], redirs: list[str]) -> str:
        kept: list[str]
        if prog in _ALL_TEXT:
            kept = []
        elif prog in _PATTERN_FIRST:
            kept, pattern_done, it = [], False, iter(args)
            for a in it:
                if a in ("-e", "--regexp", "-f", "--file", "--expression"):
                    next(it, None)
                    pattern_done = True
                elif a == "--" and not pattern_done:
                    if next(it, None) is not None:
                        pattern_done = True
                elif a.startswith("-") or pattern_done:
                    kept.append(a)
                else:
                    pattern_done = True
        elif prog in _PKG and args and args[0] in ("show", "search", "info", "list", "policy",
                                                   "-s", "-l", "-L", "download", "view"):
            kept = args[:1]
        else:
            kept = args
        return " ".join([prog, *kept, *redirs])

    @staticmethod
    def _script_of(prog: str, args: list[str]) -> str | None:
        """The script text a program runs from its arguments (sh -c, eval, su -c, watch)."""
        if prog in SHELLS:
            for j, a in enumerate(args):
                if a.startswith("-") and not a.startswith("--") and "c" in a[1:]:
                    return args[j + 1] if j + 1 < len(args) else ""
                if not (a.startswith(("-", "+"))):
                    return None
            return None
        if prog == "eval":
            return " ".join(args)
        if prog in ("su", "runuser", "script"):
            # util-linux `script -qc CMD /dev/null` runs CMD under a new pty: the usual
            # way to give a command a terminal, so as much a wrapper as `sh -c`.
            return _command_option(args)
        if prog == "watch":
            rest = _skip_options(args, arg_opts={"-n", "--interval"})
            return " ".join(rest)
        return None

    @staticmethod
    def _unwrap(prog: str, args: list[str]) -> tuple[list[str], bool] | None:
        """The command a wrapper runs ([] when it runs none), and whether it loops."""
        if prog == "timeout":
            rest = _skip_options(args, arg_opts={"-s", "--signal", "-k", "--kill-after"})
            return rest[1:], False
        if prog in ("nice", "ionice", "chrt", "taskset", "stdbuf", "nohup", "setsid", "time",
                    "builtin", "unbuffer", "caffeinate", "flock", "chronic", "sudo", "doas",
                    "torsocks", "proxychains", "proxychains4", "faketime", "firejail",
                    "strace", "ltrace", "valgrind", "catchsegv", "busybox"):
            arg_opts = {
                "nice": {"-n", "--adjustment"}, "ionice": {"-c", "-n", "--class"},
                "stdbuf": {"-i", "-o", "-e"}, "sudo": {"-u", "-g", "-h", "-p", "-C", "-D",
                                                       "-r", "-t", "-U", "-T"},
                "doas": {"-u", "-C"}, "proxychains4": {"-f"}, "proxychains": {"-f"},
                "strace": {"-o", "-e", "-p", "-s", "-u", "-E", "-P", "-I", "-a", "-b", "-O",
                           "-S", "-X"},
                "ltrace": {"-o", "-e", "-p", "-s", "-u", "-n", "-a"},
            }.get(prog, set())
            rest = _skip_options(args, arg_opts=arg_opts)
            if prog in ("chrt", "taskset", "flock", "faketime") and rest:
                rest = rest[1:]
            return rest, False
        if prog == "exec":
            return _skip_options(args, arg_opts={"-a"}), False
        if prog == "command":
            if any(a in ("-v", "-V") for a in args):
                return [], False
            return _skip_options(args), False
        if prog == "env":
            it = list(args)
            while it and (it[0].startswith("-") or _NAME_ASSIGN.match(it[0])):
                a = it.pop(0)
                if a in ("-u", "--unset", "-C", "--chdir") and it:
                    it.pop(0)
                elif a in ("-S", "--split-string") and it:
                    return it[0].translate(_CLEAR).split() + it[1:], False
                elif a == "--":
                    break
            return it, False
        if prog in ("xargs", "parallel"):
            rest = _skip_options(args, arg_opts={"-I", "-L", "-n", "-P", "-d", "-E",
                                                       "-s", "-a", "-j", "--max-args"})
            return rest, True
        if prog in ("find",):
            for j, a in enumerate(args):
                if a in ("-exec", "-execdir", "-ok", "-okdir"):
                    rest = args[j + 1:]
                    for end in (";", "+"):
                        if end in rest:
                            rest = rest[:rest.index(end)]
                    return rest, True
            return None
        if prog == "chroot":
            return args[1:] if args and not args[0].startswith("-") else [], False
        return None


def _skip_options(args: list[str], *, arg_opts: frozenset[str] | set[str] = frozenset()
                  ) -> list[str]:
    """`args` after leading options (those in `arg_opts` take the next word)."""
    j = 0
    while j < len(args) and args[j].startswith("-") and args[j] != "-":
        a = args[j]
        j += 1
        if a == "--":
            break
        if a in arg_opts and j < len(args):
            j += 1
    return args[j:]


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
    """What the command text runs: one string per simple command (see above).

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
    inv.command([_opaque(a) for a in argv], [], 0, False)
    return _bounded(list(dict.fromkeys(inv.out)))


@dataclass(frozen=True)
class ProcessMatch:
    """Matches an exec by the names it goes by and/or its argv."""

    exe: frozenset[str] = frozenset()
    argv: tuple[re.Pattern[str], ...] = ()

    def match(self, ev: ProcessExec, argv_variants: Sequence[str]) -> str | None:
        why = []
        if self.exe:
            hit = ev.names() & self.exe
            if not hit:
                return None
            why.append("exe " + ",".join(sorted(hit)))
        if self.argv:
            found = search_any(self.argv, argv_variants)
            if found is None:
                return None
            why.append(found)
        return "; ".join(why) or None


@dataclass(frozen=True)
class NetworkMatch:
    """Matches a gateway connection attempt; every given condition must hold."""

    protocol: frozenset[str] = frozenset()
    port: frozenset[int] = frozenset()
    verdict: frozenset[str] = frozenset()
    name: tuple[re.Pattern[str], ...] = ()
    dst: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    reason: tuple[re.Pattern[str], ...] = ()
    payload: tuple[re.Pattern[str], ...] = ()  # over the first bytes sent (latin-1)
    # `network = [{...}, {...}]`: any one alternative (a name OR an IP OR a request shape;
    # the fields of one table all must hold, so one table cannot say "or").
    any_of: tuple[NetworkMatch, ...] = ()

    def match(self, ev: NetworkAttempt) -> str | None:
        for alternative in self.any_of:
            why = alternative.match(ev)
            if why is not None:
                return why
        if self.any_of:
            return None
        if self.protocol and ev.protocol.lower() not in self.protocol:
            return None
        if self.port and ev.dst_port not in self.port:
            return None
        if self.verdict and ev.verdict not in self.verdict:
            return None
        if self.name and search_any(self.name, [ev.name]) is None:
            return None
        if self.dst:
            try:
                ip = ipaddress.ip_address(ev.dst_ip)
            except ValueError:
                return None
            if not any(ip in net for net in self.dst):
                return None
        if self.reason and search_any(self.reason, [ev.reason]) is None:
            return None
        first = ""
        if self.payload:
            first = search_any(self.payload, [ev.payload[:4096].decode("latin-1")]) or ""
            if not first:
                return None
        target = f"{ev.name or ev.dst_ip}:{ev.dst_port}"
        why = f"{ev.protocol or 'unknown'} to {target} ({ev.verdict})"
        return f"{why}: {first}" if first else why


@dataclass(frozen=True)
class ScanMatch:
    """Matches the gateway's scan events of a kind (burst, control_plane) above a size."""

    min_targets: int = 1
    min_ports: int = 0
    kind: frozenset[str] = frozenset()

    def match(self, ev: ScanEvent) -> str | None:
        if self.kind and ev.kind not in self.kind:
            return None
        if ev.distinct_targets < self.min_targets or len(ev.ports) < self.min_ports:
            return None
        what = f"{ev.distinct_targets} targets, {len(ev.ports)} ports in {ev.window_s:g}s"
        if ev.kind != "burst":
            ports = ",".join(str(p) for p in ev.ports[:10])
            what = f"{ev.kind}: {what} ({', '.join(ev.hosts[:3]) or '?'} ports {ports})"
        return what


@dataclass(frozen=True)
class DnsMatch:
    """Matches DNS questions by name, type and resolver verdict."""

    name: tuple[re.Pattern[str], ...] = ()
    qtype: frozenset[str] = frozenset()
    verdict: frozenset[str] = frozenset()

    def match(self, ev: DnsQuery) -> str | None:
        if self.qtype and ev.qtype.upper() not in self.qtype:
            return None
        if self.verdict and ev.verdict not in self.verdict:
            return None
        if self.name and search_any(self.name, [ev.name.rstrip(".").lower()]) is None:
            return None
        return f"{ev.qtype or 'query'} {ev.name} ({ev.verdict or 'seen'})"


_SAMPLE_FIELDS = ("cpu_percent", "mem_bytes", "pids", "gpu_util", "gpu_mem_bytes")


@dataclass(frozen=True)
class SampleMatch:
    """Matches resource samples at or over thresholds, held for at least min_window_s."""

    source: frozenset[str] = frozenset()
    thresholds: tuple[tuple[str, float], ...] = ()
    min_window_s: float = 0.0
    reason: frozenset[str] = frozenset()  # a breach's reason (empty: any)

    def match(self, ev: ResourceSample) -> str | None:
        if self.source and ev.source not in self.source:
            return None
        if self.reason and ev.reason not in self.reason:
            return None
        if ev.window_s < self.min_window_s:
            return None
        parts = []
        for name, minimum in self.thresholds:
            value = float(getattr(ev, name))
            if value < minimum:
                return None
            parts.append(f"{name}={value:g}")
        parts.append(f"over {ev.window_s:g}s")
        return f"{ev.source}: " + " ".join(parts)


@dataclass(frozen=True)
class TamperMatch:
    """Matches recorder tamper signals by kind."""

    kind: frozenset[str] = frozenset()

    def match(self, ev: TamperSignal) -> str | None:
        if self.kind and ev.kind not in self.kind:
            return None
        return ev.kind


@dataclass(frozen=True)
class Rule:
    """One detection rule. `severity` None means: derived from the action."""

    id: str
    pack: str
    description: str
    action: str
    severity: str | None = None
    attack: tuple[str, ...] = ()
    source: str = ""
    command: tuple[re.Pattern[str], ...] = ()
    process: ProcessMatch | None = None
    network: NetworkMatch | None = None
    scan: ScanMatch | None = None
    dns: DnsMatch | None = None
    sample: SampleMatch | None = None
    tamper: TamperMatch | None = None
    honeytokens: HoneytokenMatch | None = None
    event_kind: str = "guard.verdict"  # the event a verdict becomes
    invocation: tuple[re.Pattern[str], ...] = ()
    cap: str = "kill"  # the strongest action overrides may give it (mentions: flag)
    egress_denied: bool = False  # invocation matches only toward a target egress denies

    @property
    def effective_severity(self) -> str:
        return self.severity or DEFAULT_SEVERITY[self.action]

    def with_action(self, action: str) -> Rule:
        """The same rule with another action (its severity follows the new action).

        Never above `cap`: a pack-wide `tunnels = "kill"` leaves the pack's mention rules
        at flag (their severity stays what the pack gave them).
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        if rank(action) > rank(self.cap):
            return replace(self, action=self.cap) if rank(self.action) < rank(self.cap) \
                else self
        return replace(self, action=action, severity=None)

    def match(
        self, evidence: Evidence, texts: Sequence[str], argv_texts: Sequence[str],
        egress: Egress | None = None,
    ) -> str | None:
        """Why this rule matches the evidence (a short snippet), or None.

        `texts`: normalised variants of command text; `argv_texts`: of a process's argv;
        `egress`: the session's egress policy, for `egress_denied` rules.
        """
        if self.honeytokens is not None:
            why = self.honeytokens.match(
                evidence, argv_texts if isinstance(evidence, ProcessExec) else texts)
            if why:
                return why
        if isinstance(evidence, CommandText):
            if self.invocation:
                why = self._invoked(invocations(evidence.text, texts), egress)
                if why:
                    return why
            return search_any(self.command, texts) if self.command else None
        if isinstance(evidence, ProcessExec):
            if self.process is not None:
                why = self.process.match(evidence, argv_texts)
                if why:
                    return why
            if self.invocation and not evidence.recorder:
                why = self._invoked(argv_invocations(evidence.argv), egress)
                if why:
                    return why
            return search_any(self.command, argv_texts) if self.command else None
        if isinstance(evidence, NetworkAttempt):
            return self.network.match(evidence) if self.network else None
        if isinstance(evidence, ScanEvent):
            return self.scan.match(evidence) if self.scan else None
        if isinstance(evidence, DnsQuery):
            return self.dns.match(evidence) if self.dns else None
        if isinstance(evidence, ResourceSample):
            return self.sample.match(evidence) if self.sample else None
        if isinstance(evidence, TamperSignal):
            return self.tamper.match(evidence) if self.tamper else None
        return None  # pragma: no cover

    def _invoked(self, invs: Sequence[str], egress: Egress | None) -> str | None:
        if not self.egress_denied:
            return search_any(self.invocation, invs)
        if egress is None:
            # No egress policy known (mode none, or an engine built without one): "not on
            # the allowlist" cannot be told from "allowed", so say nothing.
            return None
        for inv in invs:
            for pattern in self.invocation:
                m = pattern.search(inv)
                if not m:
                    continue
                denied = [f"{host}:{port}" for host, port in url_targets(inv)
                          if not egress(host, port)]
                if denied:
                    return f"{_snippet(inv, m)} (egress does not allow {', '.join(denied[:3])})"
        return None


Egress = Callable[[str, int], bool]  # (host, port) -> does the session's egress allow it
_URL = re.compile(r"(?i)\b(https?|ftps?|wss?)://(?:[^\s/@\u2423]*@)?"
                  r"(\[[0-9a-f:.]+\]|[^\s/:?#@\u2423'\"]+)(?::(\d{1,5}))?")
_SCHEME_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 990, "ws": 80, "wss": 443}


def url_targets(text: str) -> list[tuple[str, int]]:
    """(host, port) of every URL with a scheme in `text` (a bare `host/path` has none)."""
    out = []
    for m in _URL.finditer(text):
        port = int(m.group(3)) if m.group(3) else _SCHEME_PORTS[m.group(1).lower()]
        if 0 < port < 65536:
            out.append((m.group(2).strip("[]").rstrip(".").lower(), port))
    return out


# -- parsing and validation ------------------------------------------------------------

_RULE_KEYS = {
    "id", "pack", "description", "action", "severity", "attack", "source",
    "command", "invocation", "process", "network", "scan", "dns", "sample", "tamper",
    "egress_denied",
}
_MATCHER_KEYS = {
    "process": {"exe", "argv"},
    "network": {"protocol", "port", "verdict", "name", "dst", "reason", "payload"},
    "scan": {"kind", "min_targets", "min_ports"},
    "dns": {"name", "qtype", "verdict"},
    "sample": {"source", "min_window_s", "reason", *_SAMPLE_FIELDS},
    "tamper": {"kind"},
}


def _fail(where: str, message: str) -> ProfileError:
    return ProfileError(f"{where}: {message}")


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(where, f"unknown key {key!r}; allowed here: {', '.join(sorted(allowed))}")


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "expected a list of strings")
    return list(value)


def _regexes(value: Any, where: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for i, text in enumerate(_str_list(value, where)):
        try:
            out.append(re.compile(text))
        except re.error as e:
            raise _fail(f"{where}[{i}]", f"invalid regex {text!r}: {e}") from e
    return tuple(out)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {type(value).__name__}")
    return float(value)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data[key]
    if not isinstance(value, Mapping):
        raise _fail(f"{where}.{key}", "expected a table")
    _check_keys(value, _MATCHER_KEYS[key], f"{where}.{key}")
    if not value:
        raise _fail(f"{where}.{key}", "empty matcher matches nothing; remove it or add a condition")
    return value


def _ports(value: Any, where: str) -> frozenset[int]:
    if isinstance(value, int):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value
    ):
        raise _fail(where, "expected a list of port numbers (1-65535)")
    return frozenset(value)


def _networks(
    value: Any, where: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for text in _str_list(value, where):
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise _fail(where, f"not an address or CIDR: {text!r}") from e
    return tuple(out)


def _network_match(value: Any, w: str) -> NetworkMatch:
    """One `network` table; `w` is where it is (`rule 'x'.network` or `...network[1]`)."""
    if not isinstance(value, Mapping):
        raise _fail(w, "expected a table")
    _check_keys(value, _MATCHER_KEYS["network"], w)
    if not value:
        raise _fail(w, "empty matcher matches nothing; remove it or add a condition")
    t = value
    return NetworkMatch(
        protocol=frozenset(p.lower() for p in _str_list(t.get("protocol", []),
                                                         f"{w}.protocol")),
        port=_ports(t.get("port", []), f"{w}.port"),
        verdict=frozenset(_str_list(t.get("verdict", []), f"{w}.verdict")),
        name=_regexes(t.get("name", []), f"{w}.name"),
        dst=_networks(t.get("dst", []), f"{w}.dst"),
        reason=_regexes(t.get("reason", []), f"{w}.reason"),
        payload=_regexes(t.get("payload", []), f"{w}.payload"),
    )


def parse_rule(data: Mapping[str, Any], *, pack: str = "custom", where: str = "rule") -> Rule:
    """Validate one rule table and build it; ProfileError names the bad key and the rule."""
    if not isinstance(data, Mapping):
        raise _fail(where, "a rule must be a table")
    rid = data.get("id")
    if isinstance(rid, str):
        where = f"{where} {rid!r}"
    _check_keys(data, _RULE_KEYS, where)
    for key in ("id", "description", "action"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(where, f"missing or empty {key!r} (a string)")
    rule_id = str(data["id"])
    if not _ID.match(rule_id):
        raise _fail(where, "id must be lower case letters, digits, '.', '_' or '-'")
    action = str(data["action"])
    if action not in ACTIONS:
        raise _fail(where, f"action {action!r} is not allowed; use one of {', '.join(ACTIONS)}")
    severity = data.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise _fail(where, f"severity {severity!r} is not allowed; use one of "
                           f"{', '.join(SEVERITIES)}")
    pack_name = data.get("pack", pack)
    if not isinstance(pack_name, str) or not _ID.match(pack_name):
        raise _fail(where, "pack must be a lower-case name")
    for key in ("source",):
        if key in data and not isinstance(data[key], str):
            raise _fail(where, f"{key!r} must be a string")

    kwargs: dict[str, Any] = {}
    if "command" in data:
        kwargs["command"] = _regexes(data["command"], f"{where}.command")
    if "invocation" in data:
        kwargs["invocation"] = _regexes(data["invocation"], f"{where}.invocation")
    if "process" in data:
        t = _table(data, "process", where)
        kwargs["process"] = ProcessMatch(
            exe=frozenset(_str_list(t.get("exe", []), f"{where}.process.exe")),
            argv=_regexes(t.get("argv", []), f"{where}.process.argv"),
        )
    if "network" in data:
        value = data["network"]
        if isinstance(value, list):
            if not value:
                raise _fail(f"{where}.network", "empty array matches nothing")
            kwargs["network"] = NetworkMatch(any_of=tuple(
                _network_match(t, f"{where}.network[{i}]") for i, t in enumerate(value)))
        else:
            kwargs["network"] = _network_match(value, f"{where}.network")
    if "scan" in data:
        t = _table(data, "scan", where)
        kwargs["scan"] = ScanMatch(
            min_targets=int(_number(t.get("min_targets", 1), f"{where}.scan.min_targets")),
            min_ports=int(_number(t.get("min_ports", 0), f"{where}.scan.min_ports")),
            kind=frozenset(_str_list(t.get("kind", []), f"{where}.scan.kind")),
        )
    if "dns" in data:
        t = _table(data, "dns", where)
        kwargs["dns"] = DnsMatch(
            name=_regexes(t.get("name", []), f"{where}.dns.name"),
            qtype=frozenset(q.upper() for q in _str_list(t.get("qtype", []),
                                                         f"{where}.dns.qtype")),
            verdict=frozenset(_str_list(t.get("verdict", []), f"{where}.dns.verdict")),
        )
    if "sample" in data:
        t = _table(data, "sample", where)
        kwargs["sample"] = SampleMatch(
            source=frozenset(_str_list(t.get("source", []), f"{where}.sample.source")),
            thresholds=tuple(
                (name, _number(t[name], f"{where}.sample.{name}"))
                for name in _SAMPLE_FIELDS if name in t
            ),
            min_window_s=_number(t.get("min_window_s", 0), f"{where}.sample.min_window_s"),
            reason=frozenset(_str_list(t.get("reason", []), f"{where}.sample.reason")),
        )
    if "tamper" in data:
        t = _table(data, "tamper", where)
        kwargs["tamper"] = TamperMatch(
            kind=frozenset(_str_list(t.get("kind", []), f"{where}.tamper.kind")))
    if not kwargs:
        raise _fail(where, "a rule needs at least one matcher: command, invocation, "
                           "process, network, scan, dns, sample or tamper")
    if "egress_denied" in data:
        if not isinstance(data["egress_denied"], bool):
            raise _fail(where, "'egress_denied' must be true or false")
        if data["egress_denied"] and "invocation" not in data:
            raise _fail(where, "'egress_denied' qualifies `invocation`; add one")
        kwargs["egress_denied"] = data["egress_denied"]
    return Rule(
        id=rule_id, pack=pack_name, description=str(data["description"]), action=action,
        severity=severity, attack=tuple(_str_list(data.get("attack", []), f"{where}.attack")),
        source=str(data.get("source", "")), **kwargs,
    )
