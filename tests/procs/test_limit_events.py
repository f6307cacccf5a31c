"""A resource limit being hit is surfaced: a `resource.breach` event with a severity, a guard
verdict (flag at least), counted as an alert and shown by `sandbox show`. Real sessions as
root, real cgroups (memory OOM kill, pids limit, CPU quota saturation), and the sampler's
windowed CPU average that the mining pack's saturation rule needs."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox, Store
from sandbox.events import ListEmit
from sandbox.guard import build_engine
from sandbox.guard.packs import all_rules
from sandbox.jail.profile import GuardSection
from sandbox.monitor.resource_rules import Readings
from sandbox.monitor.sampler import ResourceSampler
from sandbox.parts import limits
from tests.helpers import make_workspace, procs_matching, sandbox_cli, wait_for

# The verdict on a breach comes from a guard rule over `resource.breach` samples. Until a
# built-in pack carries one, the test profiles add it as a profile rule (same matcher).
BREACH_RULE = """
[[guard.rules]]
id = "limits.resource_limit_hit"
pack = "limits"
description = "A resource limit was hit (OOM kill, pids limit, CPU quota saturated)"
action = "flag"
severity = "alert"
sample = { source = ["resource.breach"] }
"""


def _pack_judges_breaches() -> bool:
    return any(r.sample is not None and "resource.breach" in r.sample.source
               for r in all_rules())


def _profile(test_dir: Path, limits_toml: str, extra: str = "") -> str:
    path = test_dir / "limits.toml"
    rule = "" if _pack_judges_breaches() else BREACH_RULE
    path.write_text(f'extends = "default"\n[limits]\n{limits_toml}\n{rule}{extra}')
    return str(path)


def _breaches(sid: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in Store().events(sid, kinds=("resource.breach",))
            if e["detail"].get("reason") == reason]


def _verdicts(sid: str, limit: str) -> list[dict[str, Any]]:
    return [e for e in Store().events(sid, kinds=("guard.verdict",))
            if e["detail"]["evidence"].get("source") == "resource.breach"
            and e["detail"]["evidence"].get("limit") == limit]


def _surfaced(sid: str, reason: str, limit: str, severity: str) -> None:
    """The breach, its verdict, the alert count and `sandbox show` all say so."""
    assert wait_for(lambda: _verdicts(sid, limit), 8), Store().events(sid)
    breach = _breaches(sid, reason)[0]
    assert breach["severity"] == severity and breach["detail"]["message"]
    verdict = _verdicts(sid, limit)[0]
    assert verdict["action"] in ("flag", "block", "kill") and verdict["rule"]
    assert Store().get_session(sid)["n_alerts"] >= 1
    shown = sandbox_cli("show", sid).stdout
    assert "resource.breach" in shown and f"guard.verdict {verdict['rule']}" in shown, shown
    assert f'"limit": "{limit}"' in shown, shown


@pytest.fixture
def fast_sampler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ResourceSampler]:
    """The product's sampler with short windows (the defaults are 60 s and 300 s)."""
    sampler = ResourceSampler(interval=0.2, sample_every=0.5, breach_every=1.0,
                              window_s=3.0, throttle_window_s=2.0)
    monkeypatch.setattr(limits, "sampler", lambda: sampler)
    yield sampler
    sampler.stop()


def test_oom_kill_is_an_alert_with_a_verdict(test_dir: Path) -> None:
    prof = _profile(test_dir, "memory_mib = 100")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w")) as box:
        r = box.run("python3 -c 'b = bytearray(600 << 20); b[::4096] = b\"x\" * "
                    "len(b[::4096]); print(\"survived\")'", timeout=60)
        assert r.exit_code != 0 and "survived" not in r.output
        _surfaced(box.id, "oom_kill", "memory", "alert")
        assert _breaches(box.id, "oom_kill")[0]["detail"]["oom_kills"] >= 1
        assert box.run("echo alive").output == "alive\n"


def test_fork_bomb_at_the_pids_limit_is_an_alert_with_a_verdict(test_dir: Path) -> None:
    prof = _profile(test_dir, "pids = 40")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w")) as box:
        r = box.run("for i in $(seq 1 300); do sleep 31.75 & done", timeout=8)
        assert "Resource temporarily unavailable" in r.output
        _surfaced(box.id, "pids_max", "pids", "alert")
        assert _breaches(box.id, "pids_max")[0]["detail"]["max"] == 40
        box.run("kill -9 $(jobs -p) 2>/dev/null; true", timeout=10)
    assert wait_for(lambda: not procs_matching("sleep 31.75"), 5)


WINDOW_RULE = """
[[guard.rules]]
id = "limits.cpu_window_probe"
pack = "limits"
description = "CPU busy over a window (the shape of mining.cpu_saturation, short)"
action = "flag"
sample = { source = ["resource.sample"], cpu_percent = 5, min_window_s = 2 }
"""


def test_cpu_quota_saturation_and_windowed_samples(
        test_dir: Path, fast_sampler: ResourceSampler) -> None:
    """A busy loop under a 20 % quota: throttled -> cpu breach + verdict; samples carry the
    window average, so a windowed sample rule (as the mining pack has) fires."""
    prof = _profile(test_dir, "cpu_percent = 20", WINDOW_RULE)
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w")) as box:
        box.run("timeout 10 sh -c 'while :; do :; done' >/dev/null 2>&1 &")
        _surfaced(box.id, "cpu_throttled", "cpu", "warning")
        breach = _breaches(box.id, "cpu_throttled")[0]["detail"]
        assert breach["max"] == 20 and breach["throttled_ratio"] >= 0.5
        assert wait_for(lambda: [e for e in Store().events(box.id, kinds=("guard.verdict",))
                                 if e["rule"] == "limits.cpu_window_probe"], 5)
        samples = Store().events(box.id, kinds=("resource.sample",))
        assert max(s["detail"]["window_s"] for s in samples) >= 2
        assert all(s["detail"]["cpu_percent"] <= 40 for s in samples)  # quota holds
        box.run("pkill -f 'while :' ; true")
        assert len(_breaches(box.id, "cpu_throttled")) == 1  # one episode, one breach


