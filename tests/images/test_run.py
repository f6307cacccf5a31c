"""Running in an image through every door: `sandbox run --image`, `Sandbox(image=...)`,
a profile's `[image] ref`; the image's Env, WorkingDir, User, Entrypoint and Cmd as
`docker run` honours them (but never root); a bash-less image still runs exec; a kept
layer becomes a new image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox import Sandbox, Store
from sandbox.errors import SetupError
from sandbox.jail.images import ImageStore
from tests.helpers import make_workspace, sandbox_cli

from .conftest import Images


def test_run_python_in_the_image(images: Images) -> None:
    """The quick start of images: `sandbox run --image deb -- python3 -c ...` runs the
    image's own python (Debian 12's 3.11), in the image's filesystem, as the agent."""
    r = sandbox_cli("run", "--image", "deb", "--", "python3", "-c",
                    "import os, sys; print(sys.version_info[:2], os.getuid() != 0, "
                    "open('/etc/debian_version').read().strip()[:2])", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(3, 11) True 12", r.stdout
    assert "exited" in r.stderr  # the summary line


def test_docker_semantics_env_workdir_user_entrypoint(images: Images) -> None:
    """`layered` says User root, WorkingDir /srv/task, Entrypoint env, Cmd python3 -c: the
    command starts in /srv/task, as the agent (not root), with the image's PATH; with no
    command the Entrypoint runs the Cmd; with one, it runs the command."""
    r = sandbox_cli("run", "-q", "--image", "layered", timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "cmd of the image", r.stderr
    r = sandbox_cli("run", "-q", "--image", "layered", "-e", "EXTRA=1", "--", "sh", "-c",
                    'echo "$(pwd) $(id -u) $PATH $EXTRA $HOME"; cat README', timeout=120)
    assert r.returncode == 0, r.stderr
    cwd, uid, path, extra, home = r.stdout.splitlines()[0].split()
    assert (cwd, path, extra, home) == ("/srv/task", "/usr/bin:/bin", "1", "/srv/task")
    assert uid != "0"
    # The fresh workspace was seeded with what the image holds at its working directory.
    assert "the task's repository" in r.stdout


def test_api_run_exec_files_and_the_record(images: Images, test_dir: Path) -> None:
    """The Python door in an image: run (the recorded bash), exec (argv, streams apart,
    the image's env), the files API, and each of them in the record."""
    with Sandbox(image="deb") as sb:
        r = sb.run("cd /tmp && pwd && echo $IMAGE_VAR && whoami")
        assert r.exit_code == 0 and r.output.split()[:2] == ["/tmp", "from-the-image"]
        assert r.output.split()[2].startswith("sandbox-agent"), r.output  # a named account
        e = sb.exec(["python3", "-c", "import sys; print('out'); print('err', file=sys.stderr);"
                     " sys.exit(4)"])
        assert (e.returncode, e.stdout, e.stderr) == (4, "out\n", "err\n")
        assert sb.exec(["pwd"]).stdout == "/workspace\n"
        assert sb.exec("pwd", cwd="/usr").stdout == "/usr\n"
        assert sb.exec("pwd", cwd="nope").returncode == 125  # as on the host: env -C
        sb.write_file("src/x.py", "print('hi from a file')")
        assert sb.exec(["python3", "src/x.py"]).stdout == "hi from a file\n"
        assert sb.read_file("src/x.py") == "print('hi from a file')"
        sid = sb.id
    store = Store()
    texts = [c["text"] for c in store.commands(sid)]
    assert any("whoami" in t for t in texts) and any("python3 src/x.py" in t for t in texts)
    kinds = {e["kind"] for e in store.events(sid)}
    assert "session.image" in kinds
    assert sandbox_cli("verify", sid).returncode == 0


def test_profile_names_the_image(images: Images, test_dir: Path) -> None:
    profile = test_dir / "img.toml"
    profile.write_text('extends = "default"\n[image]\nref = "deb"\nworkdir = "/work/here"\n')
    with Sandbox(profile=str(profile)) as sb:
        assert sb.exec(["pwd"]).stdout == "/work/here\n"
        assert sb.exec(["cat", "/etc/debian_version"]).returncode == 0


def test_a_bash_less_image_runs_exec_and_says_what_run_needs(images: Images) -> None:
    """busybox alone: exec works (the jail is held without any program of the image's);
    run() and `sandbox shell` say bash is missing and what works instead."""
    with Sandbox(image="bb") as sb:
        e = sb.exec(["id", "-u"])
        assert e.returncode == 0 and e.stdout.strip() != "0", e.stderr
        assert sb.exec("echo hi; exit 3").returncode == 3
        with pytest.raises(SetupError, match=r"has no bash.*exec"):
            sb.run("true")
    r = sandbox_cli("run", "-q", "--image", "bb", "--", "sh", "-c", "echo hi from busybox")
    assert r.returncode == 0 and r.stdout == "hi from busybox\n", r.stderr


def test_own_workdir_is_mounted_at_the_image_working_directory(images: Images,
                                                              test_dir: Path) -> None:
    ws = make_workspace(test_dir / "mine")
    (ws / "mine.txt").write_text("host side")
    with Sandbox(image="layered", workdir=ws) as sb:
        assert sb.exec(["cat", "/srv/task/mine.txt"]).stdout == "host side"
        sb.exec("echo back > /srv/task/back.txt")
    assert (ws / "back.txt").read_text() == "back\n"
    assert not (ws / "README").exists()  # a workspace of your own is not seeded


def test_keep_then_commit_makes_a_new_image(images: Images, state_dir: Path) -> None:
    """`run --keep` leaves the sandbox's upper behind; `image commit` turns it into an image
    (and consumes it) without the supervisor's own per-session files."""
    r = sandbox_cli("run", "--keep", "--image", "deb", "--json", "--", "sh", "-c",
                    "echo episode-1 > notes.txt", timeout=120)
    assert r.returncode == 0, r.stderr
    sid = json.loads(r.stderr.strip().splitlines()[0])["session"]
    assert "image commit" in r.stderr
    uppers = state_dir / "uppers" / sid
    assert (uppers / "upper").is_dir()  # kept
    r = sandbox_cli("image", "commit", sid, "deb-next", "--json")
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)
    assert new["name"] == "deb-next" and new["digest"] != ImageStore().get("deb").digest
    assert not uppers.exists()  # the kept layer is consumed
    passwd = (Path(new["rootfs"]) / "etc/passwd").read_text()
    assert "sandbox agent" not in passwd  # the agent's account stays out
    with Sandbox(image="deb-next") as sb:  # the next episode starts from the snapshot
        assert sb.exec(["python3", "-c", "print(1)"]).stdout == "1\n"
        assert sb.exec(["cat", "notes.txt"]).stdout == "episode-1\n"
        assert sb.exec("echo more >> notes.txt").returncode == 0  # the agent's own copy
    ImageStore().remove("deb-next")


def test_commit_carries_the_agents_changes(images: Images, state_dir: Path,
                                           test_dir: Path) -> None:
    """Writes into the root (not the workspace) land in the upper and in the commit."""
    profile = test_dir / "w.toml"
    profile.write_text('extends = "default"\n[image]\nref = "layered"\nworkdir = "/w"\n')
    with Sandbox(profile=str(profile), keep=True) as sb:
        # /srv/task belongs to root in the image; /opt/data too: the agent cannot write
        # there. /var/tmp is a tmpfs of firejail's. A world-writable dir of the image's
        # own is the honest place: make one as the image's root would (in a layer) ...
        r = sb.exec("ls -ld /opt/data; id -u")
        assert r.returncode == 0
        sid = sb.id
    # ... or write into the kept upper from the host, as a framework seeding a snapshot.
    upper = state_dir / "uppers" / sid / "upper"
    (upper / "opt/data").mkdir(parents=True, exist_ok=True)
    (upper / "opt/data/added.txt").write_text("added")
    os.mknod(upper / "opt/data/new.txt", 0o20000 | 0o600, os.makedev(0, 0))  # a whiteout
    new = ImageStore().get(sandbox_commit(sid, "layered-next"))
    assert sorted(os.listdir(new.rootfs / "opt/data")) == ["added.txt"]
    ImageStore().remove("layered-next")


def sandbox_commit(sid: str, name: str) -> str:
    r = sandbox_cli("image", "commit", sid, name, "--json")
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout)["name"])


