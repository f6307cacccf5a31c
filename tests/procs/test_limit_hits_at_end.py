"""Limit hits that end the session are surfaced (issue 21, part 1): an OOM kill in
`strict`, a fork bomb held by the process limit, /dev/shm filled up to the memory limit,
and every core kept busy. Each runs through `sandbox run` as root on real cgroups and
must leave a `resource.breach` at warning or above, counted in the wrapper's summary
line and shown by `sandbox show` and the episode report. On b4100a1 each of these left
no breach: the sampler read the cgroup once a second and the session (and its cgroup)
was gone before the next reading."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Store
from sandbox.events import ListEmit
from sandbox.jail.cgroups import SessionCgroup, pids_max
from sandbox.jail.profile import LimitsSection
from sandbox.monitor.resource_rules import Readings
from sandbox.monitor.sampler import ResourceSampler
from sandbox.parts import limits
from sandbox.record import SEVERITIES
from tests.helpers import sandbox_cli
from tests.procs.test_limit_events import _breaches, _profile, _verdicts

OOM = "python3 -c 'a=[]\nwhile True: a.append(bytearray(64*1024*1024))'"
FORK_BOMB = ":(){ :|:& };:"
FILL_SHM = "for i in $(seq 1 8); do head -c 60M /dev/zero > /dev/shm/f$i || break; done"
ALL_CORES = "for i in $(seq $(nproc)); do yes > /dev/null & done; wait"


SAYS = {"oom_kill": "OOM-killed", "pids_max": "pids limit (", "shm": "MiB in /dev/shm",
        "cpu_saturated": "every core busy"}
"""What each breach's message says early on (`sandbox show` cuts a detail short)."""


def _session_of(summary: str) -> str:
    m = re.search(r"sandbox: session (\w+) ", summary)
    assert m, summary
    return m.group(1)


def _alerts_in(summary: str) -> int:
    m = re.search(r"· (\d+) alerts? ·", summary)
    assert m, summary
    return int(m.group(1))


def _surfaced(sid: str, summary: str, reason: str, limit: str) -> dict[str, Any]:
    """The breach (warning or worse), a verdict on it, the summary line's alert count,
    `sandbox show` and the episode report all carry the hit."""
    found = _breaches(sid, reason)
    assert found, Store().events(sid)
    breach = found[0]
    # The last reading is taken as soon as the jail is dead: the hit is in the record
    # before the session's end, not after it.
    end = Store().events(sid, kinds=("session.end",))
    assert end and breach["seq"] < end[0]["seq"], (breach, end)
    assert SEVERITIES.index(breach["severity"]) >= SEVERITIES.index("warning")
    assert breach["detail"]["limit"] == limit and breach["detail"]["message"]
    assert _verdicts(sid, limit), Store().events(sid)
    assert _alerts_in(summary) >= 1 and _alerts_in(summary) == Store().get_session(sid)[
        "n_alerts"]
    assert "mining.resource_" in summary or "resource.breach" in summary, summary
    shown = sandbox_cli("show", sid).stdout  # one line per event, its detail cut short
    breach_lines = [line for line in shown.splitlines() if "resource.breach" in line]
    assert any(SAYS[reason] in line for line in breach_lines), shown
    shown_json = json.loads(sandbox_cli("show", "--json", sid).stdout)
    assert f'"reason": "{reason}"' in json.dumps(shown_json), shown_json
    rep = json.loads(sandbox_cli("export", "-f", "report", sid).stdout)
    assert rep["verdict"] != "clean"
    assert any(v["evidence"].get("evidence", {}).get("source") == "resource.breach"
               and v["evidence"]["evidence"].get("limit") == limit
               for v in rep["violations"]), rep
    return breach


def _run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return sandbox_cli("run", *args, timeout=timeout)


def test_oom_kill_in_strict_is_a_breach(test_dir: Path) -> None:
    """The issue's first case, as written: exit 137 after a few seconds, and today 0
    alerts, its only sample showing mem_failcnt 0."""
    r = _run("--profile", "strict", "--", "bash", "-c", OOM)
    assert r.returncode == 137, r.stderr
    sid = _session_of(r.stderr)
    breach = _surfaced(sid, r.stderr, "oom_kill", "memory")
    assert breach["severity"] == "alert" and breach["detail"]["oom_kills"] >= 1
    final = [s for s in Store().events(sid, kinds=("resource.sample",))
             if s["detail"].get("final")]
    assert final and final[0]["detail"]["oom_kills"] >= 1  # the last reading has it too


