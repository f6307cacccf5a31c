"""The pexpect layer: a bash in the jail whose commands are delimited by markers.

`Shell` spawns the jail's argv with pexpect (PTY set-up, preexec for the cgroup), evals
the shipped rc file (`shell_rc.bash`) as its first input, and then talks to bash with one
line per command: `\\__sbx_run $'<command, ANSI-C quoted>'`. bash's own prompt expansion
prints OSC 133 style markers: C (PS0) when it has read the line, D (PS1, with `$?`) when
the prompt is back. The output is exactly the bytes between C and D. Nothing is guessed
and nothing sleeps.

What a command's result can be trusted for (API mode), and how:

- The recorder's hooks cannot be changed from inside: the prompts, PROMPT_COMMAND and
  `__sbx_run` are readonly, `enable` is disabled, the call is `\\__sbx_run` (no alias)
  and the command is eval'd in POSIX mode for the lookup (the special builtin `eval`
  wins over a function named eval or builtin). A command that tries (its output says
  "readonly function/variable" for a recorder name) is reported as tampering.
- Every marker carries bash's command number `\\#`, which no command can set. After D we
  send a probe line with a fresh random token (`__sbx_t=<token>`) and read until the D
  that shows it: a D printed by the command itself (a forgery, even with the right nonce
  and number) is followed by the real D before the probe's, and is reported as
  tampering on that command's result; the exit code and output are then those of the
  real D. A D with the nonce before the next command's C (a forged end the probe did not
  catch because the command read the probe from /dev/tty) is reported on that command.
- D reports the shell state a DEBUG trap needs to skip or rewrite commands (extdebug,
  functrace) and POSIXLY_CORRECT's attributes; each is tampering. A non-numeric exit code
  (e.g. `shopt -u promptvars`) is tampering.
- From outside, at every D (/proc/<bash>, no fork): bash is still the same program image
  (its auxv changes on exec) with stdin/stdout/stderr on the PTY; it is blocked in its
  own prompt read (syscall, fd and buffer as at start: a `read` builtin or a sourced
  /dev/tty differ); and it has read every byte we sent it (rchar), so no other process
  took a command line or probe off the terminal. Together these catch a recorder
  emulated by a command (in bash or in another process) on every result it fakes.
- DEBUG and RETURN traps are cleared around every command, so a trap a command sets never
  runs on the recorder's lines.
- Partial or foreign markers in output never stall the reader: a marker candidate that
  cannot complete is output, and only a trailing, still-possible prefix waits for bytes.
- Output that arrives between commands (background jobs) is returned as `background`.

Not covered: a process that writes into the jailed bash's memory (ptrace or
/proc/<pid>/mem of the agent's own process) controls everything bash prints. Output a
command prints is its output, whoever wrote it (a background job, an ERR trap). The nonce
is not a secret.

Reads go straight to the PTY fd in 64 KiB chunks and only the newly read tail is
searched for markers, so throughput does not fall as output grows (pexpect's default
2 KB reads and whole-buffer regexes are 10x slower here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pexpect
import psutil

from . import fdwait
from .errors import SessionClosed, SetupError

OSC = b"\x1b]133;"
_MARKER_RE = re.compile(rb"\x1b\]133;([ACDEP]);([^\x07\x1b]{0,4096})\x07")
# A trailing piece of a marker that more bytes could still complete.
_PARTIAL_RE = re.compile(
    rb"\x1b(?:\](?:1(?:3(?:3(?:;(?:[ACDEP](?:;[^\x07\x1b]{0,4096})?)?)?)?)?)?)?")
_READ = 65536
_BACKGROUND_CAP = 65536  # bytes of between-command output kept per command
# What a recorder-hook change attempt prints (bash's own error messages).
# (Setting PS1 or PROMPT_COMMAND fails too, but tools such as conda do it innocently.)
_HOOK_ATTEMPT_RE = re.compile(
    rb"\b__sbx_\w+[:=][^\n]{0,40}?(?:readonly (?:function|variable)|cannot unset)"
    rb"|\benable: command not found"
)

# A command whose last simple command is `exit` / `logout` (not `echo exit`, `(exit 3)`).
_EXIT_RE = re.compile(r"(?:^|[;&|\n]|&&|\|\|)\s*(?:exit|logout)(?:\s+[-+]?\w+)?\s*;?\s*\Z")

# Tamper kinds (event kinds, see session.Session.run).
FORGED = "shell.marker_forged"
HOOKS = "shell.recorder_hooks"
MISSING = "shell.marker_missing"

log = logging.getLogger("sandbox")


def rc_text() -> str:
    return resources.files("sandbox").joinpath("shell_rc.bash").read_text()


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




def partial_start(buf: bytes) -> int:
    """Where a trailing, still incomplete marker begins in `buf` (len(buf) if none).

    Only the last ESC can start one: a marker's body holds no ESC. Anything that can no
    longer become a marker is plain output, so a stray `ESC]133;` never stalls a reader.
    """
    j = buf.rfind(b"\x1b", max(0, len(buf) - 4200))
    if j < 0 or buf.find(b"\x07", j) >= 0:  # a BEL after it: complete, or not a marker
        return len(buf)
    return j if _PARTIAL_RE.fullmatch(buf, j) else len(buf)


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


def _c_text(fields: list[bytes]) -> str:
    """The command text a shell-mode C carries (fields: nonce; number; text)."""
    return b";".join(fields[2:]).decode(errors="replace")


class Capture:
    """Keeps the head and tail of a command's output within `cap` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 64)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            excess = len(self.tail) - self.cap // 2
            if excess > 4 * self.cap:  # trim rarely: slicing is O(n)
                del self.tail[:excess]

    def result(self) -> tuple[bytes, bool]:
        keep = self.cap // 2
        tail = bytes(self.tail[-keep:]) if len(self.tail) > keep else bytes(self.tail)
        if self.total <= len(self.head) + len(tail):
            return bytes(self.head) + tail, False
        cut = self.total - len(self.head) - len(tail)
        note = f"\n[... {cut} bytes not recorded: over the profile's max_output_bytes ...]\n"
        return bytes(self.head) + note.encode() + tail, True


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


