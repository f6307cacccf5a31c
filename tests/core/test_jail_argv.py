"""The firejail command line is a pure function of the profile: tested as lists."""

from __future__ import annotations

from pathlib import Path

from sandbox import load_profile
from sandbox.jail.firejail import (
    Agent,
    JailSpec,
    build_argv,
    build_env,
    firejail_flags,
    parse_version,
)

SPEC = JailSpec(session_id="abc123", workdir=Path("/srv/ws"), state_dir=Path("/var/lib/sandbox"),
                host_home=Path("/home/alice"))


def test_default_flags() -> None:
    flags = firejail_flags(load_profile("default"), SPEC)
    for f in ("--net=none", "--caps.drop=all", "--seccomp", "--nonewprivs", "--private-tmp",
              "--private-dev", "--read-only=/", "--read-write=/srv/ws", "--ignore=sbx-abc123",
              "--deterministic-shutdown", "--noprofile", "--no3d", "--restrict-namespaces",
              "--rlimit-nproc=512", "--rlimit-nofile=1024",
              f"--rlimit-fsize={4096 * 1024 * 1024}"):
        assert f in flags, f
    hidden = [f.split("=", 1)[1] for f in flags if f.startswith("--blacklist=")]
    for secret in (".ssh", ".aws", ".config/gcloud", ".kube", ".docker", ".netrc", ".gnupg"):
        assert f"/home/alice/{secret}" in hidden
    assert "/var/lib/sandbox" in hidden


def test_strict_adds_address_space_limit() -> None:
    flags = firejail_flags(load_profile("strict"), SPEC)
    assert f"--rlimit-as={4096 * 1024 * 1024}" in flags and "--rlimit-nproc=128" in flags


def test_root_supervisor_runs_no_helper_before_firejail() -> None:
    """H1: no `ip netns exec` / `setpriv` found through a PATH: the netns and the drop
    happen in the forked child (launch.Launch); firejail is an absolute path."""
    spec = JailSpec(session_id="x", workdir=Path("/srv/ws"), state_dir=Path("/s"),
                    host_home=Path("/root"), agent=Agent(1001, 1001, "a"), netns="sbx-x")
    argv = build_argv(load_profile("pypi"), spec, ["bash"])
    assert argv[0].startswith("/") and argv[0].endswith("/firejail")
    assert "setpriv" not in argv and "ip" not in argv
    assert argv[-2:] == ["--", "bash"]
    assert not any(a.startswith("--net") for a in argv)  # allowlist inherits the netns


def test_workspace_under_tmp_is_whitelisted_not_hidden() -> None:
    spec = JailSpec(session_id="x", workdir=Path("/tmp/ws"), state_dir=Path("/s"),
                    host_home=Path("/root"))
    flags = firejail_flags(load_profile("default"), spec)
    assert "--whitelist=/tmp/ws" in flags and "--private-tmp" not in flags


def test_workspace_is_never_blacklisted() -> None:
    spec = JailSpec(session_id="x", workdir=Path("/home/alice/.ssh/proj"), state_dir=Path("/s"),
                    host_home=Path("/home/alice"))
    flags = firejail_flags(load_profile("default"), spec)
    assert "--blacklist=/home/alice/.ssh" not in flags


def test_env_is_an_allowlist() -> None:
    env = build_env(load_profile("default"), SPEC,
                    {"AWS_SECRET_ACCESS_KEY": "s", "TERM": "xterm", "GITHUB_TOKEN": "t"})
    assert "AWS_SECRET_ACCESS_KEY" not in env and "GITHUB_TOKEN" not in env
    assert env["TERM"] == "xterm" and env["HOME"] == "/srv/ws"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_firejail_version_parsing() -> None:
    assert parse_version("firejail version 0.9.72\n\nCompile time support:") == (0, 9, 72)
    assert parse_version("garbage") == ()
