"""`AsyncSandbox`: the same surface as `Sandbox`, driven from the caller's loop."""

from __future__ import annotations

import asyncio
import io
import tarfile
import threading
from pathlib import Path

import pytest

from sandbox import AsyncSandbox, ExecTimeout, NotFound, Sandbox, Store
from sandbox.doors.hostfs import extract_plain
from tests.helpers import make_workspace


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_many_execs_at_once_no_thread_per_exec(workspace: Path) -> None:
    async def main() -> None:
        async with AsyncSandbox(workdir=workspace) as sb:
            threads_before = threading.active_count()
            peak = threads_before

            async def one(i: int) -> str:
                nonlocal peak
                r = await sb.exec(["sh", "-c", f"sleep 0.3; echo {i}; echo e{i} >&2"])
                peak = max(peak, threading.active_count())
                assert r.stderr == f"e{i}\n"
                return r.stdout.strip()

            outs = await asyncio.gather(*(one(i) for i in range(24)))
            assert outs == [str(i) for i in range(24)]
            # finishing (the store write) goes to the default executor: a few pooled
            # threads, not one per exec
            assert peak - threads_before <= 8, (threads_before, peak)
            rows = Store().commands(sb.id)
            assert len([r for r in rows if r["source"] == "exec"]) == 24

    _run(main())


def test_many_sandboxes_in_one_loop(test_dir: Path) -> None:
    async def main() -> None:
        boxes = [AsyncSandbox(workdir=make_workspace(test_dir / f"w{i}")) for i in range(6)]
        try:
            await asyncio.gather(*(b.start() for b in boxes))
            assert all(b.is_alive() for b in boxes)
            results = await asyncio.gather(*(b.exec(["pwd"]) for b in boxes))
            assert [r.stdout.strip() for r in results] == [b.workdir for b in boxes]
            assert AsyncSandbox.lookup(boxes[2].id) is boxes[2]
        finally:
            await asyncio.gather(*(b.close() for b in boxes))
        assert not any(b.is_alive() for b in boxes)
        with pytest.raises(NotFound):
            AsyncSandbox.lookup("0123456789")

    _run(main())


def test_timeout_and_cancel_kill_the_tree(workspace: Path) -> None:
    async def main() -> None:
        async with AsyncSandbox(workdir=workspace) as sb:
            with pytest.raises(ExecTimeout) as info:
                await sb.exec("echo begun; sleep 300", timeout=1)
            assert info.value.result.stdout == "begun\n"
            task = asyncio.create_task(sb.exec(["sleep", "300"]))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            r = await sb.exec("pgrep -c sleep || true")
            assert r.stdout.strip() == "0"

    _run(main())


def test_a_cancelled_exec_and_a_dropped_spawn_are_still_recorded(workspace: Path) -> None:
    """An exec whose caller was cancelled, and a spawn nobody waited for, ran in the jail
    all the same: neither was in the record."""
    async def main() -> None:
        async with AsyncSandbox(workdir=workspace) as sb:
            task = asyncio.create_task(sb.exec(["sleep", "300.5"]))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await sb.spawn(["sh", "-c", "echo dropped-spawn"])  # never waited for

            def rows() -> dict[str, object]:
                return {r["text"]: r["exit_code"] for r in Store().commands(sb.id)}

            for _ in range(50):
                if "sleep 300.5" in rows() and "sh -c 'echo dropped-spawn'" in rows():
                    break
                await asyncio.sleep(0.1)
            assert rows().get("sleep 300.5") == 137, rows()
            assert rows().get("sh -c 'echo dropped-spawn'") == 0, rows()

    _run(main())


def test_concurrent_execs_each_get_their_alerts(workspace: Path) -> None:
    """Alerts were one list drained by whichever result finished first: an exec that
    finished while its neighbour's tunnel was being blocked took that alert, and the
    neighbour's own result said nothing."""
    async def main() -> None:
        async with AsyncSandbox(workdir=workspace) as sb:
            await sb.write_file("t.sh", "x=ss; ${x}h -o BatchMode=yes -R 1:127.0.0.1:1 "
                                        "nohost.test; sleep 2.5\n")
            tunnel = asyncio.create_task(sb.exec(["sh", "t.sh"]))
            quiet = await sb.exec(["sleep", "1.2"])  # finishes first, after the alert
            loud = await tunnel
            rule = "tunnels.ssh_forward"
            assert any(a["rule"] == rule for a in loud.alerts), loud.alerts
            # open while it happened: it may be the cause (an alert does not always
            # say which process), so it is told too
            assert any(a["rule"] == rule for a in quiet.alerts), quiet.alerts
            # and one that starts later is not
            assert not (await sb.exec(["true"])).alerts
            # a command the guard blocks by its text names itself: its verdict is on its
            # own result only, not on a neighbour's that happened to be running
            slow = asyncio.create_task(sb.exec(["sleep", "0.8"]))
            await asyncio.sleep(0.3)
            blocked = await sb.exec(["ssh", "-o", "BatchMode=yes", "-R", "1:127.0.0.1:1", "x"])
            assert blocked.blocked and any(a["rule"] == rule for a in blocked.alerts)
            assert not (await slow).alerts

    _run(main())