def test_fork_bomb_held_by_the_process_limit_is_a_breach(test_dir: Path) -> None:
    """`strict` has processes = 128 (RLIMIT_NPROC) under pids = 256: the rlimit used to
    hold the bomb with no counter anywhere. pids.max now sits below it, so the kernel's
    pids.events counts the failed forks, read once more as the session ends (the bomb
    outlives `timeout`'s bash by design: the session's end kills it). The rlimit counts
    the agent user's tasks in all its sessions, so where others run as that user it can
    still bind first: then bash's "fork: retry: Resource temporarily unavailable" in
    the output is the only trace, and it is the breach (only where pids.max counted no
    failed fork by the command's end)."""
    r = _run("--profile", "strict", "--", "timeout", "10", "bash", "-c", FORK_BOMB)
    assert "Resource temporarily unavailable" in r.stderr
    sid = _session_of(r.stderr)
    breach = _surfaced(sid, r.stderr, "pids_max", "pids")
    if breach["detail"].get("rlimit") == "RLIMIT_NPROC":
        assert breach["detail"]["max"] == 128 and breach["severity"] == "warning"
    else:
        strict = LimitsSection(processes=128, pids=256)
        assert breach["detail"]["max"] == pids_max(strict) == 127
        assert breach["detail"]["pids_max_hits"] >= 1 and breach["severity"] == "alert"


def test_filling_dev_shm_is_a_shm_breach(test_dir: Path) -> None:
    """/dev/shm in the jail is a directory of firejail's private /dev tmpfs (half the
    host's RAM); what limits it is RLIMIT_FSIZE per file and the memory cgroup its pages
    are charged to. Filling it with 60 MiB files up to a 200 MiB limit OOM-kills the
    shell within a second; the files (and the memory) go only with the jail. The breach
    says so (`shm`), besides the OOM kill."""
    prof = _profile(test_dir, "memory_mib = 200")
    r = _run("--profile", prof, "--", "bash", "-c", FILL_SHM)
    sid = _session_of(r.stderr)
    breach = _surfaced(sid, r.stderr, "shm", "memory")
    assert breach["detail"]["shmem_bytes"] >= 0.4 * (200 << 20)
    assert _breaches(sid, "oom_kill")


@pytest.fixture
def short_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[ResourceSampler]:
    """The product's sampler with a 3 s saturation window (the default is 20 s), and a
    one-core host: the test machine has two cores shared with other tests, so what
    `yes` per core gets of both varies; of one core's worth it always gets most."""
    sampler = ResourceSampler(interval=0.2, sample_every=1.0, saturation_window_s=3.0,
                              cpus=1)
    monkeypatch.setattr(limits, "sampler", lambda: sampler)
    yield sampler
    sampler.stop()


def test_every_core_busy_is_a_cpu_saturated_breach(
        test_dir: Path, short_windows: ResourceSampler,
        capfd: pytest.CaptureFixture[str]) -> None:
    """`yes` once per core under no quota below the cores: cpu_saturated (warning) once
    the window is covered, through the real `sandbox run` (in this process, so it uses
    the short-window sampler)."""
    from sandbox.cli import main

    prof = _profile(test_dir, "cpu_percent = 200")  # the default: no quota below the cores
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        t0 = time.monotonic()
        code = main(["run", "--profile", prof, "--", "timeout", "5", "bash", "-c",
                     ALL_CORES])
        took = time.monotonic() - t0
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    summary = capfd.readouterr().err
    assert code == 124 and took < 30, summary
    sid = _session_of(summary)
    breach = _surfaced(sid, summary, "cpu_saturated", "cpu")
    assert breach["severity"] == "warning"
    assert breach["detail"]["value"] >= 80 and breach["detail"]["window_s"] >= 2.85
    assert len(_breaches(sid, "cpu_saturated")) == 1  # one episode, one breach


# -- the sampler's last reading and its rules, on their own ---------------------------------


