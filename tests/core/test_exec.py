"""`Sandbox.exec`: a fresh process in the live jail, its exit status seen from outside."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sandbox import ExecTimeout, Sandbox, Store


def test_streams_apart_exit_code_and_stdin(sb: Sandbox) -> None:
    r = sb.exec(["sh", "-c", "cat; echo to-err >&2; exit 7"], input="hello\n")
    assert (r.returncode, r.stdout, r.stderr) == (7, "hello\n", "to-err\n")


def test_same_jail_as_the_shell(sb: Sandbox, workspace: Path) -> None:
    """Same workspace, same private /tmp, same limits: no capabilities, no-new-privs,
    seccomp, the agent user, loopback only."""
    sb.run("echo from-shell > /tmp/shared; echo ws > in-ws")
    r = sb.exec("cat /tmp/shared in-ws; grep -E '^(CapEff|NoNewPrivs|Seccomp):' "
                "/proc/self/status; id -u; ls /sys/class/net")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert "from-shell" in lines and "ws" in lines
    assert "0000000000000000" in lines and lines[lines.index("NoNewPrivs:") + 1] == "1"
    assert lines[lines.index("Seccomp:") + 1] == "2"
    assert int(lines[-2]) == workspace.stat().st_uid and lines[-1] == "lo"


def test_signals_missing_programs_and_cwd(sb: Sandbox) -> None:
    assert sb.exec(["sh", "-c", "kill -TERM $$"]).returncode == 143  # not a timeout
    assert sb.exec(["no-such-program-xyz"]).returncode == 127
    sb.run("mkdir -p sub/dir")
    r = sb.exec(["pwd"], cwd="sub/dir")
    assert r.stdout.strip().endswith("/sub/dir")


def test_binary_and_large_stdin(sb: Sandbox) -> None:
    blob = bytes(range(256)) * 40000  # ~10 MiB through stdin and back
    r = sb.exec(["cat"], input=blob, max_output=32 << 20)
    assert r.stdout_bytes == blob and not r.truncated


def test_timeout_kills_the_tree_and_keeps_partial_output(sb: Sandbox) -> None:
    t0 = time.monotonic()
    with pytest.raises(ExecTimeout) as info:
        sb.exec(["sh", "-c", "echo started; (sleep 300 &); sleep 300"], timeout=1.5)
    assert time.monotonic() - t0 < 20
    assert info.value.result.stdout == "started\n" and info.value.result.timed_out
    assert isinstance(info.value, TimeoutError)
    left = sb.run("pgrep -c sleep || true").output.strip()
    assert left == "0", left


def test_every_exec_is_recorded_and_guarded(sb: Sandbox) -> None:
    sb.exec(["echo", "recorded"])
    rows = Store().commands(sb.id)
    assert rows[-1]["source"] == "exec" and rows[-1]["exit_code"] == 0
    assert "recorded" in rows[-1]["output"]
    r = sb.exec(["ssh", "-o", "BatchMode=yes", "-R", "1:127.0.0.1:1", "x"])
    assert r.blocked and r.returncode == 126
    assert any(a["rule"] == "tunnels.ssh_forward" for a in r.alerts)


def test_user_and_non_executable_targets(sb: Sandbox, workspace: Path) -> None:
    import pwd

    agent = pwd.getpwuid(workspace.stat().st_uid).pw_name
    assert sb.exec(["id", "-un"], user=agent).stdout.strip() == agent
    for other in ("root", "nobody"):
        with pytest.raises(PermissionError, match="only the sandbox's agent user"):
            sb.exec(["id"], user=other)
    sb.write_file("notexec.sh", "#!/bin/sh\necho hi\n")
    with pytest.raises(PermissionError, match="not executable"):
        sb.exec(["./notexec.sh"])


def test_var_tmp_is_noexec_unless_the_profile_says(workspace: Path) -> None:
    """inspect-ai injects its tool helpers into /var/tmp and runs them from there."""
    from sandbox.jail.profile import load, override

    prog = "cp /bin/true /var/tmp/t && /var/tmp/t && echo RAN"
    with Sandbox(workdir=workspace) as sb:
        assert sb.exec(prog).stdout == ""
    profile = override(load("default"), {"filesystem": {"exec_var_tmp": True}})
    with Sandbox(profile, workdir=workspace) as sb:
        r = sb.exec(prog + "; touch /var/tmp/x; ls -ld /var/tmp; mount | grep ' /var/tmp '")
        assert "RAN" in r.stdout, r.stderr
        # still the jail's private tmpfs, no setuid, nothing of it on the host
        assert "nosuid" in r.stdout and not Path("/var/tmp/t").exists()


def test_exec_status_cannot_be_forged_from_inside(sb: Sandbox) -> None:
    """The status is the supervisor's own waitpid of the join process (host PID
    namespace): marker lookalikes, a jail-side process killing the shell, or ptrace from
    a sibling change nothing in the result or the record."""
    forged = "\x1b]133;D;0;x;1;\x07exit 0\n__SBX_DONE__ 0\n"
    r = sb.exec(["sh", "-c", f"printf '{forged}'; exit 5"])
    assert r.returncode == 5
    row = Store().commands(sb.id)[-1]
    assert row["exit_code"] == 5 and row["source"] == "exec"
    ev = [e for e in Store().events(sb.id) if e["kind"] == "exec.result"][-1]
    assert ev["detail"]["returncode"] == 5
    assert ev["detail"]["stdout_recorded"] == len(r.stdout_bytes)
    # a sibling in the jail cannot attach to the exec'd process to change its exit
    sb.exec("sleep 30 > /dev/null 2>&1 &")
    attach = sb.exec(["python3", "-c",
                      "import ctypes,subprocess;"
                      "pid=int(subprocess.check_output(['pgrep','-n','sleep']));"
                      "libc=ctypes.CDLL(None,use_errno=True);"
                      "print(libc.ptrace(16,pid,0,0), ctypes.get_errno())"])
    assert attach.stdout.split()[0] == "-1", attach.stdout  # PTRACE_ATTACH refused


def test_script_wrapper_does_not_hide_a_tunnel(sb: Sandbox) -> None:
    """util-linux `script -qc CMD` (how a command gets a pty) was not unwrapped by the
    guard: the ssh -R inside ran."""
    r = sb.exec(["script", "-qc", "ssh -o BatchMode=yes -R 1:127.0.0.1:1 x", "/dev/null"])
    assert r.blocked and any(a["rule"] == "tunnels.ssh_forward" for a in r.alerts)


def test_timeouts_in_the_record_and_overlong_arguments(sb: Sandbox) -> None:
    with pytest.raises(ExecTimeout):
        sb.exec(["sleep", "30"], timeout=0.5)
    row = Store().commands(sb.id)[-1]
    assert row["timed_out"] == 1 and row["exit_code"] is None
    with pytest.raises(ValueError, match="kernel's limit"):
        sb.exec(["echo", "x" * 131072])
    assert sb.exec(["echo", "x" * 131071]).stdout == "x" * 131071 + "\n"


def test_recorder_argv_from_a_script_is_a_hookless_shell(sb: Sandbox) -> None:
    """The guard exempted `bash --noprofile --norc -i` by argv alone: the agent's own
    copy, run from a script (not typed), was never flagged. Only the session's first such
    exec (its recorder shell) is exempt now."""
    sb.write_file("x.sh", "bash --noprofile --norc -i </dev/null\n")
    sb.exec(["sh", "x.sh"])
    rules = [e["rule"] for e in Store().events(sb.id) if e["kind"] == "guard.verdict"]
    assert "tamper.hookless_shell" in rules, rules
    sb2 = Store().events(sb.id)
    assert rules.count("tamper.hookless_shell") == 1, sb2  # the recorder's own: not flagged


def test_what_an_exec_runs_is_watched_like_the_shell(sb: Sandbox) -> None:
    """An exec's process is the supervisor's child (firejail --join), not the jail's: the
    exec monitor never attributed it, so a script run through exec (every framework
    adapter's door) escaped the process rules. `ssh -R` assembled at run time ran."""
    sb.write_file("t.sh", "x=ss; ${x}h -o BatchMode=yes -R 1:127.0.0.1:1 nohost.test\n")
    r = sb.exec(["sh", "t.sh"])
    assert any(a["rule"] == "tunnels.ssh_forward" for a in r.alerts), r.alerts
    assert r.returncode == 137  # the block killed the process
    execs = [e["detail"]["argv"] for e in Store().events(sb.id) if e["kind"] == "proc.exec"]
    assert ["sh", "t.sh"] in execs


def test_a_sync_caller_interrupted_mid_exec_still_leaves_its_record(
        sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Sandbox.exec` writes the record in the caller's thread; a caller interrupted while
    it waits (Ctrl-C) hands the record to the recorder's threads: what ran is recorded."""
    import concurrent.futures

    real = concurrent.futures.Future.result
    calls = {"n": 0}

    def interrupted(self: concurrent.futures.Future[object], timeout: float | None = None
                    ) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(self, timeout)

    monkeypatch.setattr(concurrent.futures.Future, "result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sb.exec(["sh", "-c", "sleep 0.3; echo interrupted-but-recorded"])
    monkeypatch.setattr(concurrent.futures.Future, "result", real)
    deadline = time.monotonic() + 10
    while not any("interrupted-but-recorded" in (c["output"] or "")
                  for c in Store().commands(sb.id)):
        assert time.monotonic() < deadline, Store().commands(sb.id)
        time.sleep(0.05)


def test_the_join_names_the_live_jail_by_its_pid(sb: Sandbox) -> None:
    """The join enters the jail by its first process's pid (no firejail --name: its
    uniqueness scan read every process's cmdline on the host). The pid stays the jail's
    only until it is reaped: a jail that has ended is never joined, whatever now holds
    its pid."""
    import os
    import signal
    import subprocess

    from sandbox import SessionClosed
    from sandbox.jail.firejail import jail_name

    s = sb._session
    assert s.join_flag() == f"--join={s.jail_pid}"
    argv = Path(f"/proc/{s.jail_pid}/cmdline").read_bytes().split(b"\0")
    assert not any(a.startswith(b"--name=") for a in argv)
    assert f"--ignore={jail_name(s.id)}".encode() in argv  # the marker a crash's gc checks
    assert sb.exec(["true"], timeout=10).returncode == 0
    assert s.jail_pid is not None
    os.kill(s.jail_pid, signal.SIGKILL)
    os.waitpid(s.jail_pid, 0)  # reaped: from here its pid may be any process's
    with pytest.raises(SessionClosed, match="jail has ended"):
        s.join_flag()
    try:  # the helper may take it in the namespace's last moments: then it is killed
        r = sb.exec(["true"], timeout=10)
    except (SessionClosed, subprocess.SubprocessError):
        pass
    else:
        assert r.returncode != 0, f"an exec in an ended jail ran: {r}"


def test_a_crash_cleanup_kills_only_the_jail_its_marker_names(workspace: Path) -> None:
    """`reap.kill_jail` (gc after an owner's crash) checks the pid's argv for the
    session's marker as a whole argument: a process whose argument merely starts with it
    (a reused pid) is left alone."""
    import subprocess
    import sys

    from sandbox import reap
    from sandbox.jail.firejail import jail_name

    with Sandbox(workdir=workspace) as box:
        name = jail_name(box.id)
        decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                  f"--ignore={name}x", f"--name={name}x"])
        try:
            assert not reap.kill_jail(decoy.pid, name)
            assert decoy.poll() is None
            pid = box._session.jail_pid
            assert pid is not None
            assert not reap.kill_jail(pid, jail_name("0000000000"))
            assert reap.kill_jail(pid, name)
            assert _wait_for_exit(pid)
        finally:
            decoy.kill()
            decoy.wait()


def _wait_for_exit(pid: int) -> bool:
    import os

    for _ in range(200):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        time.sleep(0.01)
    return False
