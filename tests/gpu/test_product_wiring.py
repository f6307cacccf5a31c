"""GPU features that must fire in the product, through real sessions (FakeNvml for NVML):
count grants aware of other live sessions' grants, `gpu.orphan` recorded through the host
sink, and gpu.sample windows that the mining pack's saturation rule needs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sandbox import Sandbox, SetupError, Store, owners
from sandbox.events import ListEmit
from sandbox.gpu import FakeNvml, GpuMonitor, SessionGpu
from sandbox.guard import build_engine
from sandbox.jail.cgroups import SessionCgroup
from sandbox.jail.profile import GpuSection, GuardSection, LimitsSection
from tests.gpu.conftest import Tree
from tests.helpers import make_workspace, procs_matching, sandbox_cli, wait_for

GIB = 1 << 30


def _profile(test_dir: Path, body: str, name: str = "gpu.toml") -> str:
    path = test_dir / name
    path.write_text('extends = "default"\n' + body)
    return str(path)


def _visible(box: Sandbox) -> str:
    return box.run("echo $CUDA_VISIBLE_DEVICES").output.strip()


def test_count_grants_avoid_other_sessions_gpus_and_fail_closed(test_dir: Path) -> None:
    """Two sessions asking for one GPU on a two-GPU host get different GPUs; a third
    fails closed naming the holders; a GPU frees up when its session ends."""
    fake = FakeNvml(devices=2)
    uuids = [d.uuid for d in fake.devices()]
    prof = _profile(test_dir, "[gpu]\ncount = 1\nrequire = true\n")
    boxes: list[Sandbox] = []
    try:
        for i in range(2):
            boxes.append(Sandbox(profile=prof, workdir=make_workspace(test_dir / f"w{i}"),
                                 gpu_backend=fake).start())
        got = [_visible(b) for b in boxes]
        assert sorted(got) == uuids, got
        with pytest.raises(SetupError, match=r"only 0 GPU\(s\) free") as err:
            Sandbox(profile=prof, workdir=make_workspace(test_dir / "w2"),
                    gpu_backend=fake).start()
        assert all(b.id in str(err.value) for b in boxes), err.value
        assert "require = true" in str(err.value)
        failed = [s for s in Store().list_sessions() if s["state"] == "failed"]
        assert len(failed) == 1 and "GPU(s) free" in (failed[0]["reason"] or "")
        boxes[0].close()
        boxes[0] = Sandbox(profile=prof, workdir=make_workspace(test_dir / "w3"),
                           gpu_backend=fake).start()
        assert _visible(boxes[0]) == got[0]  # the freed GPU
    finally:
        for b in boxes:
            b.close()


def test_count_grants_see_sessions_of_another_process(test_dir: Path) -> None:
    """A `sandbox run` in another process sharing the store skips the GPU this process's
    session holds (the store's gpu.grant events), and require=false falls back to none."""
    scenario = test_dir / "fake.json"
    scenario.write_text(json.dumps({"devices": 2}))
    fake = FakeNvml(devices=2)
    prof = _profile(test_dir, "[gpu]\ncount = 1\nrequire = true\n")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"),
                 gpu_backend=fake) as box:
        mine = _visible(box)
        env = {"SANDBOX_FAKE_NVML": str(scenario)}
        r = sandbox_cli("run", "-q", "-p", prof, "-w", str(make_workspace(test_dir / "c")),
                        "--", "sh", "-c", "echo [$CUDA_VISIBLE_DEVICES]", env=env)
        assert r.returncode == 0, r.stderr
        theirs = r.stdout.strip().strip("[]")
        assert theirs and theirs != mine and theirs in {d.uuid for d in fake.devices()}
        # with both taken, require = false runs without a GPU and says why
        with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w2"),
                     gpu_backend=fake) as second:
            assert _visible(second) not in ("", mine)
            soft = _profile(test_dir, "[gpu]\ncount = 1\nrequire = false\n", "soft.toml")
            r = sandbox_cli("run", "-q", "-p", soft, "-w",
                            str(make_workspace(test_dir / "c2")), "--", "sh", "-c",
                            "echo [$CUDA_VISIBLE_DEVICES]", env=env)
            assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
            sid = Store().list_sessions()[0]["id"]
            warn = Store().events(sid, kinds=("session.warning",))
            assert warn and "GPU(s) free" in json.dumps(warn[0]["detail"])


