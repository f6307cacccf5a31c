"""The backends: real NVML says clearly why it cannot work; the fake is scriptable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.errors import SetupError
from sandbox.gpu import FakeNvml, FakeProcess, FakeStep, GpuBackend, NvmlUnavailable, get_backend
from tests.gpu.conftest import skip_if_driver

REPO = Path(__file__).resolve().parents[2]


def test_real_backend_without_driver_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a host without the driver, NvmlBackend() and get_backend() raise
    NvmlUnavailable (a SetupError) naming the missing library and the fix."""
    skip_if_driver()
    monkeypatch.delenv("SANDBOX_FAKE_NVML", raising=False)
    from sandbox.gpu.nvml import NvmlBackend

    with pytest.raises(NvmlUnavailable) as e:
        NvmlBackend()
    assert isinstance(e.value, SetupError)
    assert "libnvidia-ml.so.1 not found" in str(e.value)
    assert "Install the NVIDIA driver" in str(e.value)
    with pytest.raises(NvmlUnavailable, match="libnvidia-ml"):
        get_backend()


def test_fake_implements_the_interface() -> None:
    """FakeNvml is a GpuBackend; an idle GPU gives {} for per-process utilisation."""
    fake = FakeNvml(devices=2)
    assert isinstance(fake, GpuBackend)
    assert [d.minor_number for d in fake.devices()] == [0, 1]
    assert fake.process_utilization(0) == {} and fake.utilization(1) == (0, 0)
    fake.set_process(1, 4242, used_memory=10, sm_util=70, type="graphics")
    assert [(p.pid, p.type) for p in fake.processes(1)] == [(4242, "graphics")]
    assert fake.process_utilization(1) == {4242: 70} and fake.utilization(1) == (70, 0)
    fake.make_unavailable("gone")
    with pytest.raises(NvmlUnavailable, match="gone"):
        fake.devices()


def test_fake_timeline_and_pid_sources(tmp_path: Path) -> None:
    """Timeline steps replace the state as time passes; a pid_file or cmdline resolves
    to real host PIDs at query time."""
    now = [0.0]
    fake = FakeNvml(clock=lambda: now[0])
    pid_file = tmp_path / "pid"
    fake.set_timeline([
        FakeStep(at=0, processes=[FakeProcess(gpu=0, pid_file=str(pid_file), used_memory=1)]),
        FakeStep(at=5, processes=[FakeProcess(gpu=0, cmdline="fake-miner-marker-xyz")],
                 utilization={0: (99, 50)}),
    ])
    assert fake.processes(0) == []  # pid file not written yet
    pid_file.write_text(f"{os.getpid()}\n")
    assert [p.pid for p in fake.processes(0)] == [os.getpid()]
    proc = subprocess.Popen(["sh", "-c", "sleep 30; : fake-miner-marker-xyz"])
    try:
        # Right after fork the child's cmdline is still ours: wait for sh's exec (bounded).
        deadline = time.monotonic() + 10
        while b"fake-miner-marker-xyz" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "sh never exec'd"
            time.sleep(0.01)
        now[0] = 5
        assert [p.pid for p in fake.processes(0)] == [proc.pid]
        assert fake.utilization(0) == (99, 50)
    finally:
        proc.kill()
        proc.wait()


def test_env_scenario_drives_a_subprocess(tmp_path: Path) -> None:
    """SANDBOX_FAKE_NVML=/path.json makes get_backend() return the scenario in a child
    process (how CLI tests run with the fake); an 'unavailable' scenario raises there."""
    scenario = tmp_path / "gpu.json"
    scenario.write_text(json.dumps({
        "devices": [{"index": 0, "uuid": "GPU-abc", "memory_total_mib": 1024}],
        "processes": [{"gpu": 0, "pid": 1, "used_mib": 3, "sm_util": 9}],
    }))
    code = ("from sandbox.gpu import get_backend; b = get_backend(); d = b.devices()[0];"
            "p = b.processes(0)[0]; print(d.uuid, d.memory_total >> 20, p.pid, p.used_memory >> 20)")
    env = {**os.environ, "SANDBOX_FAKE_NVML": str(scenario)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=False)
    assert out.stdout.split() == ["GPU-abc", "1024", "1", "3"], out.stderr
    scenario.write_text(json.dumps({"unavailable": "fake: no driver"}))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=False)
    assert out.returncode != 0 and "NvmlUnavailable: fake: no driver" in out.stderr


def test_fake_reloads_an_edited_scenario(tmp_path: Path) -> None:
    """Editing the scenario file takes effect at the next call; a broken file is a clear
    NvmlUnavailable at load."""
    scenario = tmp_path / "gpu.json"
    scenario.write_text(json.dumps({"devices": 1}))
    fake = FakeNvml.from_json(scenario)
    assert fake.processes(0) == []
    scenario.write_text(json.dumps({"devices": 1, "processes": [{"gpu": 0, "pid": 7}]}))
    os.utime(scenario, (time.time() + 5, time.time() + 5))
    assert [p.pid for p in fake.processes(0)] == [7]
    scenario.write_text(json.dumps({"processes": [{"gpu": 0, "used_mib": "x"}]}))
    with pytest.raises(NvmlUnavailable, match="malformed"):
        FakeNvml.from_json(scenario)


def test_get_backend_prefers_the_given_fake() -> None:
    fake = FakeNvml()
    assert get_backend(fake) is fake
