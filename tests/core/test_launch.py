"""The jail's launch two ways: the compiled launcher (subprocess vfork()s, no Python in
the child) and the same steps as a Python preexec_fn. The jail they make must be the
same, part by part, and a failed step must stop either one before firejail runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.jail import launch, spawn
from tests.core.test_fastexec import BOUNDARY, TIOCSTI


def _join(sb: Sandbox, argv: list[str], compiled: bool) -> tuple[int, str, str]:
    s = sb._session
    proc = spawn.popen([launch.tool("firejail"), "--quiet", s.join_flag(), "--", *argv],
                       s.launcher(), env=s.env(), compiled=compiled, cwd=str(s.workdir),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out.decode(), err.decode()


def test_the_launcher_is_built_and_trusted() -> None:
    """bootstrap builds it; root runs it only from a root-owned path."""
    path = spawn.launcher()
    assert path is not None, "sandbox-launch is not built: scripts/bootstrap.sh builds it"
    assert launch.trusted_file(Path(path)) is None


def test_compiled_and_python_launches_make_the_same_jail(sb: Sandbox) -> None:
    """Credentials, capabilities, no-new-privs, seccomp filters (the TIOCSTI one
    included), signal masks, mounts, cgroup, namespaces, rlimits, environment."""
    c = _join(sb, ["sh", "-c", BOUNDARY], compiled=True)
    p = _join(sb, ["sh", "-c", BOUNDARY], compiled=False)
    assert c[0] == p[0] == 0, (c[2], p[2])
    for a, b in zip(c[1].split("---"), p[1].split("---"), strict=True):
        assert a == b
    assert "Seccomp:\t2" in c[1] and "NoNewPrivs:\t1" in c[1]
    for compiled in (True, False):
        rc, out, err = _join(sb, ["python3", "-I", "-c", TIOCSTI], compiled)
        assert (rc, out.strip()) == (0, "EPERM"), (compiled, err)


def test_a_failed_step_stops_the_launch(sb: Sandbox, tmp_path: Path) -> None:
    """A cgroup join that fails (the group is gone) fails the spawn, as a preexec_fn's
    exception does: nothing runs, the error names the step."""
    s = sb._session
    gone = s.launcher()
    gone.join_files = [os.fsencode(tmp_path / "no-such-group" / "tasks")]
    marker = tmp_path / "ran"
    argv = ["/bin/sh", "-c", f"touch {marker}"]
    with pytest.raises(subprocess.SubprocessError, match="joining the cgroup"):
        spawn.popen(argv, gone, env={}, compiled=True)
    with pytest.raises(subprocess.SubprocessError):
        spawn.popen(argv, gone, env={}, compiled=False)
    assert not marker.exists()
    # The error names paths (an image's own, its author's bytes): shown, not interpreted.
    gone.join_files = [os.fsencode(tmp_path / "\x1b]0;owned\x07" / "tasks")]
    with pytest.raises(subprocess.SubprocessError) as err:
        spawn.popen(argv, gone, env={}, compiled=True)
    assert "\x1b" not in str(err.value) and "\x07" not in str(err.value), str(err.value)


def test_the_agent_environment_never_reaches_a_root_process(sb: Sandbox,
                                                            tmp_path: Path) -> None:
    """The launcher runs as root with no environment of its own (a hostile LD_PRELOAD
    or GLIBC_TUNABLES is for the program's exec only, after the drop): it is handed the
    program's environment in a memfd. Held at its cgroup step (a FIFO) to look."""
    import threading

    from sandbox.monitor import proctree

    s = sb._session
    env = {**s.env(), "GLIBC_TUNABLES": "glibc.malloc.check=3", "SBX_PROBE": "a b=c"}
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    hold = s.launcher()
    hold.join_files = [os.fsencode(fifo)]  # its open() waits for a reader
    got: list[subprocess.Popen[bytes]] = []
    t = threading.Thread(target=lambda: got.append(spawn.popen(
        ["/usr/bin/env"], hold, env=env, stdout=subprocess.PIPE, cwd=str(s.workdir))))
    t.start()
    try:
        pid = 0
        for _ in range(500):
            pid = next((p for p in proctree.children(os.getpid())
                        if proctree.comm_of(p).startswith("sandbox-launch")), 0)
            if pid:
                break
            threading.Event().wait(0.01)
        assert pid, "the launcher did not start"
        assert os.stat(f"/proc/{pid}").st_uid == 0  # root, still before the drop
        assert Path(f"/proc/{pid}/environ").read_bytes() == b""
    finally:
        with open(fifo, "rb") as reader:
            t.join(10)
            assert reader.read() == b"0"
    out, _ = got[0].communicate(timeout=10)
    lines = out.decode().splitlines()
    assert "SBX_PROBE=a b=c" in lines and "GLIBC_TUNABLES=glibc.malloc.check=3" in lines
