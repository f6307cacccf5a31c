"""Grants and device visibility: which /dev/nvidia* a jail sees, and the CUDA env."""

from __future__ import annotations

import pytest

from sandbox.errors import SetupError
from sandbox.gpu import (
    Device,
    FakeNvml,
    Grant,
    NvmlUnavailable,
    fake_device,
    plan_visibility,
    resolve_grant,
    select_devices,
)
from sandbox.jail.profile import GpuSection
from tests.gpu.conftest import skip_if_driver

FOUR = [fake_device(i) for i in range(4)]
ALL_NODES = [
    "/dev/nvidia-caps", "/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
    "/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3", "/dev/nvidiactl",
]


def grant(*indices: int) -> Grant:
    return Grant(section=GpuSection(devices=[str(i) for i in indices]),
                 devices=tuple(FOUR[i] for i in indices), all_devices=tuple(FOUR))


def test_no_grant_hides_every_nvidia_node() -> None:
    """No [gpu]: --no3d, every NVIDIA node blacklisted, CUDA sees no device."""
    v = plan_visibility(Grant(all_devices=tuple(FOUR)))
    assert v.firejail_args == ("--no3d", *(f"--blacklist={n}" for n in ALL_NODES))
    assert v.env == (("CUDA_VISIBLE_DEVICES", ""), ("NVIDIA_VISIBLE_DEVICES", "void"))
    assert v.private_dev is True and v.visible_nodes == ()


def test_no_grant_without_nvml_still_hides_host_nodes() -> None:
    """NVML absent: the host's own /dev/nvidia* listing decides what to hide."""
    v = plan_visibility(Grant(), present_nodes=["/dev/nvidia0", "/dev/nvidia12"])
    assert "--blacklist=/dev/nvidia12" in v.firejail_args
    assert "--blacklist=/dev/nvidia0" in v.firejail_args
    assert "--blacklist=/dev/nvidiactl" in v.firejail_args


def test_one_granted_gpu_shows_only_its_node() -> None:
    """Grant GPU 2 of 4: its node and the control nodes stay, the other three GPUs,
    the profiler/MIG nodes and /dev/dri are blacklisted; no --no3d."""
    v = plan_visibility(grant(2))
    assert v.firejail_args == (
        "--blacklist=/dev/dri", "--blacklist=/dev/nvidia-caps",
        "--blacklist=/dev/nvidia-uvm-tools", "--blacklist=/dev/nvidia0",
        "--blacklist=/dev/nvidia1", "--blacklist=/dev/nvidia3",
    )
    assert v.visible_nodes == ("/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia2",
                               "/dev/nvidiactl")
    assert v.env == (("CUDA_VISIBLE_DEVICES", FOUR[2].uuid),
                     ("NVIDIA_VISIBLE_DEVICES", FOUR[2].uuid))
    assert v.private_dev is True and v.warnings == ()


def test_two_granted_gpus_show_exactly_those_two() -> None:
    """Grant GPUs 0 and 3 of 4: nodes 1 and 2 hidden, both UUIDs in order."""
    v = plan_visibility(grant(3, 0))
    assert v.firejail_args == (
        "--blacklist=/dev/dri", "--blacklist=/dev/nvidia-caps",
        "--blacklist=/dev/nvidia-uvm-tools", "--blacklist=/dev/nvidia1",
        "--blacklist=/dev/nvidia2",
    )
    ids = f"{FOUR[3].uuid},{FOUR[0].uuid}"
    assert v.env == (("CUDA_VISIBLE_DEVICES", ids), ("NVIDIA_VISIBLE_DEVICES", ids))
    assert set(v.visible_nodes) | set(v.hidden_nodes) == {*ALL_NODES, "/dev/dri"}
    assert not set(v.visible_nodes) & set(v.hidden_nodes)


def test_granted_node_beyond_private_dev_turns_it_off_with_a_warning() -> None:
    """firejail's --private-dev carries only nvidia0-9: a grant of nvidia12 needs the jail
    without --private-dev, and the plan says so."""
    devs = tuple(Device(i, f"GPU-{i}", "x", 1, minor_number=i) for i in (11, 12))
    v = plan_visibility(Grant(GpuSection(), (devs[1],), devs))
    assert v.private_dev is False and "nvidia12" in v.warnings[0]
    assert "--blacklist=/dev/nvidia11" in v.firejail_args
    assert "--blacklist=/dev/nvidia12" not in v.firejail_args


def test_select_by_index_uuid_and_count() -> None:
    """devices by index or UUID (any case); count takes the first free ones; an empty
    [gpu] table asks for one."""
    assert select_devices(GpuSection(devices=["1", FOUR[3].uuid.upper()]), FOUR) == (
        FOUR[1], FOUR[3])
    assert select_devices(GpuSection(count=2), FOUR, in_use={0, 2}) == (FOUR[1], FOUR[3])
    assert select_devices(GpuSection(), FOUR) == (FOUR[0],)


@pytest.mark.parametrize(("section", "message"), [
    (GpuSection(devices=["7"]), "device '7' not found: this host has 0 (GPU-fake"),
    (GpuSection(devices=["GPU-nope"]), "device 'GPU-nope' not found"),
    (GpuSection(count=5), "count = 5 but only 4 GPU(s) free"),
    (GpuSection(devices=["0"], count=2), "names 1 devices but count = 2"),
])
def test_unmet_grant_fails_closed(section: GpuSection, message: str) -> None:
    """A grant that cannot be met with require = true stops the session, saying why."""
    with pytest.raises(SetupError, match="requires GPUs") as e:
        resolve_grant(section, FakeNvml(devices=4))
    assert message in str(e.value)


def test_nvml_unavailable_and_require_true_refuses() -> None:
    """NVML missing + require = true -> NvmlUnavailable (a SetupError) naming the cause."""
    fake = FakeNvml(unavailable="NVIDIA kernel driver not loaded: check `nvidia-smi`")
    with pytest.raises(NvmlUnavailable, match=r"requires GPUs.*driver not loaded"):
        resolve_grant(GpuSection(require=True), fake)


def test_nvml_unavailable_and_require_false_runs_without_gpu() -> None:
    """NVML missing + require = false -> no grant, a warning to record, GPUs hidden."""
    g = resolve_grant(GpuSection(require=False), FakeNvml(unavailable="no driver"))
    assert g.devices == () and "not granted" in g.warning and "no driver" in g.warning
    assert plan_visibility(g).firejail_args[0] == "--no3d"


def test_no_gpu_section_never_touches_nvml() -> None:
    """Without [gpu], the backend factory is not even called."""
    def factory() -> FakeNvml:
        raise AssertionError("NVML consulted for a profile without [gpu]")

    assert resolve_grant(None, factory) == Grant()


def test_real_nvml_on_this_host_with_require(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real get_backend: require = true fails with a message that says what
    to install; require = false yields a warning (skipped on a machine with a driver)."""
    from sandbox.gpu import get_backend

    skip_if_driver()
    monkeypatch.delenv("SANDBOX_FAKE_NVML", raising=False)
    with pytest.raises(SetupError, match="Install the NVIDIA driver"):
        resolve_grant(GpuSection(count=1), get_backend)
    assert "libnvidia-ml" in resolve_grant(GpuSection(require=False), get_backend).warning
