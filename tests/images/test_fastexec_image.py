"""Fast exec in an image (issue 20): the compiled helper is static, bound in read-only,
so it runs in any image (python3 or not, a libc or not); what it forks sees what a joined
exec sees there."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.jail import fastexec
from sandbox.jail.profile import ExecSection, load
from tests.core.test_fastexec import _helper, assert_equal_boundary

from .conftest import Images

if fastexec.unsupported():
    pytest.skip(f"fast exec needs a newer kernel: {fastexec.unsupported()}",
                allow_module_level=True)


def _fast() -> Any:
    return dataclasses.replace(load("default"), exec=ExecSection(fast=True))


def test_exec_in_an_image_goes_the_fast_way(images: Images) -> None:
    with Sandbox(_fast(), image="deb") as sb:
        helper = _helper(sb)
        assert helper.kind == "c"
        n = helper.used["fast"]
        e = sb.exec(["sh", "-c", "echo $IMAGE_VAR; pwd; cat; exit 4"], input="in\n")
        assert (e.returncode, e.stdout) == (4, "from-the-image\n/workspace\nin\n"), e.stderr
        assert sb.exec("pwd", cwd="/usr").stdout == "/usr\n"
        assert sb.exec("pwd", cwd="nope").returncode == 125  # as on the joined path
        assert sb.exec(["no-such-program-xyz"]).returncode == 127
        assert helper.used["fast"] == n + 4 and helper.state == "ready"
        # The helper is in the image read-only: the agent cannot swap it for the next one.
        r = sb.exec(["sh", "-c", f": > {sb._session.image.exec_helper}"])
        assert r.returncode != 0 and "Read-only" in r.stderr, r


def test_the_boundary_in_an_image_equals_the_joins(images: Images,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with Sandbox(_fast(), image="deb") as sb:
        assert "NoNewPrivs:\t1" in assert_equal_boundary(sb, monkeypatch)


def test_a_bash_less_image_gets_the_fast_way_too(images: Images) -> None:
    """busybox: no python3, no libc the helper needs; the static helper runs there."""
    with Sandbox(_fast(), image="bb") as sb:
        helper = _helper(sb)
        e = sb.exec(["id", "-u"])
        assert e.returncode == 0 and e.stdout.strip() != "0", e.stderr
        assert sb.exec("echo hi; exit 3").returncode == 3
        # No /bin/true in it: busybox's sh has the builtin, as the joined path finds.
        assert sb.exec(["true"]).returncode == 0
        assert helper.used["fast"] == 3 and helper.state == "ready"


def test_an_images_loader_variables_reach_fast_execs(images: Images) -> None:
    """The helper's join gets the image's LD_* through firejail's --env, as every join
    does, so what it forks has them too."""
    from sandbox.jail.images import ImageStore

    store = ImageStore()
    store.import_rootfs(images.root / "build/bb.tar", "bb-ld-fast",
                        env=["PATH=/bin", "LD_LIBRARY_PATH=/usr/local/nvidia/lib64"])
    try:
        with Sandbox(_fast(), image="bb-ld-fast") as sb:
            helper = _helper(sb)
            r = sb.exec(["sh", "-c", "echo $LD_LIBRARY_PATH"])
            assert r.stdout == "/usr/local/nvidia/lib64\n" and helper.used["fast"] == 1
    finally:
        store.remove("bb-ld-fast")