def test_mining_saturation_rule_fires_on_the_samplers_window() -> None:
    """The built-in mining.cpu_saturation (90 % for 300 s) fires on what the product's
    sampler emits after five minutes of a saturated core, and not before."""
    clock = deque([0.0])
    sampler = ResourceSampler(interval=1.0, sample_every=5.0, clock=lambda: clock[0])
    emit = ListEmit()
    engine = build_engine(GuardSection())
    st = Readings()
    for t in range(0, 330):
        clock[0] = float(t)
        sample = {"cpu_seconds": 0.95 * t, "cpu_percent": 95.0, "mem_bytes": 1 << 20,
                  "pids": 3, "pids_limit": 1024, "cpu_periods": 0, "cpu_throttled": 0}
        sampler.rules.check(sample, emit, st)
    fired = []
    for e in emit.of_kind("resource.sample"):
        if any(v.rule_id == "mining.cpu_saturation" for v in engine.evaluate_event(e)):
            fired.append(e["detail"]["window_s"])
    assert fired and min(fired) >= 300
    assert all(e["detail"]["cpu_percent"] == pytest.approx(95, abs=1)
               for e in emit.of_kind("resource.sample")[1:])


def _drive(sampler: ResourceSampler, clock: list[float], readings: list[dict[str, Any]]
           ) -> ListEmit:
    """Feed readings one second apart through the sampler's per-session check."""
    emit, st = ListEmit(), Readings()
    for reading in readings:
        sampler.rules.check({"pids_limit": 40, **reading}, emit, st)
        clock[0] += 1.0
    return emit


def test_breach_episodes_are_reported_once() -> None:
    """A fork bomb that keeps hitting pids.max is one breach; a second bomb after a quiet
    spell is another. CPU throttling: one breach per saturated episode, with hysteresis.
    memory.failcnt alone (page-cache reclaim at the limit) is no breach."""
    clock = [0.0]
    sampler = ResourceSampler(breach_every=5.0, throttle_window_s=10.0, clock=lambda: clock[0])
    bomb = [{"pids": 40, "pids_max_hits": 10 * i} for i in range(20)]
    calm = [{"pids": 2, "pids_max_hits": 190} for _ in range(10)]
    again = [{"pids": 40, "pids_max_hits": 200 + i} for i in range(3)]
    emit = _drive(sampler, clock, bomb + calm + again)
    assert [e["detail"]["reason"] for e in emit.of_kind("resource.breach")] == [
        "pids_max", "pids_max"]

    def cpu(t: int, throttled: int) -> dict[str, Any]:
        # runnable in every 100 ms period; `throttled` of its 10 periods a second throttled
        return {"cpu_seconds": 0.2 * t, "cpu_periods": 10 * t, "cpu_throttled": throttled,
                "cpu_limit_percent": 20.0, "mem_failcnt": 100 * t}

    total, readings = 0, []
    for t in range(60):  # 20 s saturated, 20 s calm, 20 s saturated
        total += 9 if t < 20 or t >= 40 else 0
        readings.append(cpu(t, total))
    clock[0] = 0.0
    emit = _drive(ResourceSampler(throttle_window_s=10.0, clock=lambda: clock[0]), clock,
                  readings)
    breaches = emit.of_kind("resource.breach")
    assert [(b["detail"]["reason"], b["severity"]) for b in breaches] == [
        ("cpu_throttled", "warning")] * 2
    assert breaches[0]["detail"]["max"] == 20.0 and breaches[0]["detail"]["window_s"] >= 9.5
    assert breaches[0]["detail"]["throttled_ratio"] == pytest.approx(0.9)


def test_file_size_limit_and_output_cap_become_breaches(test_dir: Path) -> None:
    """No cgroup counter sees RLIMIT_FSIZE or the recorder's output cap: the limits part
    judges each finished command's real result (`command_finished`, called by the session)
    and records resource.breach events that the guard judges like the others."""
    prof = _profile(test_dir, "file_size_mib = 1",
                    "[recording]\nmax_output_bytes = 4096\n")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w")) as box:
        part: Any = box._session.hooks.limits
        results = [box.run("head -c 3M /dev/zero > big"),
                   box.run("python3 -c 'open(\"big2\", \"wb\").write(bytes(3 << 20))'"),
                   box.run("seq 1 100000")]
        # SIGXFSZ kills (status 153) or, where it is ignored (as Python and, through it,
        # anything it starts without restoring signals do), EFBIG: "File too large".
        assert all(r.exit_code != 0 for r in results[:2]) and results[2].truncated
        for r in results:  # until session.run calls command_finished itself
            if not [b for b in Store().events(box.id, kinds=("resource.breach",))
                    if b["detail"].get("command") == r.command]:
                part.command_finished(r.command, r.exit_code, r.output, r.truncated,
                                      len(r.output.encode()))
        fsize = _breaches(box.id, "file_size_limit")
        assert {b["detail"]["command"] for b in fsize} == {r.command for r in results[:2]}
        assert fsize[0]["detail"]["max"] == 1 << 20
        _surfaced(box.id, "file_size_limit", "file_size", "warning")
        _surfaced(box.id, "output_truncated", "output", "warning")