def test_last_reading_finds_a_hit_no_tick_saw(make_cgroup: Any) -> None:
    """`finish` reads the group once more before it goes: a fork bomb at pids.max that
    was over before any tick (pids has no wake-up descriptor) is still a breach."""
    group: SessionCgroup = make_cgroup(pids=5)
    sampler = ResourceSampler(interval=3600)  # the thread never ticks in this test
    emit = ListEmit()
    try:
        sampler.add("s-last", group, emit)
        proc = subprocess.Popen(
            ["bash", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 0.5 & done; wait"],
            preexec_fn=group.enter_current_process, stderr=subprocess.DEVNULL)
        proc.wait(timeout=20)
        assert not emit.of_kind("resource.breach")
        sampler.finish("s-last")
    finally:
        sampler.stop()
    breaches = emit.of_kind("resource.breach")
    assert [b["detail"]["reason"] for b in breaches] == ["pids_max"], emit.events
    assert breaches[0]["detail"]["final"] is True
    finals = [s for s in emit.of_kind("resource.sample") if s["detail"].get("final")]
    assert len(finals) == 1 and finals[0]["detail"]["pids_max_hits"] >= 1
    sampler.finish("s-last")  # once only
    assert len(emit.of_kind("resource.sample")) == len(finals)


def test_process_limit_binds_below_the_rlimit() -> None:
    """pids.max stays below RLIMIT_NPROC (the kernel checks the rlimit first)."""
    assert pids_max(LimitsSection(processes=128, pids=256)) == 127
    assert pids_max(LimitsSection(processes=512, pids=40)) == 40
    assert pids_max(LimitsSection(processes=0, pids=0)) == 0
    assert pids_max(LimitsSection(processes=0, pids=64)) == 64


def _feed(sampler: ResourceSampler, clock: list[float], readings: list[dict[str, Any]]
          ) -> ListEmit:
    emit, st = ListEmit(), Readings()
    for reading in readings:
        sampler.rules.check(reading, emit, st)
        clock[0] += 1.0
    return emit


def test_cpu_saturation_episodes_and_quota() -> None:
    """cpu_saturated: once per episode, again after a calm spell; never where a quota
    below the cores binds (that is cpu_throttled's)."""
    clock = [0.0]
    sampler = ResourceSampler(saturation_window_s=10.0, cpus=2, clock=lambda: clock[0])
    cpu, readings = 0.0, []
    for t in range(60):  # 20 s both cores busy, 20 s idle, 20 s busy
        cpu += 1.9 if t < 20 or t >= 40 else 0.0
        readings.append({"cpu_seconds": cpu, "cpu_limit_percent": 0.0})
    emit = _feed(sampler, clock, readings)
    got = [(b["detail"]["reason"], b["severity"]) for b in emit.of_kind("resource.breach")]
    assert got == [("cpu_saturated", "warning")] * 2
    assert emit.of_kind("resource.breach")[0]["detail"]["max"] == 200.0
    clock[0] = 0.0
    quota = [{**r, "cpu_limit_percent": 100.0} for r in readings]
    assert not [b for b in _feed(sampler, clock, quota).of_kind("resource.breach")
                if b["detail"]["reason"] == "cpu_saturated"]


def test_shm_breach_needs_the_memory_limit_hit_with_tmpfs_holding_it() -> None:
    """A memory hit is `shm` when tmpfs/shm pages held a large share of the limit since
    the last hit (seen by an earlier, woken reading even if gone by the hit); an OOM
    kill of a heap allocator with little tmpfs is `oom_kill` only; /dev/shm's own
    tmpfs full is a breach once per fill."""
    limit = 200 << 20
    clock = [0.0]
    sampler = ResourceSampler(clock=lambda: clock[0])
    base = {"mem_limit": limit, "oom_kills": 0, "mem_failcnt": 0}
    emit = _feed(sampler, clock, [
        {**base, "shmem_bytes": 150 << 20},
        {**base, "shmem_bytes": 0, "oom_kills": 1},  # the jail (and its tmpfs) is gone
    ])
    assert [b["detail"]["reason"] for b in emit.of_kind("resource.breach")] == [
        "oom_kill", "shm"]
    emit = _feed(sampler, clock, [{**base, "shmem_bytes": 10 << 20},
                                  {**base, "shmem_bytes": 10 << 20, "oom_kills": 1}])
    assert [b["detail"]["reason"] for b in emit.of_kind("resource.breach")] == ["oom_kill"]
    size = 1 << 30
    emit = _feed(sampler, clock, [
        {"dev_shm_size": size, "dev_shm_bytes": size}, {"dev_shm_size": size,
                                                        "dev_shm_bytes": size},
        {"dev_shm_size": size, "dev_shm_bytes": 0},
        {"dev_shm_size": size, "dev_shm_bytes": size}])
    assert [(b["detail"]["reason"], b["detail"]["limit"])
            for b in emit.of_kind("resource.breach")] == [("shm", "shm")] * 2
