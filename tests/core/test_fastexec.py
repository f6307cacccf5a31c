"""Fast exec (issue 20): commands forked by a helper inside the jail, behind the same wall
as a joined exec, with an exit status the kernel vouches for."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import ExecTimeout, Sandbox, Store
from sandbox.jail import fastexec
from sandbox.jail.profile import ExecSection, load

if fastexec.unsupported():
    pytest.skip(f"fast exec needs a newer kernel: {fastexec.unsupported()}",
                allow_module_level=True)


def _fast_profile() -> Any:
    return dataclasses.replace(load("default"), exec=ExecSection(fast=True))


def _helper(box: Sandbox) -> fastexec.Helper:
    part = box._session.hooks.fast
    helper = part.helper if part is not None else None
    assert helper is not None and helper.ready(30), helper and helper.why_off
    return helper


@pytest.fixture(params=["c", "python"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both helpers, the compiled one (what bootstrap builds) and the Python one (a host
    without a compiler), behind the same wall and the same checks."""
    _use_helper(monkeypatch, request.param)
    return str(request.param)


def _use_helper(monkeypatch: pytest.MonkeyPatch, kind: str, *, c_define: str = "",
                py_swap: tuple[str, str] = ("", "")) -> None:
    """Sessions started from here on run this helper; `c_define` / `py_swap` make it one
    the agent would want, one that lies (tests only)."""
    from sandbox.jail.fastexec import build, helper

    if kind == "c":
        payload = build.build((c_define,) if c_define else ()).read_bytes()
    else:
        src = helper._python_source().decode()
        assert py_swap[0] in src
        payload = src.replace(*py_swap).encode()
    monkeypatch.setattr(helper, "_payload", lambda: (payload, kind))


@pytest.fixture
def fsb(workspace: Path, kind: str) -> Iterator[Sandbox]:
    box = Sandbox(_fast_profile(), workdir=workspace)
    box.start()
    assert _helper(box).kind == kind
    try:
        yield box
    finally:
        box.close()


