"""Session cgroups: limits hold (memory, pids), breaches are reported, crashes clean up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.errors import SetupError
from sandbox.events import ListEmit
from sandbox.jail import cgroup_layout, cgroups
from sandbox.jail.profile import LimitsSection
from sandbox.monitor import proctree
from sandbox.monitor.sampler import ResourceSampler
from tests.helpers import wait_for
from tests.procs.conftest import new_id


def test_layout_on_this_host_is_usable() -> None:
    """available() says yes as root and names the hierarchy it will use."""
    ok, reason = cgroup_layout.available()
    assert ok, reason
    assert "cgroup" in reason


def test_limits_are_written(make_cgroup: Any) -> None:
    """memory, cpu and pids limits from the profile land in the group's files."""
    group = make_cgroup(memory_mib=128, cpu_percent=50, pids=77)
    s = group.sample()
    assert s["mem_limit"] == 128 << 20
    assert s["pids_limit"] == 77
    if group.version == 1:
        assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
    else:
        assert (group.dirs[""] / "cpu.max").read_text().split()[0] == "50000"


def test_memory_hog_is_oom_killed_and_reported(
        make_cgroup: Any, procs: list[subprocess.Popen[bytes]]) -> None:
    """600 MiB under a 100 MiB limit: the kernel OOM-kills it and a breach is emitted."""
    group = make_cgroup(memory_mib=100)
    emit = ListEmit()
    sampler = ResourceSampler(interval=0.05, sample_every=0.0)
    try:
        sampler.add("s-oom", group, emit)
        p = subprocess.Popen([sys.executable, "-c", "b = bytearray(600 << 20)"],
                             preexec_fn=group.enter_current_process)
        procs.append(p)
        assert p.wait(timeout=20) == -9
        assert wait_for(lambda: emit.of_kind("resource.breach"), 5)
    finally:
        sampler.stop()
    breach = emit.of_kind("resource.breach")[0]
    assert breach["detail"]["limit"] == "memory"
    assert any(b["detail"]["oom_kills"] >= 1 for b in emit.of_kind("resource.breach"))
    assert emit.of_kind("resource.sample")


def test_fork_bomb_is_contained_by_pids_limit(
        make_cgroup: Any, procs: list[subprocess.Popen[bytes]]) -> None:
    """500 sleeps under pids=50: at most 50 run, a breach is emitted, the host still forks."""
    group = make_cgroup(pids=50)
    emit = ListEmit()
    sampler = ResourceSampler(interval=0.05, sample_every=60.0)
    try:
        sampler.add("s-bomb", group, emit)
        p = subprocess.Popen(
            ["sh", "-c", "i=0; while [ $i -lt 500 ]; do sleep 60 & i=$((i+1)); done; wait"],
            preexec_fn=group.enter_current_process, stderr=subprocess.DEVNULL)
        procs.append(p)
        assert wait_for(lambda: group.sample()["pids_max_hits"] > 0, 10)
        assert group.sample()["pids"] <= 50
        t = time.monotonic()
        subprocess.run(["true"], check=True)  # the host outside the group is unaffected
        assert time.monotonic() - t < 10  # generous: not starved, not a speed test
        assert wait_for(lambda: emit.of_kind("resource.breach"), 5)
        assert emit.of_kind("resource.breach")[0]["detail"]["limit"] == "pids"
    finally:
        sampler.stop()
    assert group.kill() >= 1
    assert group.pids() == []


CRASH = textwrap.dedent("""
    import json, os, subprocess, sys
    from sandbox.jail.cgroups import SessionCgroup
    from sandbox.jail.profile import LimitsSection
    g = SessionCgroup.create(sys.argv[1], LimitsSection(pids=20))
    subprocess.Popen(["sleep", "300.91"], preexec_fn=g.enter_current_process,
                     start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    print(json.dumps(g.resources), flush=True)
    os._exit(1)  # a crash: no remove(), no finalizers
""")


