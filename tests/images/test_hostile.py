"""Image layers are hostile input. A crafted layer with `../` and absolute member names,
a link out of the rootfs with a file written through it, and hard links to host files
must write nothing outside its own rootfs and reach no host file; an unpack that fails
leaves nothing in the store. (Setuid files and device nodes: test_wall.)"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.errors import SetupError
from sandbox.jail.images import ImageStore

from .conftest import Images, add_member

ESCAPE = Path("/srv/sandbox-tests-escape")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hostile_layer(dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        add_member(tar, "bin", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "bin/busybox", data=Path("/bin/busybox").read_bytes(), mode=0o755)
        for applet in ("sh", "cat", "ls", "stat"):
            add_member(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add_member(tar, "../../../../.." + str(ESCAPE / "dotdot"), data=b"escaped\n")
        add_member(tar, str(ESCAPE / "absolute"), data=b"escaped\n")
        add_member(tar, "out", kind=tarfile.SYMTYPE, link=str(ESCAPE))
        add_member(tar, "out/through-link", data=b"escaped\n")
        add_member(tar, "etc", kind=tarfile.SYMTYPE, link="/etc")
        add_member(tar, "etc/sandbox-pwned", data=b"escaped\n")
        add_member(tar, "hosts-hard", kind=tarfile.LNKTYPE, link="/etc/hostname")
        add_member(tar, "hosts-hard2", kind=tarfile.LNKTYPE, link="../../../etc/hostname")
        add_member(tar, "rel", kind=tarfile.SYMTYPE, link="../../../../etc")
        add_member(tar, "rel/sandbox-pwned2", data=b"escaped\n")
    return dest


@pytest.fixture
def escape_dir() -> Path:
    ESCAPE.mkdir(exist_ok=True)
    try:
        yield ESCAPE
    finally:
        for p in ESCAPE.iterdir():
            p.unlink()
        ESCAPE.rmdir()


def test_a_hostile_layer_writes_nothing_outside_its_rootfs(images: Images, test_dir: Path,
                                                           escape_dir: Path) -> None:
    hostname = _digest(Path("/etc/hostname"))
    store = ImageStore()
    layer = _hostile_layer(test_dir / "hostile.tar")
    try:
        image = store.import_rootfs(layer, "hostile")
    except SetupError as e:  # refusing the whole layer is as good as containing it
        image = None
        assert "hostile" not in str(e) or "layer" in str(e)
    assert list(escape_dir.iterdir()) == []
    assert not Path("/etc/sandbox-pwned").exists()
    assert not Path("/etc/sandbox-pwned2").exists()
    assert _digest(Path("/etc/hostname")) == hostname
    if image is None:
        assert not [p for p in store.rootfs_dir.iterdir() if p.name.startswith(".unpack-")]
        return
    host_ino = os.stat("/etc/hostname").st_ino
    for name in ("hosts-hard", "hosts-hard2"):
        p = image.rootfs / name
        if p.exists():  # a hard link may only point inside the rootfs
            assert os.lstat(p).st_ino != host_ino
    # Inside the sandbox, the layer's links resolve inside the image, never to the host.
    with Sandbox(image="hostile") as sb:
        r = sb.exec(["ls", str(ESCAPE)])
        assert "dotdot" not in r.stdout and "absolute" not in r.stdout
        assert sb.exec(["cat", "/hosts-hard"]).stdout != Path("/etc/hostname").read_text() \
            or Path("/etc/hostname").read_text() == ""
    store.remove("hostile")


def test_a_hostile_workdir_cannot_aim_the_workspace_mount(images: Images, test_dir: Path,
                                                          escape_dir: Path) -> None:
    """WorkingDir through a link out of the image (`/w -> /srv/...`): the supervisor makes
    the mount point in the upper layer, never through the image's own links, so nothing
    is mounted on or created at a host path."""
    with tarfile.open(test_dir / "wd.tar", "w") as tar:
        add_member(tar, "bin", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "bin/busybox", data=Path("/bin/busybox").read_bytes(), mode=0o755)
        add_member(tar, "bin/sh", kind=tarfile.SYMTYPE, link="busybox")
        add_member(tar, "bin/pwd", kind=tarfile.SYMTYPE, link="busybox")
        add_member(tar, "w", kind=tarfile.SYMTYPE, link=str(ESCAPE))
    store = ImageStore()
    store.import_rootfs(test_dir / "wd.tar", "hostile-wd", workdir="/w/deeper")
    try:
        with Sandbox(image="hostile-wd") as sb:
            r = sb.exec(["pwd"])
            assert r.returncode == 0, r.stderr
        assert list(escape_dir.iterdir()) == []
        assert str(ESCAPE) not in Path("/proc/self/mountinfo").read_text()
    finally:
        store.remove("hostile-wd")


def test_device_nodes_seeded_into_the_workspace_are_inert(images: Images,
                                                          test_dir: Path) -> None:
    """A layer's WorkingDir holding a disk's device node and a setuid file: the fresh
    workspace is seeded from it (as root), and neither works inside (the workspace is
    bound nodev,nosuid; the seed's chown clears setuid)."""
    with tarfile.open(test_dir / "dev.tar", "w") as tar:
        add_member(tar, "bin", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "bin/busybox", data=Path("/bin/busybox").read_bytes(), mode=0o755)
        for applet in ("sh", "head", "wc", "id", "stat"):
            add_member(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add_member(tar, "app", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "app/disk", kind=tarfile.BLKTYPE, mode=0o666,
                   devmajor=os.major(os.stat("/dev/vda").st_rdev) if os.path.exists("/dev/vda")
                   else 8, devminor=0)
        add_member(tar, "app/suid", data=Path("/bin/busybox").read_bytes(), mode=0o4755)
    store = ImageStore()
    store.import_rootfs(test_dir / "dev.tar", "hostile-dev", workdir="/app")
    try:
        with Sandbox(image="hostile-dev") as sb:
            r = sb.exec("head -c 16 /app/disk | wc -c")
            assert r.stdout.strip() == "0" and "denied" in r.stderr.lower(), (r.stdout, r.stderr)
            r = sb.exec(["/app/suid", "id", "-u"])
            assert r.stdout.strip() != "0", r.stdout
    finally:
        store.remove("hostile-dev")


def test_remounting_var_tmp_runs_no_file_of_the_image(images: Images, test_dir: Path) -> None:
    """`[filesystem] exec_var_tmp` (inspect's provider turns it on) remounts the jail's
    /var/tmp as root. Done with `nsenter -r -- mount`, that ran the image's own
    /usr/bin/mount as uid 0; an image that plants one must see it never run, and the
    remount must still happen."""
    from sandbox.jail.profile import load, override

    with tarfile.open(test_dir / "trap.tar", "w") as tar:
        add_member(tar, "usr/bin/mount", mode=0o755,
                   data=b"#!/bin/sh\nid -u > /workspace/mount-ran-as\n")
    store = ImageStore()
    store.derive(store.get(images.deb), test_dir / "trap.tar", "trap-mount", "test:trap")
    profile = override(load("default"), {"filesystem": {"exec_var_tmp": True}}, "test")
    try:
        with Sandbox(profile, image="trap-mount") as sb:
            r = sb.exec("printf '#!/bin/sh\\necho ran\\n' > /var/tmp/t && chmod +x /var/tmp/t"
                        " && /var/tmp/t; ls /workspace")
            assert r.stdout.split() == ["ran"], (r.stdout, r.stderr)
            assert not (Path(sb.workdir) / "mount-ran-as").exists()
    finally:
        store.remove("trap-mount")