def _joined(box: Sandbox, cmd: list[str] | str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same exec on the joined path (one `firejail --join` of its own)."""
    with monkeypatch.context() as m:
        async def joined(*_a: object) -> None:
            return None

        m.setattr(box._session.hooks.fast, "child", joined)
        return box.exec(cmd)


def _inner_pid(host_pid: int) -> int:
    """The helper's pid as the agent sees it (its PID namespace)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid")


def _rules(result: Any) -> list[str]:
    return [a["rule"] for a in result.alerts]


# -- it works, the same as the join -------------------------------------------------------


def test_streams_stdin_status_and_signals_go_the_fast_way(fsb: Sandbox) -> None:
    helper = _helper(fsb)
    before = helper.used["fast"]
    r = fsb.exec(["sh", "-c", "cat; echo to-err >&2; exit 7"], input="hello\n")
    assert (r.returncode, r.stdout, r.stderr) == (7, "hello\n", "to-err\n")
    assert fsb.exec(["sh", "-c", "kill -TERM $$"]).returncode == 143
    assert fsb.exec(["no-such-program-xyz"]).returncode == 127
    blob = bytes(range(256)) * 120000  # ~30 MiB through stdin and back
    r = fsb.exec(["cat"], input=blob, max_output=64 << 20)
    assert r.stdout_bytes == blob
    assert helper.used["fast"] == before + 4 and helper.state == "ready"
    assert Store().commands(fsb.id)[-1]["source"] == "exec"


def test_path_search_and_errors_are_execvps(fsb: Sandbox) -> None:
    """The helper searches PATH itself (not `os.execvpe`): the command's own PATH, in
    order, past missing and non-directory entries; a file that is not executable is
    126 (PermissionError), a name found nowhere 127, as the joined path says."""
    helper = _helper(fsb)
    fsb.write_file("bin/hello", "#!/bin/sh\necho from-bin\n")
    fsb.write_file("bin/plain", "echo never\n")
    fsb.write_file("afile", "")
    fsb.exec(["chmod", "+x", "bin/hello"])
    before = helper.used["fast"]
    path = f"/no/such:{fsb.workdir}/afile:{fsb.workdir}/bin:/usr/bin:/bin"
    assert fsb.exec(["hello"], env={"PATH": path}).stdout == "from-bin\n"
    with pytest.raises(PermissionError, match="not executable"):
        fsb.exec(["plain"], env={"PATH": path})
    assert fsb.exec(["no-such-program-xyz"], env={"PATH": path}).returncode == 127
    assert helper.used["fast"] == before + 3 and helper.state == "ready"


def test_builtins_and_scripts_without_a_hashbang_run_as_on_the_joined_path(
        fsb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """firejail starts every joined program through the login shell, so a name that only
    the shell knows (`cd`) and a script with no #! line run there; the helper hands
    those to the same shell instead of failing with 127 or 126."""
    helper = _helper(fsb)
    fsb.write_file("plain.sh", "echo from-sh $1\n")
    fsb.exec(["chmod", "+x", "plain.sh"])
    n = helper.used["fast"]
    for cmd in (["./plain.sh", "arg"], ["cd", "/"]):
        fast = fsb.exec(cmd)
        joined = _joined(fsb, cmd, monkeypatch)
        assert (fast.returncode, fast.stdout) == (joined.returncode, joined.stdout), \
            (cmd, fast, joined)
    assert fsb.exec(["./plain.sh", "x"]).stdout == "from-sh x\n"
    assert fsb.exec(["no-such-program-xyz"]).returncode == 127
    assert helper.used["fast"] == n + 4


def test_timeout_kills_the_tree_with_detached_jobs(fsb: Sandbox) -> None:
    t0 = time.monotonic()
    with pytest.raises(ExecTimeout) as info:
        fsb.exec(["sh", "-c", "echo started; (sleep 301 &); (sleep 302 &); sleep 303"],
                 timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert info.value.result.stdout == "started\n"
    deadline = time.monotonic() + 5
    while fsb.run("pgrep -c sleep || true").output.strip() != "0":
        assert time.monotonic() < deadline, fsb.run("ps -ef").output
        time.sleep(0.1)
    assert _helper(fsb).state == "ready"


def test_spawn_stream_and_kill(fsb: Sandbox) -> None:
    helper = _helper(fsb)
    n = helper.used["fast"]
    proc = fsb.spawn(["sh", "-c", "echo up; sleep 300"])
    assert next(iter(proc.stdout)) == b"up\n"
    proc.kill()
    assert proc.wait().returncode == 137
    assert helper.used["fast"] == n + 1 and helper.state == "ready"


def _in_ns_of(pid: int) -> set[int]:
    """Host pids of every process in `pid`'s PID namespace."""
    import os

    ns = os.readlink(f"/proc/{pid}/ns/pid")
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    out.add(int(entry))
            except OSError:
                pass
    return out


def test_a_kill_ends_fast_path_processes_and_their_detached_jobs(workspace: Path) -> None:
    """A sandbox killed while helper-forked commands run (one spawned with a detached
    job, one exec in flight on another thread) leaves none of them alive: they are in
    the jail's PID namespace, which dies with it."""
    import threading

    from tests.helpers import gone

    box = Sandbox(_fast_profile(), workdir=workspace)
    box.start()
    try:
        helper = _helper(box)
        proc = box.spawn(["sh", "-c", "(setsid sleep 311 &); echo up; sleep 312"])
        assert next(iter(proc.stdout)) == b"up\n"
        waiter = threading.Thread(target=lambda: box.exec(["sleep", "313"]), daemon=True)
        waiter.start()
        deadline = time.monotonic() + 10
        while helper.used["fast"] < 2 or "313" not in box.run("pgrep -a sleep").output:
            assert time.monotonic() < deadline, box.run("ps -ef").output
            time.sleep(0.05)
        sleeps = {f"sleep\0{n}\0".encode() for n in (311, 312, 313)}
        pids = {p for p in _in_ns_of(helper.pid)
                if Path(f"/proc/{p}/cmdline").read_bytes() in sleeps}
        assert len(pids) == 3, pids
        box.kill("test")
        deadline = time.monotonic() + 10
        while not all(gone(p) for p in pids):
            assert time.monotonic() < deadline, [p for p in pids if not gone(p)]
            time.sleep(0.02)
        waiter.join(10)
        assert Store().get_session(box.id)["state"] == "killed"
    finally:
        box.close()


BOUNDARY = ("grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp"
            "|Seccomp_filters|SigBlk|SigIgn):' /proc/self/status; echo ---; "
            "cat /proc/self/mountinfo; echo ---; cat /proc/self/cgroup; echo ---; "
            "for n in cgroup ipc mnt net pid time user uts; do readlink /proc/self/ns/$n; "
            "done; echo ---; id; umask; ulimit -a; cat /proc/self/limits; echo ---; "
            "env | grep -v '^_=' | sort")
TIOCSTI = ("import errno, fcntl, termios\n"
           "try:\n fcntl.ioctl(0, termios.TIOCSTI, b'x')\n"
           "except OSError as e:\n print(errno.errorcode[e.errno])\n")


def assert_equal_boundary(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> str:
    """BOUNDARY through the helper and through a join: the same, part by part; returns
    what the fast one saw."""
    helper = _helper(box)
    n = helper.used["fast"]
    fast = box.exec(["sh", "-c", BOUNDARY])
    joined = _joined(box, ["sh", "-c", BOUNDARY], monkeypatch)
    assert helper.used["fast"] == n + 1
    assert fast.returncode == joined.returncode == 0, (fast.stderr, joined.stderr)
    for a, b in zip(fast.stdout.split("---"), joined.stdout.split("---"), strict=True):
        assert a == b
    return fast.stdout


def test_equal_boundary(fsb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fast exec sees is what a joined exec sees: credentials, capabilities,
    no-new-privs, seccomp filters, mounts, cgroup, namespaces (network included), rlimits,
    environment; and a TIOCSTI push is refused by the filter (EPERM, not ENOTTY)."""
    fast = assert_equal_boundary(fsb, monkeypatch)
    assert "NoNewPrivs:\t1" in fast and "Seccomp:\t2" in fast
    assert "CapEff:\t0000000000000000" in fast
    for run in (fsb.exec, lambda c: _joined(fsb, c, monkeypatch)):
        r = run(["python3", "-I", "-c", TIOCSTI])
        assert r.stdout.strip() == "EPERM", r


# -- the helper's word is never the result ------------------------------------------------


def _fast_off(box: Sandbox) -> list[dict[str, Any]]:
    return [e["detail"] for e in Store().events(box.id) if e["kind"] == "exec.fast_off"]


@pytest.mark.parametrize("kind", ["c", "python"])
def test_a_forged_exit_status_is_caught(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                        kind: str) -> None:
    """A helper that says every command passed: the result is the kernel's status, and
    a tamper alert. (A supervisor trusting the helper would return 0 here.)"""
    _use_helper(monkeypatch, kind, c_define="SANDBOX_TEST_FORGE_STATUS",
                py_swap=('sock.send(b"X" + struct.pack("<i", status))',
                         'sock.send(b"X" + struct.pack("<i", 0))'))
    with Sandbox(_fast_profile(), workdir=workspace) as box:
        helper = _helper(box)
        r = box.exec(["sh", "-c", "exit 3"])
        assert r.returncode == 3
        assert "tamper.fastexec.status_forged" in _rules(r)
        assert helper.state == "off" and helper.used["fast"] == 1
        r = box.exec(["false"])  # the joined path from here on
        assert r.returncode == 1 and helper.used["join"] == 1
        assert [d["alert"] for d in _fast_off(box)] == ["fastexec.status_forged"]


@pytest.mark.parametrize("kind", ["c", "python"])
def test_a_forged_start_is_caught(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                  kind: str) -> None:
    """A helper that reports a start itself (its own pid, not a child's): the kernel says
    whose pidfd it is; alert, and the exec runs on the joined path."""
    _use_helper(monkeypatch, kind, c_define="SANDBOX_TEST_FORGE_START",
                py_swap=("        try:\n            pid = os.fork()",
                         "        os.write(fds[0], b'S')\n        try:\n"
                         "            pid = os.fork()"))
    with Sandbox(_fast_profile(), workdir=workspace) as box:
        helper = _helper(box)
        r = box.exec(["sh", "-c", "echo ran; exit 4"])
        assert (r.returncode, r.stdout.count("ran")) == (4, 1)
        assert "tamper.fastexec.start_unconfirmed" in _rules(r)
        assert helper.state == "off" and helper.used == {"fast": 0, "join": 1}


@pytest.mark.parametrize(("signal", "rule"), [("KILL", "tamper.fastexec.helper_dead"),
                                              ("STOP", "tamper.fastexec.helper_stopped")])
def test_agent_kills_or_stops_the_helper(fsb: Sandbox, signal: str, rule: str) -> None:
    """The agent shares the helper's uid and can signal it: the next exec is an alert and
    runs joined (never silently), and it still gets the right status."""
    helper = _helper(fsb)
    fsb.run(f"kill -{signal} {_inner_pid(helper.pid)}")
    r = fsb.exec(["sh", "-c", "exit 5"])
    assert r.returncode == 5
    assert rule in _rules(r)
    assert helper.state == "off" and helper.used["join"] == 1
    assert fsb.exec(["true"]).returncode == 0 and helper.used["join"] == 2
    assert [d["alert"] for d in _fast_off(fsb)] == [rule.removeprefix("tamper.")]


def test_the_helper_is_not_the_agents_to_take(fsb: Sandbox) -> None:
    """Non-dumpable: the agent (same uid) cannot read its fds or its memory, and its
    socket is no path in the jail."""
    pid = _inner_pid(_helper(fsb).pid)
    r = fsb.exec(["sh", "-c", f"ls /proc/{pid}/fd; readlink /proc/{pid}/fd/0"])
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert "sandbox-exec" in fsb.exec(["cat", f"/proc/{pid}/comm"]).stdout


def test_off_by_default_and_in_the_record(sb: Sandbox) -> None:
    """The profile key decides; a plain sandbox has no helper."""
    assert load("default").exec.fast is ExecSection().fast
    if not ExecSection().fast:
        part = sb._session.hooks.fast
        assert part is not None and part.helper is None
        assert sb.exec(["true"]).returncode == 0


def test_fast_exec_with_fds_past_1024(workspace: Path) -> None:
    """A process holding hundreds of sandboxes has fds past 1024: select() refused them
    ("filedescriptor out of range") and 773 of the bench's execs failed. poll() it is."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
    held: list[int] = []
    while len(held) < 4000 and (not held or held[-1] < 1100):  # every fd below taken
        held.append(os.open("/dev/null", os.O_RDONLY))
    try:
        box = Sandbox(_fast_profile(), workdir=workspace)
        box.start()
        try:
            helper = _helper(box)
            assert helper.ctl.fileno() > 1024
            n = helper.used["fast"]
            r = box.exec(["sh", "-c", "echo past; exit 3"])
            assert (r.returncode, r.stdout) == (3, "past\n")
            assert helper.used["fast"] == n + 1 and helper.state == "ready"
        finally:
            box.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_compiled_helper_is_the_default_and_its_build_says_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bootstrap installs a compiler, so sessions get the compiled helper; where a host has
    none, the build says what to install (and sessions get the Python helper)."""
    from sandbox.jail.fastexec import build, helper

    assert helper._payload()[1] == "c"
    assert helper._payload()[0][:4] == b"\x7fELF"
    monkeypatch.setenv("SANDBOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.BuildError, match="apt-get install gcc libc6-dev"):
        build.build()


def test_a_nul_in_argv_is_refused_as_on_the_joined_path(fsb: Sandbox) -> None:
    """The helper's wire format is NUL-separated: a NUL inside an argument must not split
    it into two (a different command than the guard checked)."""
    with pytest.raises(ValueError, match="null byte"):
        fsb.exec(["echo", "a\0rm"])
    with pytest.raises(ValueError, match="null byte"):
        fsb.exec(["true"], env={"X": "a\0PATH=/tmp"})
    assert fsb.exec(["echo", "ok"]).stdout == "ok\n"


def test_the_compiled_helper_runs_from_a_sealed_memfd(workspace: Path) -> None:
    """On the host the compiled helper is no file in the jail: the join execs the memfd on
    its stdin, and that memfd is sealed, so nobody (the agent, through a /proc link of the
    join before it execs, included) can rewrite what the next session runs."""
    import os

    from sandbox.jail.fastexec import helper as helper_mod

    with Sandbox(_fast_profile(), workdir=workspace) as box:
        helper = _helper(box)
        assert helper.kind == "c"
        assert os.readlink(f"/proc/{helper.pid}/exe").startswith("/memfd:sandbox-exec")
        fd = helper_mod._sealed(helper_mod._payload()[0])
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"\0", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert box.exec(["true"]).returncode == 0 and helper.used["fast"] == 1
