"""L3 / L5: bad input gets a clear one-line error (no traceback, nothing killed by
accident), and odd but legal input (a non-UTF-8 argv, binary output, NUL) is recorded.

Through the real `sandbox` command and real jailed sessions.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import Store
from sandbox.errors import NotFound, ProfileError
from sandbox.jail.profile import load
from tests.helpers import procs_matching, sandbox_cli, wait_for


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: error: "), r.stderr
    return lines[0]


# -- session ids ---------------------------------------------------------------------------

def test_wildcards_in_an_id_match_nothing_and_kill_nothing(workspace: Path) -> None:
    """`sandbox kill %` killed the only live session (an unescaped LIKE)."""
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "run", "-q", "-w",
                             str(workspace), "--", "sleep", "1007.25"])
    try:
        assert wait_for(lambda: procs_matching("sleep 1007.25"), 15)
        for verb in ("kill", "show", "logs", "verify", "export"):
            for bad in ("%", "_", "%%", "_%", "%a", "__________"):
                line = _one_line_error(sandbox_cli(verb, bad))
                assert "no such session" in line, line
        line = _one_line_error(sandbox_cli("show", ""))
        assert "no session id given" in line
        assert procs_matching("sleep 1007.25"), "a wildcard id killed the live session"
        sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
        assert Store().get_session(sid)["state"] == "running"
        # A real prefix still works.
        assert sandbox_cli("show", sid[:4]).returncode == 0
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_huge_id_is_a_one_line_error() -> None:
    line = _one_line_error(sandbox_cli("show", "a" * 100_000))
    assert "no such session" in line and "100000 characters" in line and len(line) < 300
    line = _one_line_error(sandbox_cli("kill", "\x1b]0;x\x07" * 10))
    assert "\x1b" not in line and "no such session" in line


def test_store_id_lookup_is_literal(test_dir: Path) -> None:
    st = Store(test_dir / "ids.db")
    for sid in ("abc123", "abd999"):
        st.create_session(sid, profile="p", kind="api", workdir="/w", argv=[], owner_pid=1,
                          owner_start="0", host="h", user="u")
    assert st.get_session("abc")["id"] == "abc123"
    for bad in ("ab", "a%", "a_c", "%", "_", "", "x" * 65):
        with pytest.raises(NotFound):
            st.get_session(bad)


# -- profiles ------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("processes", -5), ("processes", 0), ("open_files", 0), ("pids", -1),
    ("cpu_percent", 0), ("file_size_mib", -1), ("memory_mib", -1), ("address_space_mib", -2),
    ("command_timeout_s", 0), ("command_timeout_s", -1.5),
])
def test_negative_or_zero_limits_are_a_profile_error(test_dir: Path, key: str,
                                                     value: float) -> None:
    f = test_dir / "neg.toml"
    f.write_text(f'extends = "default"\n[limits]\n{key} = {value}\n')
    with pytest.raises(ProfileError) as e:
        load(str(f))
    assert str(f) in str(e.value) and f"limits.{key}" in str(e.value), e.value


def test_zero_means_no_limit_where_the_doc_says_so(test_dir: Path) -> None:
    f = test_dir / "zero.toml"
    f.write_text('extends = "default"\n[limits]\nmemory_mib = 0\naddress_space_mib = 0\n')
    assert load(str(f)).limits.memory_mib == 0


def test_negative_limit_from_the_cli_is_a_clear_error(workspace: Path, test_dir: Path) -> None:
    """Before: firejail said `invalid rlimit -5` and the session showed `exited exit 1`."""
    f = test_dir / "neg.toml"
    f.write_text("[limits]\nprocesses = -5\n")
    line = _one_line_error(sandbox_cli("run", "-p", str(f), "-w", str(workspace), "--",
                                       "true"))
    assert str(f) in line and "limits.processes" in line, line
    assert json.loads(sandbox_cli("ls", "--json").stdout) == []  # no session was started


def test_a_missing_parent_names_the_child_file(test_dir: Path) -> None:
    f = test_dir / "child.toml"
    f.write_text('extends = "nonexistent-parent"\n')
    with pytest.raises(ProfileError) as e:
        load(str(f))
    assert str(f) in str(e.value) and "nonexistent-parent" in str(e.value)
    line = _one_line_error(sandbox_cli("profiles", "show", str(f)))
    assert str(f) in line


def test_a_huge_profile_is_refused_quickly(test_dir: Path) -> None:
    f = test_dir / "big.toml"
    f.write_text('extends = "default"\n' + "# padding\n" * 300_000)  # ~3 MB
    t0 = time.monotonic()
    with pytest.raises(ProfileError, match="too big"):
        load(str(f))
    assert time.monotonic() - t0 < 1.0
    assert str(f) in _one_line_error(sandbox_cli("profiles", "show", str(f)))


# -- argv and output -----------------------------------------------------------------------

def test_a_non_utf8_argv_runs_and_is_recorded(workspace: Path) -> None:
    """`sandbox run -- printf $'\\xff'` raised UnicodeEncodeError before the program ran."""
    r = subprocess.run([sys.executable, "-m", "sandbox", "run", "-w", str(workspace), "--",
                        b"printf", b"A\xffB"], capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout == b"A\xffB" and b"Traceback" not in r.stderr
    sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
    s = Store().get_session(sid)
    assert s["state"] == "exited" and s["exit_code"] == 0, s
    cmd = Store().commands(sid)[0]
    assert cmd["text"] == "printf 'A\\xffB'"  # the undecodable byte, shown as \xff
    assert Store().verify(sid)[0]
    show = sandbox_cli("show", sid)
    assert show.returncode == 0 and "printf 'A\\xffB'" in show.stdout


def test_any_str_is_storable(test_dir: Path) -> None:
    st = Store(test_dir / "s.db")
    st.create_session("abc", profile="p", kind="api", workdir="/w", argv=["\udcff"],
                      owner_pid=1, owner_start="0", host="h", user="u")
    st.update_session("abc", current_command="x\udcff\ud800\x00y")
    assert st.get_session("abc")["current_command"] == "x\\xff\\ud800␀y"
    st.add_command("abc", text="t\udcfe", output="o\udcfd", exit_code=0, started=1.0,
                   duration=0.0)
    st.add_event("abc", "k", {"argv": ["\udcff"]}, rule="r\udcff")
    c = st.commands("abc")[0]
    assert c["text"] == "t\\xfe" and c["output_raw"] == b"o\xfd"
    assert st.verify("abc")[0]


def test_binary_output_is_stored_losslessly(test_dir: Path) -> None:
    """L5 at the store: exact bytes back, NUL not cutting the text for SQL tools, and the
    exact bytes covered by the chain."""
    path = test_dir / "b.db"
    st = Store(path)
    st.create_session("abc", profile="p", kind="api", workdir="/w", argv=[], owner_pid=1,
                      owner_start="0", host="h", user="u")
    blob = bytes(range(256)) * 12
    st.add_command("abc", text="head -c 3072 /dev/urandom", output=blob, exit_code=0,
                   started=1.0, duration=0.0)
    st.add_command("abc", text="printf 'a\\0b'", output=b"a\x00b\n", exit_code=0,
                   started=1.0, duration=0.0)
    st.add_command("abc", text="echo ok", output=b"ok\n", exit_code=0, started=1.0,
                   duration=0.0)
    from sandbox.record import output_bytes_of

    rows = st.commands("abc")
    assert [output_bytes_of(r) for r in rows] == [blob, b"a\x00b\n", b"ok\n"]
    assert rows[0]["output_bytes"] == 3072 and rows[2]["output_raw"] is None
    db = sqlite3.connect(path)
    lengths = db.execute("SELECT length(output), length(output_raw) FROM commands "
                         "ORDER BY seq").fetchall()
    assert lengths[1] == (4, 4) and lengths[0][1] == 3072  # not cut at the NUL
    assert st.verify("abc")[0]
    db.execute("UPDATE commands SET output_raw=? WHERE seq=2", (b"a\x00c\n",))
    db.commit()
    ok, msg = st.verify("abc")
    assert not ok and "seq=2" in msg and "edited" in msg


def test_binary_output_of_a_real_run(workspace: Path) -> None:
    """L5 end to end: 3 KiB of every byte value from `sandbox run` comes back exact from
    the store, and `show --output` renders it without a raw control character."""
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 12 + b'a\\x00b')"
    r = subprocess.run([sys.executable, "-m", "sandbox", "run", "-q", "-w", str(workspace),
                        "--", "python3", "-c", script], capture_output=True, timeout=60,
                       check=False)
    want = bytes(range(256)) * 12 + b"a\x00b"
    assert r.returncode == 0 and r.stdout == want
    sid = json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"]
    from sandbox.record import output_bytes_of

    cmd = Store().commands(sid)[0]
    assert output_bytes_of(cmd) == want, "the store lost bytes (U+FFFD)"
    out = sandbox_cli("show", sid, "--output").stdout
    assert "\x1b" not in out and "\x00" not in out and "\\xff" in out
    exported = [json.loads(line) for line in sandbox_cli("export", sid).stdout.splitlines()]
    import base64

    cmds = [e for e in exported if e["type"] == "command"]
    assert base64.b64decode(cmds[0]["output_raw_b64"]) == want