class _Collect:
    """The state of one API command: wait for C, body until D, probe until its D."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.nonce = shell.nonce.encode()
        self.cap = Capture(shell.max_output)
        self.bg = Capture(_BACKGROUND_CAP)
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
        for m in _MARKER_RE.finditer(buf, 0, safe):
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
            for why in (self.shell.identity_problems() + self.shell.input_problems()
                        + self.shell.idle_problems()):
                self.flag(HOOKS, why)
            self.phase = "probe"
            self.shell.send_probe(self)
            return
        # probe phase
        if self.probe_c:
            if token not in self.tokens:
                self.flag(HOOKS, "the probe was not echoed: the recorder's probe variable "
                          "was tampered with")
            for why in self.shell.input_problems() + self.shell.idle_problems():
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
            self.shell.send_probe(self)

    def result(self, timed_out: bool, shell_exited: bool = False) -> RawResult:
        if self.phase == "probe" and not self.probe_c:
            self.cap.add(bytes(self.after))  # the command kept writing after its end
        out, truncated = self.cap.result()
        bg, _ = self.bg.result()
        code = self.code if self.phase in ("probe", "done") else None
        for part in (self.cap.head, self.cap.tail[-4096:]):
            if b"__sbx_" not in part and b"enable:" not in part:
                continue
            m = _HOOK_ATTEMPT_RE.search(part)
            if m is not None:
                self.flag(HOOKS, "the command tried to change the recorder's hooks: "
                          + m.group(0).decode(errors="replace"))
        return RawResult(out, code, 0.0, 0.0, timed_out, truncated, self.cap.total,
                         self.forged, shell_exited, self.tamper, bg, self.bg.total)


class Shell:
    """A recorded bash in a jail. One command at a time (guarded by a lock)."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        *,
        mode: str = "api",
        max_output: int = 1 << 20,
        preexec_fn: Callable[[], None] | None = None,
        dimensions: tuple[int, int] = (50, 200),
    ) -> None:
        self.nonce = secrets.token_hex(8)
        self.mode = mode
        self.max_output = max_output
        env = dict(env)
        env["__SBX_NONCE"] = self.nonce
        env["__SBX_RC"] = rc_text()
        env["__SBX_MODE"] = mode
        self._lock = threading.Lock()
        self._buf = b""  # bytes read past the last marker we consumed
        self.closed = False
        self.bash_pid: int | None = None
        # bytes bash had read (/proc/<pid>/io rchar) at the last end marker, and the bytes
        # we have written for it since: it must have read at least those
        self._rchar: int | None = None
        self._sent = 0
        self._io_fd = self._sys_fd = -1  # kept open: a pread is cheaper than an open
        self._idle: list[bytes] | None = None  # /proc/<bash>/syscall at its prompt
        self._identity: tuple[bytes, list[str]] | None = None
        try:
            self.child: Any = pexpect.spawn(
                argv[0], argv[1:], env=env, cwd=cwd, echo=False, encoding=None,
                maxread=_READ, dimensions=dimensions, preexec_fn=preexec_fn,
            )
        except (pexpect.ExceptionPexpect, OSError) as e:
            raise SetupError(f"cannot start the jail ({argv[0]}): {e}") from e
        # pexpect sleeps 50 ms before every send by default: 100x our per-command budget.
        self.child.delaybeforesend = None
        # pexpect also sleeps 0.1 s in close() and after terminate(): the jail is already
        # SIGKILLed by then, so those sleeps only slow every kill and close down.
        self.child.delayafterclose = 0.0
        self.child.delayafterterminate = 0.0
        self.child.ptyproc.delayafterclose = 0.0
        self.child.ptyproc.delayafterterminate = 0.0
        self.fd: int = self.child.child_fd
        # Non-blocking: read first and only select() when the PTY is empty (a select
        # before every read costs ~10% of bulk throughput).
        os.set_blocking(self.fd, False)
        self.pid: int = self.child.pid

    # -- start-up ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Eval the rc file and wait for the first prompt's end marker."""
        self._write(b' eval "$__SBX_RC"\n')
        deadline = time.monotonic() + timeout
        prompt = re.compile(rb"\x1b\]133;D;[^\x07\x1b;]*;" + self.nonce.encode()
                            + rb";([0-9]+);[^\x07\x1b]*\x07")
        seen = b""
        while (m := prompt.search(seen)) is None:
            data = self._read_some(deadline)
            if data is None:
                raise SetupError(
                    f"the jailed shell did not come up within {timeout:.0f}s; "
                    f"it printed: {seen[-2000:].decode(errors='replace')!r} "
                    "(run `sandbox doctor`)"
                )
            if data == b"":
                raise SetupError(
                    "the jail exited during start-up; it printed: "
                    f"{seen[-2000:].decode(errors='replace')!r} (run `sandbox doctor`)"
                )
            seen += data
        rest = seen[m.end():]
        if self.mode == "api":
            self._buf = rest
        else:
            self._start_rest = seen[m.start():]
        self.bash_pid = self._find_bash()
        self._identity = self._read_identity()
        self._rchar = self._read_rchar()
        self._sent = 0
        self._idle = self._idle_signature()

    # -- the jailed bash, seen from outside ------------------------------------------------

    def _find_bash(self) -> int | None:
        try:
            for proc in psutil.Process(self.pid).children(recursive=True):
                if proc.name() == "bash":
                    return int(proc.pid)
        except psutil.Error:
            pass
        return None

    def _read_identity(self) -> tuple[bytes, list[str]] | None:
        """bash's auxv (new on every exec: the stack and AT_RANDOM move) and where its
        stdin, stdout and stderr point."""
        if self.bash_pid is None:
            return None
        try:
            # Opened each time: an open auxv keeps the mm it was opened on (and an exec
            # brings a new one).
            with open(f"/proc/{self.bash_pid}/auxv", "rb") as f:
                auxv = f.read()
            fds = [os.readlink(f"/proc/{self.bash_pid}/fd/{n}") for n in (0, 1, 2)]
        except OSError:
            return None
        return auxv, fds

    def identity_problems(self) -> list[str]:
        """Why the jailed bash is no longer the recorded one ([] when all is well)."""
        if self._identity is None:
            return []
        now = self._read_identity()
        if now is None:
            return ["the recorded shell is gone or unreadable"]
        problems = []
        if now[0] != self._identity[0]:
            problems.append("the recorded shell was replaced by another program (exec)")
        for n, (was, is_) in enumerate(zip(self._identity[1], now[1], strict=True)):
            if was == is_:
                continue
            if n == 0 and is_ == "/dev/null" and self.mode == "api":
                problems.append("at the end marker the shell was still inside the command "
                                "(its stdin was the command's /dev/null): the marker was "
                                "printed by the command")
            else:
                problems.append(f"the shell's fd {n} was redirected from the terminal to "
                                f"{is_!r}: its output or markers bypass the recorder")
        return problems

    def _read_rchar(self) -> int | None:
        try:
            if self._io_fd < 0:
                self._io_fd = os.open(f"/proc/{self.bash_pid}/io", os.O_RDONLY)
            return int(os.pread(self._io_fd, 64, 0).split(None, 2)[1])  # "rchar: N\n..."
        except (OSError, ValueError, IndexError):
            return None

    def _syscall(self) -> list[bytes] | None:
        try:
            if self._sys_fd < 0:
                self._sys_fd = os.open(f"/proc/{self.bash_pid}/syscall", os.O_RDONLY)
            return os.pread(self._sys_fd, 256, 0).split()[:4]
        except OSError:
            return None

    def _idle_signature(self) -> list[bytes] | None:
        """What bash waiting at its prompt looks like: read(0, <its input buffer>, n)."""
        if self.bash_pid is None:
            return None
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            sc = self._syscall()
            if sc is None:
                return None
            if len(sc) == 4 and sc[0] == b"0" and sc[1] == b"0x0":
                return sc
            time.sleep(0.001)
        return None

    def idle_problems(self, limit: float = 0.25) -> list[str]:
        """At an end marker bash must be back at its prompt, blocked reading the terminal
        with its own input buffer (a `read` builtin or a sourced /dev/tty uses another).
        A marker printed by a command that is still running fails this."""
        if self._idle is None:
            return []
        deadline = time.monotonic() + limit
        while True:
            sc = self._syscall()
            if sc is None or sc == self._idle:
                return []
            if time.monotonic() >= deadline:
                return ["at the end marker bash was not waiting at its prompt (it was "
                        f"still running a command: {b' '.join(sc[:2]).decode()}): the "
                        "marker was printed by the command"]
            time.sleep(0.0002)

    def _drain_now(self) -> bytes:
        out = b""
        while True:
            try:
                data = os.read(self.fd, _READ)
            except OSError:  # BlockingIOError: nothing more; EIO: gone
                return out
            if not data:
                return out
            out += data

    def input_problems(self) -> list[str]:
        """At an end marker: bash must have read every byte we sent it since the last one.
        A process that reads the terminal in its place (one holding the PTY from a
        detached session) would take the command line and answer with perfect markers."""
        now = self._read_rchar() if self.bash_pid is not None else None
        was, sent = self._rchar, self._sent
        self._rchar, self._sent = now, 0
        if was is None or now is None or now - was >= sent:
            return []
        return [f"the shell read {now - was} bytes of the {sent} sent to it: another process "
                "took its input from the terminal, so its markers were not bash's"]

    # -- I/O ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                # The PTY's input buffer is full until bash reads: wait for room.
                fdwait.ready(self.fd, fdwait.WRITE, 1.0)
                continue
            except OSError as e:
                raise SessionClosed(f"the shell is gone: {e}") from e
            view = view[n:]

    def _read_some(self, deadline: float) -> bytes | None:
        """Bytes from the PTY; b'' at EOF; None at the deadline."""
        while True:
            try:
                return os.read(self.fd, _READ)
            except BlockingIOError:
                pass
            except OSError:  # EIO: the other side of the PTY closed
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready = fdwait.ready(self.fd, fdwait.READ, remaining)
            except (OSError, ValueError):
                return b""
            if not ready:
                return None

    # -- commands -------------------------------------------------------------------------

    def run(self, command: str, timeout: float) -> RawResult:
        """Run one command; never raises on timeout (the result says timed_out)."""
        with self._lock:
            if self.closed:
                raise SessionClosed("the shell is closed")
            started = time.time()
            t0 = time.monotonic()
            line = f"\\__sbx_run {quote_ansi_c(command)}\n".encode()
            self._sent += len(line)
            self._write(line)
            result = self._collect(t0 + timeout)
            result.started = started
            result.duration = time.monotonic() - t0
            return result

    @staticmethod
    def is_exit_command(command: str) -> bool:
        """True when `command` ends by running the shell's own `exit` or `logout`: then a
        missing end marker is expected, not a sign of tampering."""
        return _EXIT_RE.search(command) is not None

    def send_probe(self, state: _Collect) -> None:
        token = secrets.token_hex(8).encode()
        state.tokens.add(token)
        state.probe_c = False
        with contextlib.suppress(SessionClosed):
            self._sent += len(token) + 9
            self._write(b"__sbx_t=" + token + b"\n")

    def _collect(self, deadline: float) -> RawResult:
        state = _Collect(self)
        buf = self._buf
        self._buf = b""
        timed_out = False
        interrupted_at = 0.0
        kill_rounds = 0
        while True:
            if buf:
                buf = state.feed(buf)
                if state.phase == "done":
                    # bash is at its prompt now: anything it printed before is already in
                    # the PTY. One of our markers there is the real end of a command that
                    # answered the probe itself.
                    buf += self._drain_now()
                    if re.search(rb"\x1b\]133;[CD];(?:[^\x07\x1b;]*;)?" + state.nonce, buf):
                        state.flag(FORGED, "a marker of ours after the probe's end: the "
                                   "command answered the probe itself; its result is forged")
                    self._buf = buf
                    return state.result(timed_out)
            data = self._read_some(deadline if not timed_out else interrupted_at + 1.0)
            if data is None:
                if not timed_out:
                    timed_out = True
                    interrupted_at = time.monotonic()
                    if state.phase == "probe" and not state.probe_c:
                        state.flag(FORGED, "the command was still running after its end "
                                   "marker: that marker was forged")
                    if state.phase == "probe":
                        state.reprobe = True  # Ctrl-C flushes the probe line
                    self._interrupt()
                    continue
                # Ctrl-C did not bring the prompt back: kill what bash is running. Bounded:
                # something that respawns faster than we kill gets the shell closed.
                kill_rounds += 1
                if kill_rounds <= 5 and self._kill_foreground():
                    interrupted_at = time.monotonic()
                    continue
                self.closed = True
                for why in self.identity_problems():
                    state.flag(HOOKS, why)
                state.flag(MISSING, "the shell never printed the command's end marker")
                state.text(buf)
                return state.result(True, shell_exited=True)
            if data == b"":
                self.closed = True
                state.text(buf)
                return state.result(timed_out, shell_exited=True)
            buf += data

    def _interrupt(self) -> None:
        self._rchar = None  # Ctrl-C flushes unread input: no count until the next end
        with contextlib.suppress(SessionClosed):
            self._write(b"\x03")

    def _kill_foreground(self) -> bool:
        """SIGKILL every process below the jailed bash; True if something was killed."""
        try:
            if self.bash_pid is not None:
                victims = psutil.Process(self.bash_pid).children(recursive=True)
            else:
                tree = psutil.Process(self.pid).children(recursive=True)
                shells = [p for p in tree if p.name() == "bash"]
                victims = shells[0].children(recursive=True) if shells else []
        except psutil.Error:
            return False
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        return bool(victims)

    # -- interactive ------------------------------------------------------------------------

    def interact(
        self,
        on_command: Callable[[str, bytes, int | None, float, float], None],
        on_tamper: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """Pass the operator's terminal through; report each command to `on_command` and
        each sign of tampering to `on_tamper(kind, detail)`."""
        parser = InteractiveParser(self.nonce.encode(), self.max_output, on_command,
                                   on_tamper, self.identity_problems)
        rest = getattr(self, "_start_rest", b"")
        parser.feed(rest)
        with contextlib.suppress(OSError):
            os.write(1, rest)  # the first prompt was read during start-up: show it
        os.set_blocking(self.fd, True)  # pexpect's interact loop expects a blocking fd
        self.child.interact(escape_character=None, output_filter=parser.feed,
                            input_filter=parser.typed)

    # -- end ----------------------------------------------------------------------------------

    def alive(self) -> bool:
        return bool(self.child.isalive())

    def close(self, force: bool = True) -> int | None:
        """End the jail (its whole PID namespace dies with firejail's first process)."""
        self.closed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL if force else signal.SIGTERM)
        # A command running in another thread sits in select() on the PTY: closing the fd
        # under it would not wake it (it would wait out its whole timeout). The jail's
        # death gives it EOF at once; let it return, then close.
        got = self._lock.acquire(timeout=5.0)
        try:
            try:
                self.child.close(force=True)
            except Exception as e:  # the jail is SIGKILLed already; this only reaps
                log.debug("sandbox: closing the pty: %s", e)
        finally:
            if got:
                self._lock.release()
        for fd in (self._io_fd, self._sys_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._io_fd = self._sys_fd = -1
        status = self.child.exitstatus
        return int(status) if status is not None else None


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
        on_command: Callable[[str, bytes, int | None, float, float], None],
        on_tamper: Callable[[str, dict[str, Any]], None] | None = None,
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
        for m in _MARKER_RE.finditer(buf, 0, safe):
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
            self.c_text = _c_text(fields)
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