def test_spawn_streams_both_ways(workspace: Path) -> None:
    async def main() -> None:
        async with AsyncSandbox(workdir=workspace) as sb:
            p = await sb.spawn(["sh", "-c", "while read l; do echo got:$l; done; echo bye >&2"])
            await p.write(b"one\n")
            first = await p.stdout.__aiter__().__anext__()
            assert first == b"got:one\n"
            await p.write("two\n")
            p.close_stdin()
            rest = await p.stdout.read()
            assert rest == b"got:two\n"
            assert await p.stderr.read() == b"bye\n"
            r = await p.wait()
            assert r.returncode == 0 and p.returncode == 0
            cmd = Store().commands(sb.id)[-1]
            assert cmd["source"] == "exec" and "got:two" in cmd["output"]
            long = await sb.spawn(["sleep", "300"])
            long.kill()
            assert (await long.wait()).returncode == 137

    _run(main())


def test_sync_spawn(sb: Sandbox) -> None:
    p = sb.spawn(["sh", "-c", "for i in 1 2 3; do echo $i; done"])
    assert b"".join(p.stdout) == b"1\n2\n3\n"
    assert p.wait().returncode == 0


def test_upload_download_and_tar(sb: Sandbox, test_dir: Path) -> None:
    src = test_dir / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"A\r\nB")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    sb.upload(src, "up")
    sb.upload(src / "a.txt", "single.txt")
    r = sb.exec("cat up/a.txt; echo; stat -c %U up/sub/b.bin single.txt")
    assert r.stdout.startswith("A\r\nB") and r.stdout.split()[-1] == r.stdout.split()[-2]
    back = test_dir / "back"
    sb.download("up", back)
    assert (back / "a.txt").read_bytes() == b"A\r\nB"
    assert (back / "sub" / "b.bin").read_bytes() == bytes(range(256))
    sb.download("single.txt", test_dir / "one.txt")
    assert (test_dir / "one.txt").read_bytes() == b"A\r\nB"
    blob = sb.export_tar("up")
    sb.import_tar(blob, "copy")
    assert sb.exec(["cat", "copy/sub/b.bin"]).stdout_bytes == bytes(range(256))
    with pytest.raises(FileNotFoundError, match="nope"):
        sb.download("nope", test_dir / "x")
    events = [e["kind"] for e in Store().events(sb.id)]
    assert "file.upload" in events and "file.download" in events


def test_download_refuses_what_the_agent_planted(sb: Sandbox, test_dir: Path) -> None:
    """A symlink in the tree (to a host file the supervisor, as root, could write
    through) is refused, and nothing is written."""
    sb.exec("mkdir -p d && echo ok > d/f && ln -s /etc/passwd d/link")
    with pytest.raises(OSError, match="only plain files"):
        sb.download("d", test_dir / "out")
    assert not (test_dir / "out").exists()


def test_host_links_the_agent_planted_are_not_followed(sb: Sandbox, test_dir: Path) -> None:
    """The workspace is the agent's: a download into it went through the links the
    agent made there, so root wrote wherever the agent pointed; an upload from it read
    whatever host file the agent's link named (and handed it to the agent)."""
    victim = test_dir / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("host data\n")
    (test_dir / "secret").write_text("host secret\n")
    ws = Path(sb.workdir)
    sb.exec(["sh", "-c", f"mkdir -p results && echo owned > results/keep.txt && "
                         f"ln -s {victim} out && ln -s {victim} results-copy && "
                         f"ln -s {test_dir / 'secret'} leak"])
    for dest in (ws / "out" / "results", ws / "results-copy", ws / "out" / "x" / "y"):
        with pytest.raises(OSError, match="link"):
            sb.download("results", dest)
    with pytest.raises(OSError, match="link"):
        sb.download("results/keep.txt", ws / "out" / "keep.txt")
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "host data\n"
    with pytest.raises(OSError, match="link"):
        sb.upload(ws / "leak", "got")
    assert sb.exec(["cat", "got"]).returncode != 0
    # inside an uploaded tree a link stays a link (its text), never its target's bytes
    sb.exec(["sh", "-c", "mkdir -p tree && echo mine > tree/f && "
                         f"ln -s {test_dir / 'secret'} tree/leak"])
    sb.upload(ws / "tree", "copy")
    assert sb.exec(["readlink", "copy/leak"]).stdout.strip() == str(test_dir / "secret")
    assert sb.read_file("copy/f") == "mine\n"
    with pytest.raises(FileNotFoundError, match="not a file or directory"):
        sb.upload(test_dir / "nowhere" / "x", "y")
    # the caller's own links (root's here) are followed as before
    (test_dir / "mine").symlink_to(victim)
    sb.download("results", test_dir / "mine" / "fetched")
    assert (victim / "fetched" / "keep.txt").read_text() == "owned\n"


