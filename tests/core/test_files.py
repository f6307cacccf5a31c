"""Files through the API, as the agent user in the jail's own view."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Sandbox, Store


def test_write_then_read_exact_bytes_with_parents(sb: Sandbox, workspace: Path) -> None:
    blob = b"line1\r\nline2\r\n\x00\xff" + bytes(range(256))
    sb.write_file("deep/er/data.bin", blob)
    assert sb.read_file("deep/er/data.bin", text=False) == blob
    assert (workspace / "deep/er/data.bin").read_bytes() == blob
    assert (workspace / "deep/er/data.bin").stat().st_uid == workspace.stat().st_uid
    sb.write_file("/tmp/t.txt", "crlf\r\nkept")
    assert sb.read_file("/tmp/t.txt") == "crlf\r\nkept"
    kinds = [e["kind"] for e in Store().events(sb.id, kinds=("file.read", "file.write"))]
    assert kinds.count("file.write") == 2 and kinds.count("file.read") == 2
    ev = Store().events(sb.id, kinds=("file.write",))[0]["detail"]
    assert ev["bytes"] == len(blob) and len(ev["sha256"]) == 64


def test_write_makes_parents_only_when_missing_and_hashes_large_files(
        sb: Sandbox, workspace: Path) -> None:
    """The write's shell makes missing parents with builtins (no dirname, no mkdir when
    they exist); a parent that is a file fails with its name; a large file's sha256 is
    taken beside the exec and is the file's."""
    import hashlib

    sb.write_file("top.txt", "t")
    sb.write_file("./one/two/three.txt", "3")
    sb.write_file(f"{sb.workdir}/abs/x.txt", "abs")
    sb.write_file("one/two/again.txt", "again")  # the parent exists now
    assert [(workspace / p).read_text() for p in
            ("top.txt", "one/two/three.txt", "abs/x.txt", "one/two/again.txt")] == \
        ["t", "3", "abs", "again"]
    with pytest.raises(OSError, match=r"top\.txt"):
        sb.write_file("top.txt/under.txt", "no")
    big = bytes(range(256)) * 8192  # 2 MiB: past the size hashed on a thread
    sb.write_file("big.bin", big)
    ev = Store().events(sb.id, kinds=("file.write",))[-1]["detail"]
    assert ev["sha256"] == hashlib.sha256(big).hexdigest() and ev["bytes"] == len(big)
    assert (workspace / "big.bin").read_bytes() == big


def test_errors_name_the_path(sb: Sandbox, state_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        sb.read_file("nope.txt")
    sb.run("mkdir -p adir")
    with pytest.raises(IsADirectoryError, match="adir"):
        sb.read_file("adir")
    with pytest.raises(PermissionError, match="shadow"):
        sb.read_file("/etc/shadow")
    with pytest.raises(PermissionError):
        sb.write_file("/etc/sandbox-should-not-exist", "x")
    with pytest.raises(OSError):  # the store stays hidden
        sb.read_file(str(state_dir / "sandbox.db"))
    with pytest.raises(OSError, match="larger than"):
        sb.write_file("big", b"x" * 5000)
        sb.read_file("big", max_bytes=100)


def test_file_bytes_are_not_copied_into_the_command_record(sb: Sandbox) -> None:
    """A file read is a file.read event (size, sha256); its bytes are not hashed into the
    command record a second time (5 MB cost ~0.6 s), nor past the profile's cap."""
    import hashlib

    blob = bytes(range(256)) * 8192  # 2 MiB
    sb.write_file("big.bin", blob)
    assert sb.read_file("big.bin", text=False) == blob
    rows = Store().commands(sb.id)
    assert all(len(r["output"]) < 10_000 for r in rows[-2:])
    ev = [e for e in Store().events(sb.id) if e["kind"] == "file.read"][-1]
    assert ev["detail"]["sha256"] == hashlib.sha256(blob).hexdigest()
    big = sb.exec(["head", "-c", str(3 << 20), "/dev/zero"], max_output=8 << 20)
    assert len(big.stdout_bytes) == 3 << 20 and not big.truncated  # the caller's cap
    row = Store().commands(sb.id)[-1]
    assert row["truncated"] and row["output_bytes"] == 3 << 20  # the profile's cap
    assert len(row["output"]) <= sb.profile.recording.max_output_bytes + 200
