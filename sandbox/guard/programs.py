"""What programs do with their arguments: the tables and rules behind `invocations`.

Which programs are shells or interpreters (their arguments are code), which only take
text or names (`echo`, `which`, `git`: their words are dropped, so a mention is not an
action), which take a pattern first (`grep`), which run another command (`timeout`,
`sudo`, `env`, `xargs`, `find -exec`: `unwrap`) and which run a script given as an
argument (`sh -c`, `eval`, `su -c`, `watch`: `script_of`). Pure functions over words
from `lexer`; `invocations` decides what to do with their answers.
"""

from __future__ import annotations

import re

from .lexer import CLEAR, NAME_ASSIGN

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "fish"})
INTERP = re.compile(r"^(?:python[\d.]*|pypy[\d.]*|perl[\d.]*|ruby[\d.]*|php[\d.]*|node|nodejs"
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


def own_string(prog: str, args: list[str], redirs: list[str]) -> str:
    """The string of a command that wraps nothing: program, the arguments it acts on
    (text-only words and grep's pattern dropped), redirections."""
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


def script_of(prog: str, args: list[str]) -> str | None:
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
        rest = skip_options(args, arg_opts={"-n", "--interval"})
        return " ".join(rest)
    return None


def unwrap(prog: str, args: list[str]) -> tuple[list[str], bool] | None:
    """The command a wrapper runs ([] when it runs none), and whether it loops."""
    if prog == "timeout":
        rest = skip_options(args, arg_opts={"-s", "--signal", "-k", "--kill-after"})
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
        rest = skip_options(args, arg_opts=arg_opts)
        if prog in ("chrt", "taskset", "flock", "faketime") and rest:
            rest = rest[1:]
        return rest, False
    if prog == "exec":
        return skip_options(args, arg_opts={"-a"}), False
    if prog == "command":
        if any(a in ("-v", "-V") for a in args):
            return [], False
        return skip_options(args), False
    if prog == "env":
        it = list(args)
        while it and (it[0].startswith("-") or NAME_ASSIGN.match(it[0])):
            a = it.pop(0)
            if a in ("-u", "--unset", "-C", "--chdir") and it:
                it.pop(0)
            elif a in ("-S", "--split-string") and it:
                return it[0].translate(CLEAR).split() + it[1:], False
            elif a == "--":
                break
        return it, False
    if prog in ("xargs", "parallel"):
        rest = skip_options(args, arg_opts={"-I", "-L", "-n", "-P", "-d", "-E",
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


def skip_options(args: list[str], *, arg_opts: frozenset[str] | set[str] = frozenset()
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
