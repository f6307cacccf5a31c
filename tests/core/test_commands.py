"""The recorded shell: commands are delimited by markers, in order, with nothing lost."""

from __future__ import annotations

from pathlib import Path

from sandbox import Sandbox, SessionClosed, Store


def test_thousand_commands_in_order(sb: Sandbox) -> None:
    """1,000 commands in a row return their own output and exit code, and are stored in order."""
    for i in range(1000):
        r = sb.run(f"echo out-{i}; exit_code={i % 7}; (exit {i % 7})")
        assert r.output == f"out-{i}\n", i
        assert r.exit_code == i % 7, i
    rows = Store().commands(sb.id)
    assert [row["text"] for row in rows][:3] == [
        f"echo out-{i}; exit_code={i % 7}; (exit {i % 7})" for i in range(3)
    ]
    assert len(rows) == 1000
    assert [row["exit_code"] for row in rows] == [i % 7 for i in range(1000)]
    assert all(row["output"] == f"out-{i}\n" for i, row in enumerate(rows))


def test_state_persists_between_commands(sb: Sandbox) -> None:
    """cd and variables persist: it is one shell, not a process per command."""
    sb.run("mkdir -p sub && cd sub && X=42")
    assert Store().get_session(sb.id)["current_command"] is None  # cleared once recorded
    assert sb.run("pwd").output.strip().endswith("/sub")
    assert sb.run("echo $X").output == "42\n"


def test_copied_marker_does_not_end_command(sb: Sandbox) -> None:
    """Output that contains a marker with the wrong nonce is output, and is recorded as forged."""
    r = sb.run(r"printf '\033]133;D;0;0123456789abcdef\007'; echo still-running; exit_code=5; (exit 5)")
    assert "still-running" in r.output
    assert r.exit_code == 5
    kinds = [e["kind"] for e in Store().events(sb.id)]
    assert "shell.marker_forged" in kinds


def test_timeout_returns_partial_output_and_shell_survives(sb: Sandbox) -> None:
    """A command past its timeout is interrupted, keeps its partial output, and the next works."""
    r = sb.run("echo partial; sleep 30; echo never", timeout=1.0)
    assert r.timed_out
    assert "partial" in r.output and "never" not in r.output
    r2 = sb.run("echo next")
    assert r2.output == "next\n" and r2.exit_code == 0


def test_timeout_of_a_process_ignoring_sigint(sb: Sandbox) -> None:
    """A command that ignores Ctrl-C is killed, and the shell stays usable."""
    r = sb.run("trap '' INT; python3 -c 'import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)'", timeout=1.0)
    assert r.timed_out
    assert sb.run("echo ok").output == "ok\n"


def test_large_and_binary_output_is_capped_and_marked(workspace: Path) -> None:
    """Big output is cut to the profile's cap with truncation marked; binary bytes are safe."""
    with Sandbox(workdir=workspace) as box:
        r = box.run("head -c 5000000 /dev/urandom")
        assert r.truncated
        assert "bytes not recorded" in r.output
        assert len(r.output.encode()) < 1_100_000 * 3
        assert box.run("echo fine").output == "fine\n"
        row = Store().commands(box.id)[-2]
        assert row["truncated"] == 1 and row["output_bytes"] == 5000000


def test_long_command_text(sb: Sandbox) -> None:
    """Command text longer than the terminal's 4 KiB line buffer still arrives whole."""
    payload = "x" * 100_000
    r = sb.run(f"echo {payload} | wc -c")
    assert r.output.strip() == "100001"


def test_multiline_and_quotes(sb: Sandbox) -> None:
    """Heredocs, quotes, backslashes and control characters survive the trip."""
    r = sb.run("cat <<'EOT'\nline 'one'\n\"two\" \\three\tfour\nEOT")
    assert r.output == "line 'one'\n\"two\" \\three\tfour\n"


def test_stdin_is_empty_for_api_commands(sb: Sandbox) -> None:
    """`read` does not hang: an agent has no keyboard."""
    r = sb.run("read x; echo got=$?", timeout=5)
    assert not r.timed_out and r.output == "got=1\n"


def test_exit_ends_the_session(workspace: Path) -> None:
    """`exit` ends the session as exited; later commands raise SessionClosed."""
    box = Sandbox(workdir=workspace).start()
    box.run("exit 3")
    assert box.state == "exited"
    try:
        box.run("true")
    except SessionClosed:
        pass
    else:
        raise AssertionError("run after exit should raise SessionClosed")
    assert Store().get_session(box.id)["state"] == "exited"


def test_one_sandbox_shared_between_threads(sb: Sandbox) -> None:
    """Commands from many threads queue on the sandbox's lock; none mixes with another."""
    import threading

    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(50):
            r = sb.run(f"echo t{n}-{i}")
            if r.output != f"t{n}-{i}\n":
                errors.append(r.output)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(Store().commands(sb.id)) == 200
