"""The image store: real skopeo and umoci, images built here (see conftest). Pull from an
OCI layout and a `docker save`-style archive, import a rootfs, list, inspect, remove and
prune through the CLI with --json; layers verified by digest; a corrupt layer is an error
naming its digest that leaves nothing half-unpacked."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.errors import NotFound, SetupError
from sandbox.jail.images import ImageStore
from tests.helpers import sandbox_cli

from .conftest import Images, add_member, run


def test_ls_and_inspect_speak_json(images: Images) -> None:
    """`image ls --json` lists the run's images; `inspect --json` carries the config."""
    r = sandbox_cli("image", "ls", "--json")
    assert r.returncode == 0, r.stderr
    names = {i["name"] for i in json.loads(r.stdout)}
    assert {"deb", "layered", "bb"} <= names
    r = sandbox_cli("image", "inspect", "layered", "--json")
    info = json.loads(r.stdout)
    assert info["digest"].startswith("sha256:") and info["workdir"] == "/srv/task"
    assert info["entrypoint"] == ["/usr/bin/env"] and info["cmd"][0] == "python3"
    assert Path(info["rootfs"], "usr/bin/python3").exists()


def test_whiteout_and_opaque_directory_are_applied(images: Images) -> None:
    """Layer two deletes /etc/issue and replaces /opt/data: inside, neither survives."""
    rootfs = ImageStore().get("layered").rootfs
    assert not (rootfs / "etc/issue").exists()
    assert (rootfs / "etc/debian_version").exists()
    assert sorted(os.listdir(rootfs / "opt/data")) == ["new.txt"]
    with Sandbox(image="layered") as sb:
        r = sb.exec("ls /opt/data; test -e /etc/issue || echo no-issue")
        assert r.stdout.split() == ["new.txt", "no-issue"], r.stderr


def test_docker_archive_round_trip(images: Images, test_dir: Path) -> None:
    """A `docker save` tarball (skopeo writes one from the layout) pulls like a registry
    image, under a name given on the command line, and runs."""
    archive = test_dir / "img.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet",
                    f"oci:{images.layout}:layered:1", f"docker-archive:{archive}:x/y:2"],
                   check=True, capture_output=True, timeout=300)
    r = sandbox_cli("image", "pull", f"docker-archive:{archive}", "from-archive", "--json",
                    timeout=300)
    assert r.returncode == 0, r.stderr
    digest = json.loads(r.stdout)["digest"]
    try:
        r = sandbox_cli("run", "-q", "--image", "from-archive", "--", "cat",
                        "/srv/task/README", timeout=120)
        assert r.returncode == 0 and "the task's repository" in r.stdout, r.stderr
    finally:
        assert sandbox_cli("image", "rm", "from-archive").returncode == 0
    assert not any(i.digest == digest and i.name == "from-archive"
                   for i in ImageStore().images())


def _layout_with_a_fresh_layer(layout: Path, payload: bytes) -> tuple[str, Path]:
    """An OCI layout of one image whose only layer is a tar no store has seen; returns
    the layer's digest and its blob's path."""
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:x")
    tar = layout.parent / f"{layout.name}.tar"
    with tarfile.open(tar, "w") as t:
        add_member(t, "payload", data=payload)
    run("umoci", "raw", "add-layer", "--image", f"{layout}:x", str(tar))
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:])
                          .read_text())
    digest = manifest["layers"][-1]["digest"]
    return digest, layout / "blobs/sha256" / digest[7:]


def _nothing_half_unpacked(store: ImageStore, before: list[str]) -> None:
    assert sorted(p.name for p in store.rootfs_dir.iterdir()) == before
    with pytest.raises(NotFound):
        store.get("bad")


def test_corrupt_layer_names_its_digest_and_leaves_nothing(images: Images,
                                                            test_dir: Path) -> None:
    """A layer blob cut short (its digest no longer matches) fails the pull with that
    digest in the message; nothing is left in the store."""
    digest, blob = _layout_with_a_fresh_layer(test_dir / "bad", os.urandom(200_000))
    blob.write_bytes(blob.read_bytes()[:5000])
    store = ImageStore()
    before = sorted(p.name for p in store.rootfs_dir.iterdir())
    with pytest.raises(SetupError) as err:
        store.pull(f"oci:{test_dir / 'bad'}:x", "bad")
    assert digest in str(err.value) and "did not match" in str(err.value)
    _nothing_half_unpacked(store, before)


def test_truncated_layer_with_a_matching_digest_leaves_nothing(images: Images,
                                                               test_dir: Path) -> None:
    """A layer whose tar stream ends mid-member, published with its (matching) digest:
    the unpack fails, its error names the image, and no rootfs or temporary directory is
    left behind."""
    payload = os.urandom(300_000)
    with tarfile.open(test_dir / "whole.tar", "w") as t:
        add_member(t, "payload", data=payload)
    cut = (test_dir / "whole.tar").read_bytes()[:100_000]
    layout = test_dir / "trunc"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:x")
    (test_dir / "cut.tar").write_bytes(cut)
    run("umoci", "raw", "add-layer", "--image", f"{layout}:x", str(test_dir / "cut.tar"))
    store = ImageStore()
    before = sorted(p.name for p in store.rootfs_dir.iterdir())
    with pytest.raises(SetupError) as err:
        store.pull(f"oci:{layout}:x", "bad")
    assert "unpacking sha256:" in str(err.value)
    _nothing_half_unpacked(store, before)


def test_rm_refuses_an_image_in_use_and_names_are_checked(images: Images) -> None:
    """`image rm` waits for the image's sandboxes (a kernel lock, gone with its holder);
    a name with control characters or `..` is refused."""
    store = ImageStore()
    store.import_rootfs(Path(images.root / "build/bb.tar"), "bb-copy")
    with Sandbox(image="bb-copy") as sb:
        assert sb.exec(["true"]).returncode == 0
        r = sandbox_cli("image", "rm", "bb-copy")
        assert r.returncode != 0 and "in use" in r.stderr, r.stderr
    r = sandbox_cli("image", "rm", "bb-copy")
    assert r.returncode == 0, r.stderr
    for bad in ("../x", "a\x1b[2Jb", ""):
        with pytest.raises(SetupError):
            store.import_rootfs(Path(images.root / "build/bb.tar"), bad)


def test_prune_removes_what_no_name_needs(images: Images) -> None:
    store = ImageStore()
    stray = store.rootfs_dir / (".unpack-" + "0" * 16 + "-1")
    stray.mkdir()
    r = sandbox_cli("image", "prune")
    assert r.returncode == 0, r.stderr
    assert not stray.exists()
    assert store.get("deb").rootfs.is_dir()  # named images stay
