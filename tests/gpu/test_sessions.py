"""GPU quotas in real sandboxes, with the fake NVML reporting real host PIDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Sandbox, SessionClosed, SetupError, Store
from sandbox.gpu import FakeNvml
from tests.helpers import make_workspace, procs_matching, wait_for

GIB = 1 << 30


def _profile(test_dir: Path, body: str) -> str:
    path = test_dir / "gpu.toml"
    path.write_text('extends = "default"\n' + body)
    return str(path)


def _start_tree(box: Sandbox, tag: str) -> int:
    """A child and grandchild in the jail; returns the grandchild's host PID."""
    box.run(f"sh -c 'sh -c \"sleep {tag}\" & wait' >/dev/null 2>&1 &")
    procs = wait_for(lambda: procs_matching(f"sleep {tag}"), 5)
    assert procs, "the workload did not start"
    return int(procs[0].pid)  # type: ignore[index]


def test_memory_quota_breach_kills_within_one_interval(test_dir: Path) -> None:
    fake = FakeNvml(devices=2)
    prof = _profile(test_dir, "[gpu]\ncount = 1\nmemory_limit_mib = 1024\non_breach = \"kill\"\n"
                              "poll_interval_s = 0.2\n")
    box = Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"), gpu_backend=fake).start()
    try:
        env = box.run("echo $CUDA_VISIBLE_DEVICES").output.strip()
        assert env == fake.devices()[0].uuid
        pid = _start_tree(box, "1004.25")
        fake.set_process(0, pid, used_memory=2 * GIB)
        assert wait_for(lambda: Store().get_session(box.id)["state"] == "killed", 3)
        breach = Store().events(box.id, kinds=("gpu.breach",))
        assert breach and breach[0]["action"] == "kill"
        assert wait_for(lambda: not procs_matching("sleep 1004.25"), 5)
        with pytest.raises(SessionClosed):
            box.run("true")
    finally:
        box.close()


def test_use_without_grant_is_unauthorized(test_dir: Path) -> None:
    fake = FakeNvml(devices=1)
    box = Sandbox(workdir=make_workspace(test_dir / "w"), gpu_backend=fake).start()
    try:
        assert box.run("echo \"[$CUDA_VISIBLE_DEVICES]\"").output == "[]\n"
        pid = _start_tree(box, "1004.5")
        fake.set_process(0, pid, used_memory=GIB // 4)
        assert wait_for(lambda: Store().events(box.id, kinds=("gpu.unauthorized",)), 4)
        event = Store().events(box.id, kinds=("gpu.unauthorized",))[0]
        assert event["severity"] == "critical" and event["action"] == "kill"
        assert wait_for(lambda: Store().get_session(box.id)["state"] == "killed", 3)
    finally:
        box.close()


def test_samples_reach_the_session_row(test_dir: Path) -> None:
    fake = FakeNvml(devices=1)
    prof = _profile(test_dir, "[gpu]\ncount = 1\nmemory_limit_mib = 4096\n"
                              "poll_interval_s = 0.2\n")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"), gpu_backend=fake) as box:
        pid = _start_tree(box, "1004.75")
        fake.set_process(0, pid, used_memory=GIB, sm_util=55)
        assert wait_for(lambda: Store().get_session(box.id)["gpu_mem_bytes"] == GIB, 4)
        assert box.report()["gpu"]["mem_bytes"] == GIB


def test_nvml_unavailable_require_true_refuses(test_dir: Path) -> None:
    fake = FakeNvml(unavailable="libnvidia-ml.so.1 not found: install the NVIDIA driver")
    prof = _profile(test_dir, "[gpu]\ncount = 1\nrequire = true\n")
    with pytest.raises(SetupError, match="require"):
        Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"), gpu_backend=fake).start()
    assert Store().list_sessions()[0]["state"] == "failed"


def test_nvml_unavailable_require_false_warns(test_dir: Path) -> None:
    fake = FakeNvml(unavailable="libnvidia-ml.so.1 not found")
    prof = _profile(test_dir, "[gpu]\ncount = 1\nrequire = false\n")
    with Sandbox(profile=prof, workdir=make_workspace(test_dir / "w"), gpu_backend=fake) as box:
        assert box.run("echo \"[$CUDA_VISIBLE_DEVICES]\"").output == "[]\n"
        warnings = Store().events(box.id, kinds=("session.warning",))
        assert warnings and "libnvidia-ml" in str(warnings[0]["detail"])
