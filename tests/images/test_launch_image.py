"""An image's root made by the compiled launcher (`sandbox-launch -o/-B`) and by the Python
steps: the same mounts, the same flags (overlay nodev,nosuid; every bind nodev,nosuid;
the read-only ones read-only)."""

from __future__ import annotations

import subprocess

from sandbox import Sandbox
from sandbox.jail import spawn

from .conftest import Images


def _mounts(sb: Sandbox, compiled: bool) -> list[str]:
    """The image's mounts as the launch leaves them (mount ids and device numbers
    dropped: each namespace numbers its mounts, each overlay gets a new device)."""
    s = sb._session
    launch = s.launcher()
    assert launch.image is not None
    target = launch.image.target
    proc = spawn.popen(["/bin/cat", "/proc/self/mountinfo"], launch, env={},
                       compiled=compiled, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd="/")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = [line.split(" ", 3)[3] for line in out.decode().splitlines()]
    return [line for line in lines if f" {target}" in line]


def test_compiled_and_python_launches_mount_the_same_image_root(images: Images) -> None:
    assert spawn.launcher() is not None
    with Sandbox(image="deb") as sb:
        compiled, python = _mounts(sb, True), _mounts(sb, False)
        assert compiled == python
        assert len(compiled) >= 2  # the overlay and the workspace at least
        root = compiled[0]
        assert "overlay" in root and "nodev" in root and "nosuid" in root, root
        for line in compiled[1:]:
            assert "nodev" in line and "nosuid" in line, line