def test_transfer_errors_show_the_agents_names_harmlessly(sb: Sandbox, test_dir: Path) -> None:
    """A transfer's error quotes the jail's tool and the agent's link targets: an escape
    sequence in a file name the agent chose reached the operator's terminal in the
    exception's message (OSC 2 retitles it; others paint or worse)."""
    evil = "\x1b]2;PWNED\x07"
    sb.exec(["sh", "-c", f"mkdir -p d && ln -s '/{evil}' planted"])
    # a program of the agent's that fails like a non-executable one: its stderr is quoted
    sb.write_file("x.sh", "printf '\\033]2;PWNED\\007 Permission denied' >&2; exit 126\n")
    with pytest.raises(PermissionError) as e:
        sb.exec(["sh", "x.sh"])
    assert "PWNED" in str(e.value) and "\x1b" not in str(e.value), str(e.value)
    with pytest.raises(OSError) as e:
        sb.download("d", Path(sb.workdir) / "planted" / "x")
    assert "PWNED" in str(e.value) and "\x1b" not in str(e.value), str(e.value)


def _tar(*entries: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in entries:
            data = b"x" * info.size if info.isfile() else None
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.mark.parametrize("name,kind", [
    ("top/../../escape", tarfile.REGTYPE), ("/etc/evil", tarfile.REGTYPE),
    ("elsewhere/f", tarfile.REGTYPE), ("top/dev", tarfile.CHRTYPE),
    ("top/hard", tarfile.LNKTYPE), ("top/sym", tarfile.SYMTYPE),
])
def test_hostile_archives_are_refused(test_dir: Path, name: str, kind: bytes) -> None:
    top = tarfile.TarInfo("top")
    top.type = tarfile.DIRTYPE
    bad = tarfile.TarInfo(name)
    bad.type = kind
    bad.size = 3 if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.LNKTYPE, tarfile.SYMTYPE):
        bad.linkname = "/etc/shadow"
    with pytest.raises(OSError, match="download"):
        extract_plain(_tar(top, bad), test_dir / "dest")
    assert not (test_dir / "dest").exists() and not (test_dir.parent / "escape").exists()


def test_setuid_bits_are_dropped(test_dir: Path) -> None:
    top = tarfile.TarInfo("f")
    top.size, top.mode = 3, 0o4755
    extract_plain(_tar(top), test_dir / "f")
    assert (test_dir / "f").stat().st_mode & 0o7777 == 0o755


def test_network_and_limits_per_sandbox(workspace: Path) -> None:
    from sandbox import ProfileError

    with pytest.raises(ProfileError, match=r"network\.mode"):
        Sandbox(workdir=workspace, network="everything")
    with pytest.raises(ProfileError, match=r"limits\.pids"):
        Sandbox(workdir=workspace, limits={"pids": 0})
    box = Sandbox(workdir=workspace, network=["pypi.org:443"], limits={"processes": 77})
    assert box.profile.network.mode == "allowlist"
    assert box.profile.network.allow == ["pypi.org:443"]
    with Sandbox(workdir=workspace, limits={"processes": 77}) as sb:
        assert sb.exec(["bash", "-c", "ulimit -u"]).stdout.strip() == "77"


def test_exec_does_not_escape_the_rlimits(workspace: Path) -> None:
    """firejail sets --rlimit-* for the jail it starts, not for a process that joins it:
    before the launch set them, an exec ran with the host's limits (ulimit -u 96364)."""
    with Sandbox(workdir=workspace, limits={"processes": 77, "file_size_mib": 1,
                                            "open_files": 99}) as sb:
        r = sb.exec(["bash", "-c", "ulimit -u; ulimit -n; head -c 2M /dev/zero > big"])
        assert r.stdout.split() == ["77", "99"] and r.returncode == 128 + 25  # SIGXFSZ
