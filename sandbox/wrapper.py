"""`sandbox run -- cmd`: the wrapped program with its own stdin, stdout and stderr.

The program runs directly under firejail (no recorded shell in between), so its exit
code, signals, binary stdout and the stdout/stderr split are exactly its own. Its output
is copied to ours as it arrives and recorded (capped as the profile says); what it starts
itself is recorded by the process monitor.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from . import jail
from .errors import SetupError
from .session import Session
from .shell import Capture


def _pump(fds: dict[int, BinaryIO], capture: Capture, lock: threading.Lock) -> None:
    open_fds = dict(fds)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [])
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                del open_fds[fd]
                continue
            out = open_fds[fd]
            with contextlib.suppress(BrokenPipeError, ValueError):
                out.write(data)
                out.flush()
            with lock:
                capture.add(data)


def run_wrapped(session: Session, program: list[str], timeout: float | None = None) -> int:
    """Run `program` in the session's jail; returns its exit code (128+N for signal N)."""
    text = shlex.join(program)
    blocked = session.hooks.check_command(text)
    if blocked is not None:
        sys.stderr.write(blocked.output + "\n")
        session.close(126)
        return 126
    argv = jail.build_argv(session.profile, session.spec(), program)
    env = session.env()
    started, t0 = time.time(), time.monotonic()
    session.store.update_session(session.id, current_command=text[:500])
    try:
        proc = subprocess.Popen(
            argv, env=env, cwd=str(session.workdir), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=session.hooks.preexec(),
        )
    except OSError as e:
        raise SetupError(f"cannot start the jail: {e} (run `sandbox doctor`)") from e
    session.mark_running(proc.pid)
    capture = Capture(session.profile.recording.max_output_bytes)
    lock = threading.Lock()
    assert proc.stdout is not None and proc.stderr is not None
    fds = {proc.stdout.fileno(): sys.stdout.buffer, proc.stderr.fileno(): sys.stderr.buffer}
    pump = threading.Thread(target=_pump, args=(fds, capture, lock), daemon=True)
    pump.start()
    code = _wait(proc, timeout)
    pump.join(timeout=5)
    with lock:
        output, truncated = capture.result()
    session.record_command(text, output, code, started, time.monotonic() - t0, "run",
                           truncated=truncated, output_bytes=capture.total)
    session.close(code)
    return code


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    interrupted = 0
    while True:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = proc.wait(timeout=left)
            break
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return 124  # like timeout(1)
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the program too; give it a moment, then insist.
            interrupted += 1
            if interrupted > 1:
                proc.send_signal(signal.SIGKILL)
    return 128 - code if code < 0 else code
