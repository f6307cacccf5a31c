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
