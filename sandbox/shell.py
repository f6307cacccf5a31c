"""The pexpect layer: a bash in the jail whose commands are delimited by markers.

`Shell` spawns the jail's argv with pexpect (PTY set-up, preexec for the cgroup), evals
the shipped rc file (`shell_rc.bash`) as its first input, and then talks to bash with one
line per command: `__sbx_run $'<command, ANSI-C quoted>'`. The rc prints OSC 133 style
markers carrying a per-session nonce; the output is exactly the bytes between the C and D
markers, the exit code is in D. Nothing is guessed and nothing sleeps.

Reads go straight to the PTY fd in 64 KiB chunks and only the newly read tail is
searched for the end marker, so throughput does not fall as output grows (pexpect's
default 2 KB reads and whole-buffer regexes are 10x slower here).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pexpect
import psutil

from .errors import SessionClosed, SetupError

OSC = b"\x1b]133;"
_MARKER_RE = re.compile(rb"\x1b\]133;([ACDE]);([^\x07\x1b]{0,4096})\x07")
_READ = 65536
_CHUNK_OVERLAP = 128  # a marker split across two reads is still found


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
        """Eval the rc file and wait for the first prompt marker."""
        self._write(b' eval "$__SBX_RC"\n')
        deadline = time.monotonic() + timeout
        prompt = OSC + b"A;" + self.nonce.encode() + b"\x07"
        seen = b""
        while prompt not in seen:
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
        self._buf = seen[seen.index(prompt) + len(prompt):]

    # -- I/O ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                # The PTY's input buffer is full until bash reads: wait for room.
                select.select([], [self.fd], [], 1.0)
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
                ready, _, _ = select.select([self.fd], [], [], remaining)
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
            self._write(f"__sbx_run {quote_ansi_c(command)}\n".encode())
            result = self._collect(t0 + timeout, t0)
            result.started = started
            result.duration = time.monotonic() - t0
            return result

    def _collect(self, deadline: float, t0: float) -> RawResult:
        nonce = self.nonce.encode()
        start_marker = OSC + b"C;" + nonce + b"\x07"
        end_prefix = OSC + b"D;"
        cap = Capture(self.max_output)
        forged: list[bytes] = []
        buf = self._buf
        self._buf = b""
        started = False
        timed_out = False
        interrupted_at = 0.0
        kill_rounds = 0
        while True:
            if not started:
                i = buf.find(start_marker)
                if i >= 0:
                    started = True
                    buf = buf[i + len(start_marker):]
            if started and buf:
                code, end, consumed = self._find_end(buf, end_prefix, nonce, forged)
                if end >= 0:
                    cap.add(buf[:end])
                    self._buf = buf[consumed:]
                    out, truncated = cap.result()
                    return RawResult(out, code, 0.0, 0.0, timed_out, truncated, cap.total,
                                     forged)
                # keep a tail that may hold the start of a split marker
                keep = min(len(buf), _CHUNK_OVERLAP)
                safe = len(buf) - keep
                if safe > 0:
                    cap.add(buf[:safe])
                    buf = buf[safe:]
            data = self._read_some(deadline if not timed_out else interrupted_at + 1.0)
            if data is None:
                if not timed_out:
                    timed_out = True
                    interrupted_at = time.monotonic()
                    self._interrupt()
                    continue
                # Ctrl-C did not bring the prompt back: kill what bash is running. Bounded:
                # something that respawns faster than we kill gets the shell closed.
                kill_rounds += 1
                if kill_rounds <= 5 and self._kill_foreground():
                    interrupted_at = time.monotonic()
                    continue
                self.closed = True
                cap.add(buf)
                out, truncated = cap.result()
                return RawResult(out, None, 0.0, 0.0, True, truncated, cap.total, forged,
                                 shell_exited=True)
            if data == b"":
                self.closed = True
                if started:
                    cap.add(buf)
                out, truncated = cap.result()
                return RawResult(out, None, 0.0, 0.0, timed_out, truncated, cap.total, forged,
                                 shell_exited=True)
            buf += data

    def _find_end(
        self, buf: bytes, end_prefix: bytes, nonce: bytes, forged: list[bytes]
    ) -> tuple[int | None, int, int]:
        """(exit code, offset where the end marker starts, offset after it) or (.., -1, 0)."""
        pos = 0
        while True:
            i = buf.find(OSC, pos)
            if i < 0:
                return None, -1, 0
            m = _MARKER_RE.match(buf, i)
            if m is None:
                if len(buf) - i < 4200:  # maybe incomplete: wait for more bytes
                    return None, -1, 0
                pos = i + 1
                continue
            kind, body = m.group(1), m.group(2)
            parts = body.split(b";")
            if kind == b"D" and len(parts) >= 2 and parts[1] == nonce:
                try:
                    code: int | None = int(parts[0])
                except ValueError:
                    code = None
                return code, i, m.end()
            if nonce not in parts and m.group(0) not in forged:
                forged.append(m.group(0))
            pos = m.end()

    def _interrupt(self) -> None:
        with contextlib.suppress(SessionClosed):
            self._write(b"\x03")

    def _kill_foreground(self) -> bool:
        """SIGKILL every process below the jailed bash; True if something was killed."""
        try:
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

    def interact(self, on_command: Callable[[str, bytes, int | None, float, float], None]) -> None:
        """Pass the operator's terminal through; report each command to `on_command`."""
        parser = InteractiveParser(self.nonce.encode(), self.max_output, on_command)
        os.set_blocking(self.fd, True)  # pexpect's interact loop expects a blocking fd
        self.child.interact(escape_character=None, output_filter=parser.feed)

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
            with contextlib.suppress(Exception):
                self.child.close(force=True)
        finally:
            if got:
                self._lock.release()
        status = self.child.exitstatus
        return int(status) if status is not None else None


class InteractiveParser:
    """Splits the interactive byte stream into commands using the C/D markers."""

    def __init__(
        self,
        nonce: bytes,
        cap: int,
        on_command: Callable[[str, bytes, int | None, float, float], None],
    ) -> None:
        self.nonce = nonce
        self.cap = cap
        self.on_command = on_command
        self.pending = b""
        self.capture: Capture | None = None
        self.started = 0.0

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        self.pending = b""
        pos = 0
        while True:
            i = buf.find(OSC, pos)
            if i < 0:
                break
            m = _MARKER_RE.match(buf, i)
            if m is None:
                if len(buf) - i < 4200:
                    self.pending = buf[i:]
                    buf = buf[:i]
                break
            if self.capture is not None:
                self.capture.add(buf[pos:i])
            parts = m.group(2).split(b";", 2)
            if m.group(1) == b"C" and parts[0] == self.nonce:
                self.capture = Capture(self.cap)
                self.started = time.time()
            elif m.group(1) == b"D" and len(parts) >= 2 and parts[1] == self.nonce:
                text = parts[2].decode(errors="replace") if len(parts) > 2 else ""
                out = self.capture.result()[0] if self.capture else b""
                code = int(parts[0]) if parts[0].isdigit() else None
                self.on_command(text, out, code, self.started, time.time() - self.started)
                self.capture = None
            pos = m.end()
        if self.capture is not None:
            self.capture.add(buf[pos:])
        return data
