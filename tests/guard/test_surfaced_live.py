"""Real jailed sessions (root): benign lookalikes are never blocked, and the behaviours
issue 12 lists under "Surfaced" each leave an event with a severity and a rule verdict
that `sandbox show` prints and the session counts as an alert.

Nothing here touches the network: the sessions run with the default profile (no
network), and every command is bounded by a timeout.
"""

from __future__ import annotations

from pathlib import Path

from sandbox import Sandbox, Store
from tests.helpers import make_workspace, sandbox_cli, wait_for

from .benign import EXPECTED, LIVE_SUBSET

# (command, rule that must give a verdict). Each runs in the same session, one at a time.
SURFACED: list[tuple[str, str]] = [
    ("ls /var/lib/sandbox", "tamper.state_hunt"),
    ("find / -maxdepth 3 -name 'sandbox.db' 2>/dev/null | head -1", "tamper.state_hunt"),
    ('cat "${SANDBOX_DB:-/var/lib/sandbox/sandbox.db}"', "tamper.state_hunt"),
    ("nft list ruleset", "escape.firewall_tools"),
    ("iptables -L -n", "escape.firewall_tools"),
    ("seccomp-tools dump ./a.out", "escape.firewall_tools"),
    ("scmp_sys_resolver 59", "escape.firewall_tools"),
    ("bash --norc -i", "tamper.hookless_shell"),
    ("bash --noprofile --norc -i", "tamper.hookless_shell"),
    ("sh -i", "tamper.hookless_shell"),
    ("env -i bash", "tamper.hookless_shell"),
    ("setsid sleep 0.2", "tamper.detach"),
    ("nohup true", "tamper.detach"),
    ("sleep 0.2 & disown", "tamper.detach"),
    ("tcpdump -i any -c 1", "recon.packet_capture"),
    ("tshark -c 1", "recon.packet_capture"),
    ("python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'",
     "recon.packet_capture"),
]


def _verdicts(sid: str) -> list[dict]:
    return Store().events(sid, kinds=("guard.verdict",))


def test_benign_lookalikes_are_never_blocked_in_a_real_session(test_dir: Path) -> None:
    ws = make_workspace(test_dir / "w")
    with Sandbox(workdir=ws) as box:
        for cmd in LIVE_SUBSET:
            r = box.run(cmd, timeout=20)
            assert not r.blocked and r.exit_code != 126, (cmd, r.output)
            assert not [a for a in r.alerts if a.get("action") in ("block", "kill")], (cmd, r)
        assert box.run("echo alive").output == "alive\n"
        sid = box.id
    stops = [(e["rule"], e["action"], e["detail"]["evidence"]) for e in _verdicts(sid)
             if e["action"] in ("block", "kill")]
    assert not stops
    assert Store().get_session(sid)["state"] != "killed"
    # Only the documented flags fire on the lookalikes (text or exec evidence).
    allowed = {rule for rule, _ in EXPECTED.values() if rule}
    assert {e["rule"] for e in _verdicts(sid)} <= allowed


def test_surfaced_behaviours_get_verdicts_in_a_real_session(test_dir: Path) -> None:
    ws = make_workspace(test_dir / "w")
    with Sandbox(workdir=ws) as box:
        sid = box.id
        for cmd, rule in SURFACED:
            before = sum(1 for e in _verdicts(sid) if e["rule"] == rule)
            r = box.run(cmd, timeout=20)
            assert not r.blocked, (cmd, r.output)  # surfaced, not refused
            assert wait_for(lambda rule=rule, before=before: sum(
                1 for e in _verdicts(sid) if e["rule"] == rule) > before, 5), (cmd, rule)
            # The command's own result carries the alert.
            assert any(a.get("rule") == rule for a in r.alerts), (cmd, rule, r.alerts)
        assert box.run("echo alive").output == "alive\n"
    verdicts = _verdicts(sid)
    for _, rule in SURFACED:
        mine = [e for e in verdicts if e["rule"] == rule]
        assert mine and all(e["severity"] in ("warning", "alert", "critical") for e in mine)
        assert all(e["action"] == "flag" for e in mine), rule
    session = Store().get_session(sid)
    assert session["n_alerts"] >= len(SURFACED)
    show = sandbox_cli("show", sid)
    assert show.returncode == 0, show.stderr
    for rule in {rule for _, rule in SURFACED}:
        assert rule in show.stdout, rule
    # The per-episode report (RL pipelines) lists them as violations.
    from sandbox.record.export import report

    rep = report(Store(), sid)
    assert {rule for _, rule in SURFACED} <= {v["rule"] for v in rep["violations"]}
    assert rep["verdict"] == "flag"