def test_warm_pool_per_image(images: Images) -> None:
    """A warm pool keeps sandboxes of one image ready, under its own key."""
    import asyncio

    from sandbox.doors.pool import WarmPool

    async def main() -> None:
        async with WarmPool() as pool:
            pool.warm(1, "default", image="deb")
            await pool.wait_ready(timeout=60)
            sb = await pool.acquire("default", image="deb")
            r = await sb.exec(["cat", "/etc/debian_version"])
            assert r.returncode == 0 and r.stdout.startswith("12")
            assert pool.stats("default@deb")["warm_hits"] == 1
            await pool.release(sb)

    asyncio.run(main())


def test_an_images_loader_variables_reach_its_programs(images: Images) -> None:
    """CUDA images set LD_LIBRARY_PATH; firejail is setuid, so the loader would drop it
    on the way in: it goes in through firejail's --env, for the jail's first program and
    for every exec."""
    store = ImageStore()
    store.import_rootfs(images.root / "build/bb.tar", "bb-ld",
                        env=["PATH=/bin", "LD_LIBRARY_PATH=/usr/local/nvidia/lib64"])
    try:
        with Sandbox(image="bb-ld") as sb:
            assert sb.exec("echo $LD_LIBRARY_PATH").stdout == "/usr/local/nvidia/lib64\n"
        r = sandbox_cli("run", "-q", "--image", "bb-ld", "--", "sh", "-c",
                        "echo $LD_LIBRARY_PATH")
        assert r.stdout == "/usr/local/nvidia/lib64\n", r.stderr
    finally:
        store.remove("bb-ld")