def test_cleanup_after_crash_and_leftovers() -> None:
    """A crashed owner's group shows in leftovers(); cleanup(resources) kills and removes it."""
    sid = new_id()
    out = subprocess.run([sys.executable, "-c", CRASH, sid], capture_output=True, text=True,
                         timeout=30, cwd=Path(__file__).resolve().parents[2], check=False)
    resources = json.loads(out.stdout)
    try:
        found = cgroups.leftovers()
        assert found[sid] == resources
        assert sid not in cgroups.leftovers(live=[sid])
        for res in found.values():  # only sandbox/<id> groups, never the host's own
            assert all(Path(d).parent.name == "sandbox" for d in res["dirs"].values())
        member = cgroups.SessionCgroup.from_resources(resources).pids()
        assert member and proctree.argv_of(member[0]) == ["sleep", "300.91"]
    finally:
        cgroups.cleanup(resources)
    assert sid not in cgroups.leftovers()
    assert not any(Path(d).exists() for d in resources["dirs"].values())
    assert wait_for(lambda: proctree.info_stat(member[0]) is None, 5)
    cgroups.cleanup(resources)  # idempotent


def test_cleanup_refuses_paths_that_are_not_sandbox_groups() -> None:
    """Resources come from a database; cleanup must not rmdir anything it did not make."""
    mount = next(iter(cgroup_layout.detect().mounts.values()))  # type: ignore[union-attr]
    for bad in (str(mount / "process_api" / "x"), "/etc/x", str(mount / "sandbox" / ".." / "x")):
        with pytest.raises(SetupError):
            cgroups.cleanup({"session_id": "x", "version": 1, "dirs": {"memory": bad}})


def test_bad_session_id_is_refused() -> None:
    """A session id that could escape the sandbox/ parent cannot name a cgroup."""
    with pytest.raises(SetupError):
        cgroups.SessionCgroup.create("../etc", LimitsSection())


def test_enter_current_process_fails_closed(make_cgroup: Any) -> None:
    """If the group is gone, spawning with enter_current_process fails instead of running free."""
    group = make_cgroup()
    group.remove()
    with pytest.raises(subprocess.SubprocessError):
        subprocess.run(["true"], preexec_fn=group.enter_current_process, check=False)
    assert os.getpid() not in group.pids()


def test_everything_a_joined_process_starts_is_in_the_group(
        make_cgroup: Any, procs: list[subprocess.Popen[bytes]]) -> None:
    """The child moves itself thread by thread (v1 `tasks`: no RCU wait); its later
    threads and children, forked after the move, are in the group in every hierarchy."""
    group = make_cgroup()
    code = ("import os, subprocess, threading, time\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "subprocess.Popen(['sleep', '30.37'])\n"
            "print('up', flush=True); time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         preexec_fn=group.enter_current_process)
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline() == b"up\n"
    kid = next(c for c in proctree.children(p.pid))
    tasks = [Path(f"/proc/{p.pid}/task/{t}") for t in os.listdir(f"/proc/{p.pid}/task")]
    assert len(tasks) >= 2  # the main thread and the sleeper
    for where in (*tasks, Path(f"/proc/{kid}")):
        lines = (where / "cgroup").read_text().splitlines()
        paths = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}
        for c in group.dirs:
            key = "" if group.version == 2 else next(k for k in paths if c in k.split(","))
            assert paths[key] == group.rel_path, (where, c, lines)
    assert {p.pid, kid} <= set(group.pids())


def test_a_hierarchy_that_moved_fails_the_start(tmp_path: Path) -> None:
    """The layout is detected once per process: a group made where no cgroup is
    mounted any more is refused (no limits silently written to plain files), and the
    next start detects again."""
    real = cgroup_layout.cached()
    assert real is not None
    fake = cgroup_layout.Layout(real.version, {c: tmp_path / (c or "v2") for c in real.mounts})
    for d in fake.mounts.values():
        d.mkdir(exist_ok=True)
    cgroup_layout._seen[:] = [fake]
    try:
        with pytest.raises(SetupError, match="not in a cgroup hierarchy"):
            cgroups.SessionCgroup.create(new_id(), LimitsSection(memory_mib=64))
        assert cgroup_layout.cached() == real  # looked again
        assert not list(tmp_path.rglob("memory.limit_in_bytes"))
    finally:
        cgroup_layout.forget()


