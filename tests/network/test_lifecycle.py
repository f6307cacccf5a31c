"""Setup fails closed, teardown and crash cleanup leave nothing behind."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import network
from sandbox.errors import DependencyMissing, SetupError
from sandbox.events import ListEmit
from sandbox.jail.profile import NetworkSection
from sandbox.network import netns, nft

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SECTION = NetworkSection(mode="allowlist", allow=["good.test:443"], upstream_dns="198.51.100.53")


def host_state() -> str:
    out = []
    for argv in (["ip", "netns", "list"], ["ip", "-o", "link"], ["nft", "list", "tables"]):
        out.append(subprocess.run(argv, capture_output=True, text=True, timeout=10,
                                  check=False).stdout)
    return "\n".join(out)


def assert_gone(resources: dict[str, str]) -> None:
    state = host_state()
    for key in ("netns", "host_if", "table"):
        assert resources[key] not in state, f"{resources[key]} left behind"
    assert not (netns.ETC_NETNS / resources["netns"]).exists()
    assert not [x for x in network.leftovers() if resources["key"] in x]


def test_setup_and_teardown_leave_nothing() -> None:
    """Everything setup makes is named after the session and gone after teardown."""
    emit = ListEmit()
    t0 = time.monotonic()
    h = network.setup("t" + secrets.token_hex(4), SECTION, emit)
    setup_s = time.monotonic() - t0
    res = dict(h.resources)
    try:
        state = host_state()
        assert res["netns"] in state and res["host_if"] in state and res["table"] in state
        assert (netns.ETC_NETNS / res["netns"] / "resolv.conf").read_text().count(h.host_ip) == 1
        shown = subprocess.run(["ip", "netns", "exec", h.netns, "cat", "/etc/resolv.conf"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
        assert f"nameserver {h.host_ip}" in shown
        assert json.loads(json.dumps(res)) == res
        assert len(res["host_if"]) <= 15
    finally:
        t0 = time.monotonic()
        h.teardown()
        teardown_s = time.monotonic() - t0
    h.teardown()  # idempotent
    assert_gone(res)
    assert [e for e in emit.of_kind("net.dropped")], "final counters are recorded"
    print(f"setup {setup_s * 1000:.0f} ms, teardown {teardown_s * 1000:.0f} ms")


def test_crashed_owner_is_cleaned_from_the_record() -> None:
    """SIGKILL the owner mid-session: leftovers() finds it, cleanup(resources) removes all."""
    sid = "t" + secrets.token_hex(4)
    code = (
        "import json, os, signal, sys\n"
        "from sandbox import network\n"
        "from sandbox.events import ListEmit\n"
        "from sandbox.jail.profile import NetworkSection\n"
        "s = NetworkSection(mode='allowlist', allow=['good.test:443'], upstream_dns='198.51.100.53')\n"
        f"h = network.setup({sid!r}, s, ListEmit())\n"
        "print(json.dumps(h.resources), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=30, check=False)
    assert r.returncode == -9, r.stderr
    res = json.loads(r.stdout)
    try:
        found = network.leftovers()
        key = res["key"]
        assert {f"netns:sbx-{key}", f"link:sbx{key}h", f"nft:sbx_{key}"} <= set(found)
    finally:
        network.cleanup(res)
    assert_gone(res)
    network.cleanup(res)  # idempotent
    network.cleanup(network.resources_for(sid))  # names alone are enough


def test_failure_midway_removes_what_was_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """nftables refusing the ruleset: SetupError, and no netns/veth/table remains."""
    sid = "t" + secrets.token_hex(4)

    def refuse(text: str) -> None:
        raise SetupError("nftables rejected the session ruleset: test")

    monkeypatch.setattr(nft, "apply", refuse)
    with pytest.raises(SetupError, match="nftables"):
        network.setup(sid, SECTION, ListEmit())
    assert_gone(network.resources_for(sid))


def test_bad_profile_entry_fails_before_anything_is_made() -> None:
    sid = "t" + secrets.token_hex(4)
    bad = NetworkSection(mode="allowlist", allow=["pypi.org"], upstream_dns="198.51.100.53")
    with pytest.raises(SetupError, match=r"needs a port"):
        network.setup(sid, bad, ListEmit())
    assert_gone(network.resources_for(sid))


def test_not_root_points_to_none_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    with pytest.raises(SetupError, match='mode = "none"'):
        network.setup("tnotroot", SECTION, ListEmit())


def test_missing_nft_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A system PATH with `ip` but no `nft` (helpers are looked up only there)."""
    from sandbox.jail import launch

    (tmp_path / "ip").symlink_to(launch.tool("ip"))
    monkeypatch.setattr(launch, "TRUSTED_PATH", str(tmp_path))
    launch.tool.cache_clear()
    try:
        with pytest.raises(DependencyMissing, match="apt-get install nftables"):
            network.setup("tnonft", SECTION, ListEmit())
    finally:
        launch.tool.cache_clear()


def test_session_key_fits_interface_names() -> None:
    assert netns.session_key("ABC-def_0123456789") == "abcdef0123"
    ns_name, link = netns.names(netns.session_key("ffffffffffffffff"))
    assert len(link) <= 15 and ns_name.startswith("sbx-")
    with pytest.raises(SetupError):
        netns.session_key("---")
