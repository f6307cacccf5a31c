"""What the jail hides and forbids: network, host secrets, host env, writes, root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import Sandbox
from tests.helpers import make_workspace


def test_no_network_but_loopback(sb: Sandbox) -> None:
    """In `none` mode a connect to a TEST-NET address fails; loopback inside works."""
    r = sb.run(
        "python3 -c \"import socket; s=socket.socket(); s.settimeout(2); "
        "s.connect(('203.0.113.9', 80))\"", timeout=20)
    assert r.exit_code != 0
    assert "Network is unreachable" in r.output or "timed out" in r.output
    r = sb.run(
        "python3 -c \"import socket,threading; srv=socket.socket(); srv.bind(('127.0.0.1', 0)); "
        "srv.listen(); port=srv.getsockname()[1]; "
        "threading.Thread(target=lambda: srv.accept()[0].sendall(b'pong'), daemon=True).start(); "
        "c=socket.create_connection(('127.0.0.1', port), timeout=5); print(c.recv(4).decode())\"",
        timeout=20)
    assert r.output.strip() == "pong", r.output
    assert sb.run("ls /sys/class/net").output.split() == ["lo"]


def test_host_secrets_and_env_do_not_leak(test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake secret in HOME is unreadable inside; AWS_SECRET_ACCESS_KEY is absent inside."""
    home = test_dir / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".aws").mkdir()
    (home / ".ssh" / "id_rsa").write_text("FAKE-PRIVATE-KEY\n")
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key=FAKE\n")
    (home / "notes.txt").write_text("visible\n")
    for p in [home, *home.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # readable by anyone: only the jail hides it
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-value")
    monkeypatch.setenv("GITHUB_TOKEN", "host-token")
    ws = make_workspace(test_dir / "ws2")
    with Sandbox(workdir=ws) as box:
        assert box.run(f"cat {home}/notes.txt").output == "visible\n"  # the test can fail
        for secret in (".ssh/id_rsa", ".aws/credentials"):
            r = box.run(f"cat {home}/{secret}")
            assert r.exit_code != 0 and "FAKE" not in r.output, secret
        env = box.run("env").output
        assert "host-secret-value" not in env and "host-token" not in env
        assert "AWS_SECRET_ACCESS_KEY" not in env


def test_writes_only_in_workspace(sb: Sandbox, workspace: Path, test_dir: Path) -> None:
    """Writes inside the workspace land on the host; writes elsewhere fail."""
    assert sb.run("echo data > inside.txt").exit_code == 0
    assert (workspace / "inside.txt").read_text() == "data\n"
    outside = test_dir / "outside.txt"
    for target in (str(outside), "/etc/sandbox-test", "/usr/local/bin/evil", "/opt/x"):
        r = sb.run(f"echo x > {target}")
        assert r.exit_code != 0, target
    assert not outside.exists()
    # /tmp and /var/tmp are private tmpfs: writable, but nothing reaches the host.
    name = f"sbx-probe-{sb.id}"
    assert sb.run(f"echo x > /tmp/{name} && echo x > /var/tmp/{name}").exit_code == 0
    assert not Path(f"/tmp/{name}").exists() and not Path(f"/var/tmp/{name}").exists()


def test_agent_is_not_root(sb: Sandbox) -> None:
    """Under a root supervisor the agent's uid is not 0 and /etc/shadow is unreadable."""
    assert os.geteuid() == 0
    assert sb.run("id -u").output.strip() != "0"
    r = sb.run("cat /etc/shadow")
    assert r.exit_code != 0 and "root:" not in r.output


def test_store_is_not_visible_inside(sb: Sandbox, state_dir: Path) -> None:
    """The state dir and the SQLite files cannot be read from inside."""
    db = state_dir / "sandbox.db"
    assert db.exists()
    for cmd in (f"ls {state_dir}", f"cat {db}", f"head -c 16 {db}-wal", "ls /var/lib/sandbox"):
        r = sb.run(cmd)
        assert r.exit_code != 0, cmd
        assert "SQLite" not in r.output


def test_agent_can_run_what_it_builds(sb: Sandbox) -> None:
    """The workspace is writable and executable: build-and-run works (firejail mounts /var
    noexec, so workspaces never live there)."""
    r = sb.run("cp /bin/echo ./built && ./built made-here")
    assert r.output == "made-here\n", r.output