UNIFIED = Path("/sys/fs/cgroup/unified")


@pytest.mark.skipif(not (UNIFIED / "cgroup.procs").exists(), reason="no cgroup2 mount at "
                    "/sys/fs/cgroup/unified")
def test_v2_membership_kill_and_remove(procs: list[subprocess.Popen[bytes]]) -> None:
    """The v2 code path (cgroup.kill, one directory) on this host's controller-less v2 mount.

    Limits need controllers this hybrid host's v2 mount lacks; joining, listing, killing
    a double-forked daemon and removing work on any cgroup2 hierarchy.
    """
    sid = new_id()
    group = cgroups.SessionCgroup(sid, 2, {"": UNIFIED / "sandbox" / sid})
    group.dirs[""].mkdir(parents=True)
    try:
        p = subprocess.Popen(["sh", "-c", "(setsid sleep 300.66 &) &"],
                             preexec_fn=group.enter_current_process)
        procs.append(p)
        p.wait(timeout=5)
        assert wait_for(lambda: [proctree.argv_of(x) for x in group.pids()]
                        == [["sleep", "300.66"]], 5)
        daemon = group.pids()[0]
        assert group.kill() == 1
        assert wait_for(lambda: proctree.info_stat(daemon) is None, 5)
    finally:
        group.remove()
    assert not group.exists()


def test_v2_counters_are_read(test_dir: Path) -> None:
    """The v2 files behind breaches (memory.events oom_kill, pids.events max, cpu.stat
    nr_throttled, cpu.max) parse into the same sample keys as v1's (this host is v1 for
    limits, so the files are written here as a v2 kernel would)."""
    d = test_dir / "v2"
    d.mkdir()
    files = {
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                    "nr_periods 120\nnr_throttled 90\nthrottled_usec 4000000\n",
        "cpu.max": "30000 100000\n", "memory.current": "1048576\n",
        "memory.max": "104857600\n", "memory.peak": "104000000\n",
        "memory.events": "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\n",
        "pids.current": "40\n", "pids.max": "40\n", "pids.events": "max 311\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    s = cgroups.SessionCgroup("t-v2-files", 2, {"": d}).sample()
    assert (s["oom_kills"], s["mem_failcnt"], s["mem_peak"]) == (2, 17, 104_000_000)
    assert (s["pids"], s["pids_limit"], s["pids_max_hits"]) == (40, 40, 311)
    assert (s["cpu_periods"], s["cpu_throttled"], s["cpu_throttled_s"]) == (120, 90, 4.0)
    assert s["cpu_limit_percent"] == 30.0 and s["cpu_seconds"] == 2.5
    (d / "cpu.max").write_text("max 100000\n")
    assert cgroups.SessionCgroup("t-v2-files", 2, {"": d}).sample()["cpu_limit_percent"] == 0


def test_v1_throttle_counters_move_under_a_quota(
        make_cgroup: Any, procs: list[subprocess.Popen[bytes]]) -> None:
    """A busy loop under a 10 % quota is throttled: cpu.stat's counters say so."""
    group = make_cgroup(cpu_percent=10)
    p = subprocess.Popen(["timeout", "3", "sh", "-c", "while :; do :; done"],
                         preexec_fn=group.enter_current_process)
    procs.append(p)
    assert wait_for(lambda: group.sample()["cpu_throttled"] >= 5, 3)
    s = group.sample()
    assert s["cpu_limit_percent"] == 10.0 and s["cpu_periods"] >= s["cpu_throttled"]
    p.kill()