def test_orphan_gpu_process_is_recorded_in_live_sessions(test_dir: Path) -> None:
    """A GPU process of no session (started on the host) -> gpu.orphan in the live
    session's record through the monitor's host sink, shown by `sandbox show`."""
    fake = FakeNvml(devices=1)
    prof = _profile(test_dir, "[gpu]\ncount = 1\npoll_interval_s = 0.2\n")
    host = subprocess.Popen(["sleep", "1005.25"])
    try:
        with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"),
                     gpu_backend=fake) as box:
            fake.set_process(0, host.pid, used_memory=GIB // 2, sm_util=10)
            assert wait_for(lambda: Store().events(box.id, kinds=("gpu.orphan",)), 5)
            orphan = Store().events(box.id, kinds=("gpu.orphan",))[0]
            assert orphan["detail"]["pid"] == host.pid and orphan["detail"]["host"] is True
            assert "sleep 1005.25" in orphan["detail"]["cmdline"]
            assert orphan["severity"] == "warning"
            assert "gpu.orphan" in sandbox_cli("show", box.id).stdout
            assert Store().get_session(box.id)["state"] == "running"  # not the session's
    finally:
        host.kill()
        host.wait(5)
    assert not procs_matching("sleep 1005.25")


def test_gpu_samples_carry_a_window_that_window_rules_fire_on(test_dir: Path) -> None:
    """A granted GPU held busy: gpu.sample's util is averaged over window_s, and a
    windowed sample rule (the shape of mining.gpu_saturation, shorter) flags it."""
    fake = FakeNvml(devices=1)
    prof = _profile(test_dir, """[gpu]
count = 1
poll_interval_s = 0.2

[[guard.rules]]
id = "gpuwindow.probe"
description = "GPU busy over a window (mining.gpu_saturation's shape, short)"
action = "flag"
sample = { source = ["gpu.sample"], gpu_util = 90, min_window_s = 4 }
""")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"), gpu_backend=fake) as box:
        box.run("sh -c 'sleep 1005.75; :' >/dev/null 2>&1 &")
        procs = wait_for(lambda: procs_matching("sleep 1005.75"), 5)
        assert procs
        fake.set_process(0, int(procs[0].pid), used_memory=GIB, sm_util=99)  # type: ignore[index]
        assert wait_for(lambda: [e for e in Store().events(box.id, kinds=("guard.verdict",))
                                 if e["rule"] == "gpuwindow.probe"], 10)
        samples = Store().events(box.id, kinds=("gpu.sample",))
        assert max(s["detail"]["window_s"] for s in samples) >= 4
        assert samples[-1]["detail"]["util"] >= 90 and samples[-1]["detail"]["util_now"] == 99
        assert Store().get_session(box.id)["gpu_util"] == 99


def test_mining_gpu_saturation_fires_after_five_minutes(tree: Tree) -> None:
    """The built-in mining.gpu_saturation (95 % for 300 s) fires on the monitor's own
    gpu.sample events after five minutes of a saturated GPU, and not before."""
    now = [1000.0]
    fake = FakeNvml(devices=1)
    fake.set_process(0, tree.grandchild, used_memory=GIB, sm_util=99)
    emit = ListEmit()
    mon = GpuMonitor(fake, 1.0, lambda _sid: emit,
                     sessions_provider=lambda: {"s1": SessionGpu(tree.root, GpuSection(), (0,))},
                     clock=lambda: now[0])
    for _ in range(320):
        mon.poll_once()
        now[0] += 1.0
    engine = build_engine(GuardSection())
    fired = [e["detail"]["window_s"] for e in emit.of_kind("gpu.sample")
             if any(v.rule_id == "mining.gpu_saturation" for v in engine.evaluate_event(e))]
    assert fired and min(fired) >= 300


def test_orphan_sink_skips_other_supervisors_live_sessions(test_dir: Path) -> None:
    """A GPU process in the cgroup of a session another supervisor process runs (live in
    the shared store) is that supervisor's to judge, not an orphan here; one in the cgroup
    of a session that has ended is an orphan naming that session."""
    store = Store()
    owner_pid, owner_start = owners.me()  # alive: gc leaves the stand-in sessions alone
    made: list[SessionCgroup] = []
    spawned: list[subprocess.Popen[bytes]] = []
    fake = FakeNvml(devices=1)
    prof = _profile(test_dir, "[gpu]\ncount = 1\npoll_interval_s = 0.2\n")
    try:
        pids = {}
        for sid, state in (("t-gpu-other-live", "running"), ("t-gpu-other-gone", "exited")):
            store.create_session(sid, profile="x", kind="api", workdir="/", argv=[],
                                 owner_pid=owner_pid, owner_start=owner_start, host="h",
                                 user="u")
            if state == "exited":
                store.finish_session(sid, "exited", "done")
            else:
                store.update_session(sid, state="running")
            group = SessionCgroup.create(sid, LimitsSection())
            made.append(group)
            p = subprocess.Popen(["sleep", "1005.5"], preexec_fn=group.enter_current_process)
            spawned.append(p)
            pids[state] = p.pid
        with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"),
                     gpu_backend=fake) as box:
            fake.set_process(0, pids["running"], used_memory=GIB // 4)
            fake.set_process(0, pids["exited"], used_memory=GIB // 4)

            def orphans() -> list[dict[str, object]]:
                return [e["detail"] for e in Store().events(box.id, kinds=("gpu.orphan",))]

            assert wait_for(orphans, 5)
            assert not wait_for(lambda: len(orphans()) > 1, 1.0), orphans()  # more polls
            (only,) = orphans()
            assert only["pid"] == pids["exited"]
            assert only["cgroup_session"] == "t-gpu-other-gone"
    finally:
        for p in spawned:
            p.kill()
            p.wait(5)
        for group in made:
            group.remove()
