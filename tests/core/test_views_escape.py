"""M1: agent-controlled text never reaches the operator's terminal as escape sequences.

Real jailed sessions through the real `sandbox` command: the agent puts ESC, BEL, OSC
(title, clipboard, link), CSI and C1 controls into its argv, its output and (through a
guard kill) the session's kill reason; every human view shows them as visible text
(`␛`, `␇`, `\\x9b`), the JSON views keep the exact values.
"""

from __future__ import annotations

import json
from pathlib import Path

from sandbox.textsafe import storable, visible
from tests.helpers import sandbox_cli

# What a terminal would act on. (U+0080-U+009F are the C1 controls: CSI is U+009B.)
CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\n"] + ["\x7f"] + [
    chr(c) for c in range(0x80, 0xA0)]

REPRO = ('import os; os.execv("/bin/true", ["true", '
         '"\\x1b[2J\\x1b[H\\x1b]0;OWNED\\x07session ok: 0 alerts, verify OK"])')
# Output: OSC 0 title, OSC 52 clipboard, OSC 8 link, CSI 2J + fake text, SGR 8, a C1 CSI.
OUTPUT = ("printf 'a\\033]0;TITLE\\007b\\033]52;c;ZWNobyBwd25lZA==\\007"
          "\\033]8;;http://evil/\\033\\\\link\\033]8;;\\033\\\\\\033[2J\\033[8mhidden\\033[0m"
          "\\302\\233""31mC1\\ttab\\r\\nline2\\n'")


def _raw_controls(text: str, *, keep: str = "\n") -> list[str]:
    return sorted({repr(c) for c in text if c in CONTROLS and c not in keep})


def _last_id() -> str:
    return str(json.loads(sandbox_cli("ls", "--json").stdout)[0]["id"])


def test_visible_renders_every_control() -> None:
    s = "\x1b[2J\x07\x9b31m\x00\x7f\u202eabc\udcff\r"
    out = visible(s)
    assert not _raw_controls(out) and "\u202e" not in out and "\udcff" not in out
    assert out == "␛[2J␇\\x9b31m␀␡\\u202eabc\\xff␍"
    assert visible("a\tb\r\nc\n", multiline=True) == "a\tb\nc\n"
    assert visible("a\nb") == "a⏎b"
    assert visible("plain text, ü, 日本") == "plain text, ü, 日本"
    assert storable("x\udcff\x00") == "x\\xff␀"


def test_show_ls_logs_never_print_raw_escapes(workspace: Path) -> None:
    r = sandbox_cli("run", "-w", str(workspace), "--", "python3", "-c", REPRO)
    assert r.returncode == 0, r.stderr
    sid = _last_id()
    show = sandbox_cli("show", sid)
    assert show.returncode == 0, show.stderr
    assert "\x1b" not in show.stdout and "\x07" not in show.stdout, show.stdout
    assert not _raw_controls(show.stdout)
    assert "␛[2J␛[H␛]0;OWNED␇session ok" in show.stdout  # shown, not acted on
    # JSON stays exact: the real ESC is in the argv of the exec event.
    data = json.loads(sandbox_cli("show", sid, "--json").stdout)
    argvs = [" ".join(e["detail"].get("argv") or []) for e in data["events"]
             if e["kind"] == "proc.exec"]
    assert any("\x1b]0;OWNED\x07" in a for a in argvs), argvs

    r = sandbox_cli("run", "-q", "-w", str(workspace), "--", "sh", "-c", OUTPUT)
    assert r.returncode == 0 and "\x1b]52;" in r.stdout  # the program's own stdout is raw
    sid = _last_id()
    for args in (("show", sid, "--output"), ("logs", sid), ("logs", "-f", sid)):
        out = sandbox_cli(*args).stdout
        assert not _raw_controls(out, keep="\n\t"), (args, out)
        assert "a␛]0;TITLE␇b␛]52;c;ZWNobyBwd25lZA==␇" in out, (args, out)
        assert "␛[8mhidden" in out and "\\x9b31mC1\ttab" in out and "line2" in out, out
    data = json.loads(sandbox_cli("show", sid, "--json").stdout)
    assert "\x1b]52;c;" in data["commands"][0]["output"]
    ls = sandbox_cli("ls").stdout
    assert not _raw_controls(ls), ls


def test_ls_now_column_and_run_summary_reason(workspace: Path, test_dir: Path) -> None:
    """A guard kill's reason quotes the agent's argv: the `run` summary shows it safely,
    and so does `ls` (NOW / REASON) and `show`'s header."""
    prof = test_dir / "k.toml"
    prof.write_text('extends = "default"\n[[guard.rules]]\nid = "c.o"\n'
                    'description = "x"\naction = "kill"\n'
                    "process = {argv = ['\\x1b\\]0;OWNED']}\n")
    argv0 = "\x1b]0;OWNED\x07\x1b[2J session ok, 0 alerts"
    r = sandbox_cli("run", "-p", str(prof), "-w", str(workspace), "--", "python3", "-c",
                    f"import os; os.execv('/bin/sh', ['sh', '-c', 'sleep 5', {argv0!r}])")
    assert r.returncode == 137, r.stderr
    reason = next(ln for ln in r.stderr.splitlines() if ln.startswith("  reason:"))
    assert "␛]0;OWNED␇" in reason, r.stderr
    assert not _raw_controls(r.stderr), r.stderr
    sid = _last_id()
    assert "␛]0;OWNED" in sandbox_cli("ls").stdout
    for args in (("ls",), ("show", sid)):
        assert not _raw_controls(sandbox_cli(*args).stdout), args
