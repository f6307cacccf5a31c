"""LangChain Deep Agents adapter: `RingfenceSandbox` and `SandboxProvider` on real sandboxes.

The file tools (ls, read, write, edit, grep, glob, delete) are deepagents' own
`BaseSandbox` implementations, built on our `execute` and `upload_files`: they run
deepagents' python3 helper scripts inside the jail. Then the protocol's error codes,
`execute` (merged output, exit codes, truncation, timeouts, long commands), confinement,
the record, the provider's lifecycle, and `create_deep_agent` end to end with a scripted
chat model.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from deepagents import create_deep_agent
from deepagents.backends import CompositeBackend
from deepagents.backends.protocol import SandboxBackendProtocol
from deepagents.backends.sandbox import BaseSandbox
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage

from sandbox import NotFound, Sandbox, Store
from sandbox.adapters.deepagents import DEFAULT_MAX_DOWNLOAD, RingfenceSandbox, SandboxProvider
from sandbox.adapters.deepagents_backend import MAX_COMMAND_BYTES, command_argv
from tests.images.conftest import Images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def provider(workspace: Path) -> Iterator[SandboxProvider]:
    """Sandboxes on the test's own workspace (a fresh one per sandbox is the provider's
    default, tested below with the lifecycle)."""
    with SandboxProvider(network="none", workdir=workspace) as prov:
        yield prov


@pytest.fixture
def backend(provider: SandboxProvider) -> RingfenceSandbox:
    return provider.get_or_create()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the shape ----------------------------------------------------------------------------


def test_backend_is_a_base_sandbox_with_the_protocols_id(backend: RingfenceSandbox) -> None:
    assert isinstance(backend, BaseSandbox)
    assert isinstance(backend, SandboxBackendProtocol)
    assert backend.id == backend.sandbox.id
    assert backend.workdir == backend.sandbox.workdir
    assert Path(backend.workdir).is_dir()


def test_async_variants_are_native_not_the_thread_defaults() -> None:
    """BaseSandbox's defaults for these run the sync method in a thread; ours drive the
    session from the caller's loop."""
    from deepagents.backends.protocol import BackendProtocol

    assert RingfenceSandbox.aexecute is not SandboxBackendProtocol.aexecute
    assert RingfenceSandbox.aupload_files is not BackendProtocol.aupload_files
    assert RingfenceSandbox.adownload_files is not BackendProtocol.adownload_files


# -- deepagents' own file tools, through execute/upload --------------------------------


def test_file_tools_through_base_sandbox(backend: RingfenceSandbox) -> None:
    w = backend.workdir
    path = f"{w}/pkg/notes.txt"

    assert backend.write(path, "alpha\nbeta\ngamma\n").error is None
    host = Path(path)
    assert host.read_text() == "alpha\nbeta\ngamma\n"
    assert host.stat().st_uid != 0  # written by the agent user, not root

    r = backend.read(path)
    assert r.error is None and r.file_data is not None
    assert r.file_data["content"] == "alpha\nbeta\ngamma"
    assert (r.start_line, r.end_line, r.total_lines) == (1, 3, 3)
    page = backend.read(path, offset=1, limit=1)
    assert page.file_data is not None and page.file_data["content"] == "beta"
    assert page.next_offset == 2

    ls = backend.ls(w)
    assert ls.error is None and ls.entries == [{"path": f"{w}/pkg", "is_dir": True}]
    assert backend.ls(f"{w}/nope").error is not None

    e = backend.edit(path, "beta", "BETA")
    assert e.error is None and e.occurrences == 1
    assert host.read_text() == "alpha\nBETA\ngamma\n"
    assert backend.edit(path, "missing", "x").error is not None

    g = backend.grep("BETA", w)
    assert g.error is None and g.matches == [{"path": path, "line": 2, "text": "BETA"}]

    gl = backend.glob("**/*.txt", w)
    assert gl.error is None and gl.matches is not None
    assert [m["path"] for m in gl.matches] == [path]

    missing = backend.read(f"{w}/missing.txt")
    assert missing.error is not None and missing.file_data is None

    assert backend.delete(path).error is None
    assert not host.exists()
    assert backend.delete(path).error is not None  # not found now


def test_large_edit_goes_through_upload_to_the_jails_tmp(backend: RingfenceSandbox) -> None:
    """Past 50 kB deepagents uploads old/new to /tmp (the jail's private one) and
    replaces there: upload_files and execute must see the same /tmp."""
    path = f"{backend.workdir}/big.txt"
    old = "x" * 30_000
    new = "y" * 30_000
    assert backend.write(path, f"head\n{old}\ntail\n").error is None
    e = backend.edit(path, old, new)
    assert e.error is None, e.error
    assert Path(path).read_text() == f"head\n{new}\ntail\n"
    leftovers = backend.execute("ls -a /tmp | grep deepagents_edit || true")
    assert leftovers.output == ""


def test_async_file_tools(backend: RingfenceSandbox) -> None:
    w = backend.workdir
    path = f"{w}/a/b.py"

    async def go() -> None:
        assert (await backend.awrite(path, "print('hi')\n")).error is None
        r = await backend.aread(path)
        assert r.file_data is not None and r.file_data["content"] == "print('hi')"
        assert (await backend.aedit(path, "hi", "ho")).occurrences == 1
        g = await backend.agrep("ho", w)
        assert g.matches == [{"path": path, "line": 1, "text": "print('ho')"}]
        gl = await backend.aglob("*.py", w)
        assert gl.matches is not None and [m["path"] for m in gl.matches] == [path]
        ls = await backend.als(f"{w}/a")
        assert ls.entries == [{"path": path, "is_dir": False}]
        ex = await backend.aexecute(f"python3 {path}")
        assert (ex.output, ex.exit_code) == ("ho\n", 0)

    _run(go())


def test_keeps_deepagents_own_glob_and_write_contract(backend: RingfenceSandbox) -> None:
    """Deep Agents 0.7's protocol, where the standard suite (langchain-tests) still
    expects the older one: glob answers absolute paths of regular files only (its
    permission rules match absolute paths), write overwrites. A deepagents release that
    changed its protocol's words trips the first asserts; then revisit the xfails in
    test_deepagents_standard.py."""
    from deepagents.backends.protocol import BackendProtocol

    assert "always absolute" in (BackendProtocol.glob.__doc__ or "")
    assert "directories are never matched" in (BackendProtocol.glob.__doc__ or "")
    assert "overwriting it if it already exists" in (BackendProtocol.write.__doc__ or "")

    w = backend.workdir
    backend.execute(f"mkdir -p {w}/g/sub.d {w}/g/.hid")
    for name in ("x.py", "sub.d/y.py", ".hid/z.py", ".dot.py"):
        assert backend.write(f"{w}/g/{name}", "pass\n").error is None
    gl = backend.glob("*", f"{w}/g")
    assert gl.error is None and gl.matches is not None
    # a bare pattern matches basenames at any depth, into dot-directories too
    assert sorted(m["path"] for m in gl.matches) == [
        f"{w}/g/.hid/z.py", f"{w}/g/sub.d/y.py", f"{w}/g/x.py"]
    assert not any(m["is_dir"] for m in gl.matches)
    gl = backend.glob(".*", f"{w}/g")
    assert gl.matches is not None
    assert sorted(m["path"] for m in gl.matches) == [f"{w}/g/.dot.py"]

    path = f"{w}/g/x.py"
    assert backend.write(path, "second\n").error is None
    assert Path(path).read_text() == "second\n"


# -- upload / download and their error codes -------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_upload_download_roundtrip_and_error_codes(backend: RingfenceSandbox, mode: str
                                                   ) -> None:
    w = backend.workdir
    blob = bytes(range(256)) * 3
    Path(w, "afile").write_text("x")  # a file where a parent directory should be
    uploads = [
        (f"{w}/deep/er/blob.bin", blob),
        ("relative.txt", b"x"),
        ("/etc/ringfence-test", b"x"),
        (w, b"x"),
        (f"{w}/afile/child", b"x"),
        (f"{w}/nul\0name", b"x"),
    ]
    downloads = [f"{w}/deep/er/blob.bin", f"{w}/nope.txt", "/etc/shadow", w,
                 "relative.txt", f"{w}/afile/child"]
    if mode == "sync":
        up = backend.upload_files(uploads)
        down = backend.download_files(downloads)
    else:
        up = _run(backend.aupload_files(uploads))
        down = _run(backend.adownload_files(downloads))

    assert [u.path for u in up] == [p for p, _ in uploads]
    assert [u.error for u in up] == [None, "invalid_path", "permission_denied",
                                     "is_directory", "invalid_path", "invalid_path"]
    assert Path(w, "deep/er/blob.bin").read_bytes() == blob
    assert not Path("/etc/ringfence-test").exists()

    assert [d.path for d in down] == downloads
    assert [d.error for d in down] == [None, "file_not_found", "permission_denied",
                                       "is_directory", "invalid_path", "file_not_found"]
    assert down[0].content == blob
    assert all(d.content is None for d in down[1:])


def test_download_larger_than_its_limit_is_an_error_not_a_cut(provider: SandboxProvider
                                                               ) -> None:
    backend = provider.get_or_create()
    small = RingfenceSandbox(backend.sandbox, max_download=1000)
    Path(backend.workdir, "big").write_bytes(b"z" * 5000)
    (r,) = small.download_files([f"{backend.workdir}/big"])
    assert r.content is None and r.error is not None
    assert "max_download (1000 bytes)" in r.error
    with SandboxProvider(network="none", max_download=1000) as prov:
        (r,) = prov.get_or_create().download_files([f"{backend.workdir}/big"])
        assert r.error is not None and "1000" in r.error  # the provider passes it on


def test_downloads_past_the_cores_exec_cap_come_whole(backend: RingfenceSandbox) -> None:
    """The standard suite round-trips 10.5 MB of text: more than the core's 10 MiB per
    exec stream, well under the backend's own `DEFAULT_MAX_DOWNLOAD`."""
    data = ("0123456789abcdef" * 256 + "\n").encode() * 2600
    assert 10 << 20 < len(data) < DEFAULT_MAX_DOWNLOAD
    path = f"{backend.workdir}/large.txt"
    assert backend.upload_files([(path, data)])[0].error is None
    (r,) = backend.download_files([path])
    assert r.error is None and r.content == data
    (r,) = _run(backend.adownload_files([path]))
    assert r.error is None and r.content == data


def test_hidden_host_paths_stay_hidden(backend: RingfenceSandbox) -> None:
    (r,) = backend.download_files(["/root/.bash_history"])
    assert r.content is None and r.error in ("file_not_found", "permission_denied")


# -- execute ------------------------------------------------------------------------------


def test_execute_merges_stderr_in_order_and_keeps_the_exit_code(backend: RingfenceSandbox
                                                                ) -> None:
    r = backend.execute("echo one; echo two >&2; echo three; exit 3")
    assert (r.output, r.exit_code, r.truncated) == ("one\ntwo\nthree\n", 3, False)
    assert backend.execute("no-such-program-xyz").exit_code == 127
    assert "no-such-program-xyz" in backend.execute("no-such-program-xyz").output
    assert backend.execute("kill -9 $$").exit_code == 137
    # bash, in the workspace, bash's own line numbers
    r = backend.execute("echo ${BASH_VERSION:+bash} $PWD\n[[ 1 == 1 ]] && echo ok\nbogus-cmd")
    assert r.output.splitlines()[:2] == [f"bash {backend.workdir}", "ok"]
    assert "line 3: bogus-cmd" in r.output
    # a syntax error on the first line is reported (bash says it before running anything)
    r = backend.execute("if then fi")
    assert r.exit_code == 2 and "syntax error" in r.output


def test_execute_output_is_truncated_past_max_output(provider: SandboxProvider) -> None:
    sb = provider.get_or_create().sandbox
    small = RingfenceSandbox(sb, max_output=2000)
    r = small.execute("echo START; head -c 200000 /dev/zero | tr '\\0' a; echo; echo END")
    assert r.exit_code == 0 and r.truncated
    assert len(r.output) < 10_000
    assert r.output.startswith("START") and r.output.rstrip().endswith("END")
    full = RingfenceSandbox(sb).execute("head -c 200000 /dev/zero | tr '\\0' a")
    assert not full.truncated and len(full.output) == 200_000


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_execute_timeout_kills_and_answers_124_with_partial_output(
        backend: RingfenceSandbox, mode: str) -> None:
    cmd = "echo before; sleep 30 & wait; echo finished"
    t0 = time.monotonic()
    r = backend.execute(cmd, timeout=1) if mode == "sync" else _run(
        backend.aexecute(cmd, timeout=1))
    assert time.monotonic() - t0 < 15
    assert r.exit_code == 124
    assert r.output.startswith("before\n") and "finished" not in r.output
    assert "timed out after 1 seconds" in r.output
    # the whole tree died: no sleep left in the jail
    assert "sleep 30" not in backend.execute("ps -eo args").output


def test_execute_default_timeout_and_zero_means_none(provider: SandboxProvider) -> None:
    sb = provider.get_or_create().sandbox
    quick = RingfenceSandbox(sb, timeout=1)
    assert quick.execute("sleep 3").exit_code == 124  # the backend's default applies
    assert quick.execute("sleep 2; echo done", timeout=0).output == "done\n"
    assert quick.execute("sleep 2; echo done", timeout=5).exit_code == 0
    with pytest.raises(ValueError):
        quick.execute("true", timeout=-1)


def test_large_stdout_whole_and_in_parallel(backend: RingfenceSandbox) -> None:
    """The standard suite's large-stdout checks with `python3` (the host has no
    `python`): 500 KiB in one execute, and five at once from one event loop."""
    command = "python3 -c \"import sys; sys.stdout.write('x' * (500 * 1024))\""
    r = backend.execute(command)
    assert (r.exit_code, r.truncated, r.output) == (0, False, "x" * (500 * 1024))

    async def five() -> list[Any]:
        return list(await asyncio.gather(*(backend.aexecute(command) for _ in range(5))))

    for r in _run(five()):
        assert (r.exit_code, r.truncated, r.output) == (0, False, "x" * (500 * 1024))


def test_long_commands_run_whole_and_are_recorded_whole(backend: RingfenceSandbox) -> None:
    """firejail refuses one argument of 4128 bytes or more; deepagents' read and glob
    scripts are longer, and so may be a model's heredoc (core `exec` carries them)."""
    lines = [f"echo line-{i}-{'x' * 60}" for i in range(400)]  # ~28 kB, many lines
    script = "\n".join(lines)
    r = backend.execute(script)
    assert r.exit_code == 0
    assert r.output.splitlines() == [f"line-{i}-{'x' * 60}" for i in range(400)]
    one_line = "echo " + "é" * 6000  # one long line, multi-byte characters
    assert backend.execute(one_line).output == "é" * 6000 + "\n"
    big = "echo ok # " + "p" * 120_000  # near the kernel's 128 KiB for one argument
    r = backend.execute(big)
    assert (r.output, r.exit_code) == ("ok\n", 0)
    # as under bash -c: no positional parameters, stdin at EOF, stderr merged
    r = backend.execute("echo \"[$#]\"; cat; echo err >&2 # " + "p" * 5000)
    assert r.output == "[0]\nerr\n"
    texts = [row["text"] for row in Store().commands(backend.id)]
    assert any(script in t for t in texts)  # the guard and the record see it whole
    assert command_argv(script) == ["/bin/bash", "-c", "exec 2>&1; " + script]


def test_too_long_or_nul_commands_are_refused(backend: RingfenceSandbox) -> None:
    """ValueError: deepagents' execute tool answers the model 'Invalid parameter'."""
    with pytest.raises(ValueError, match="write a script"):
        backend.execute("true # " + "x" * MAX_COMMAND_BYTES)
    with pytest.raises(ValueError, match="NUL"):
        backend.execute("echo a\0b")


# -- confinement -------------------------------------------------------------------------


def test_runs_as_the_agent_user_confined_to_the_workspace(backend: RingfenceSandbox) -> None:
    r = backend.execute("id -u; id -un")
    uid, name = r.output.split()
    assert int(uid) != 0 and name.startswith("sandbox-agent")
    r = backend.execute("touch /etc/ringfence-x /usr/ringfence-x /srv/ringfence-x")
    assert r.exit_code != 0 and "Read-only file system" in r.output
    for p in ("/etc/ringfence-x", "/usr/ringfence-x", "/srv/ringfence-x"):
        assert not os.path.exists(p)
    assert backend.write("/opt/ringfence-x", "x").error is not None
    assert not os.path.exists("/opt/ringfence-x")
    assert backend.execute("cat /etc/shadow").exit_code != 0
    assert backend.execute(f"touch {backend.workdir}/ok && echo yes").output == "yes\n"


def test_network_none_reaches_not_even_the_hosts_loopback(backend: RingfenceSandbox) -> None:
    server = socket.socket()
    try:
        server.bind(("127.0.0.1", 0))
        server.listen()  # the kernel completes handshakes into the backlog by itself
        port = server.getsockname()[1]
        probe = ("python3 -c \"import socket; s=socket.socket(); s.settimeout(3); "
                 f"s.connect(('127.0.0.1', {port})); print('connected')\"")
        r = backend.execute(probe)
        assert r.exit_code != 0 and "connected" not in r.output
        assert "Connection refused" in r.output or "timed out" in r.output
        assert backend.execute("ls /sys/class/net").output.split() == ["lo"]
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the host's listener
        # the same probe from the host does connect: the test can tell
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            conn, _ = server.accept()
            conn.close()
    finally:
        server.close()


# -- the record -------------------------------------------------------------------------


def test_commands_and_transfers_are_in_the_store(backend: RingfenceSandbox) -> None:
    backend.execute("echo recorded-marker-1")
    _run(backend.aexecute("echo recorded-marker-2"))
    backend.upload_files([(f"{backend.workdir}/up.txt", b"payload")])
    backend.download_files([f"{backend.workdir}/up.txt"])
    backend.execute("sleep 5", timeout=1)

    store = Store()
    rows = store.commands(backend.id)
    texts = [row["text"] for row in rows]
    for marker in ("echo recorded-marker-1", "echo recorded-marker-2"):
        (row,) = [r for r in rows if marker in r["text"]]
        assert row["exit_code"] == 0 and row["output"] == marker.removeprefix("echo ") + "\n"
        assert row["source"] == "exec"
    (slow,) = [r for r in rows if "sleep 5" in r["text"]]
    assert slow["exit_code"] is None  # did not finish (the `timed_out` column: core's)
    assert any("/bin/bash" in t for t in texts)
    events = store.events(backend.id)
    kinds = [e["kind"] for e in events]
    assert "file.write" in kinds and "file.read" in kinds
    results = [e["detail"] for e in events if e["kind"] == "exec.result"]
    assert any(d["timed_out"] and "sleep 5" in d["argv"][-1] for d in results)


# -- the provider -----------------------------------------------------------------------


def test_provider_get_or_create_lookup_list_delete(test_dir: Path) -> None:
    with SandboxProvider(network="none") as provider:
        _lifecycle(provider)


def _lifecycle(provider: SandboxProvider) -> None:
    a = provider.get_or_create()
    b = provider.get_or_create(network="none", env={"FOO": "bar"})
    assert a.id != b.id
    assert b.execute("echo $FOO").output == "bar\n"

    again = provider.get_or_create(sandbox_id=a.id)
    assert again.id == a.id and again.sandbox is a.sandbox
    a.execute(f"echo shared > {a.workdir}/f")
    assert again.execute(f"cat {a.workdir}/f").output == "shared\n"

    listed = provider.list()
    assert listed["cursor"] is None
    ids = {i["sandbox_id"] for i in listed["items"]}
    assert ids == {a.id, b.id}
    meta = next(i for i in listed["items"] if i["sandbox_id"] == a.id)["metadata"]
    assert meta["workdir"] == a.workdir and meta["state"] == "running"

    workdir = Path(a.workdir)
    provider.delete(sandbox_id=a.id)
    assert not a.sandbox.is_alive()
    assert not workdir.exists()  # a fresh workspace goes with its sandbox
    provider.delete(sandbox_id=a.id)  # idempotent
    provider.delete(sandbox_id="no-such-sandbox")
    assert {i["sandbox_id"] for i in provider.list()["items"]} == {b.id}
    with pytest.raises(NotFound):
        provider.get_or_create(sandbox_id=a.id)
    with pytest.raises(NotFound):
        provider.get_or_create(sandbox_id="no-such-sandbox")
    with pytest.raises(ValueError, match="template"):
        provider.get_or_create(template="python")
    provider.get_or_create(sandbox_id=b.id, template=None)  # None-valued extras are fine


def test_provider_finds_a_sandbox_it_did_not_create(test_dir: Path) -> None:
    with Sandbox(network="none") as sb, SandboxProvider() as prov:
        backend = prov.get_or_create(sandbox_id=sb.id)
        assert backend.execute("echo hi").output == "hi\n"
        prov.delete(sandbox_id=sb.id)
        assert not sb.is_alive()


def test_provider_async_and_close(test_dir: Path) -> None:
    prov = SandboxProvider(network="none")
    try:
        async def go() -> tuple[RingfenceSandbox, RingfenceSandbox]:
            x = await prov.aget_or_create()
            y = await prov.aget_or_create()
            assert (await x.aexecute("echo x")).output == "x\n"
            await prov.adelete(sandbox_id=x.id)
            assert [i["sandbox_id"] for i in (await prov.alist())["items"]] == [y.id]
            return x, y

        x, y = _run(go())
        assert not x.sandbox.is_alive() and y.sandbox.is_alive()
    finally:
        prov.close()
    assert not y.sandbox.is_alive()
    assert prov.list()["items"] == []


# -- create_deep_agent end to end ----------------------------------------------------------


class ScriptedChatModel(GenericFakeChatModel):
    """GenericFakeChatModel answers from a script; deepagents binds tools to its model,
    which the fake does not implement, so binding returns the model unchanged."""

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> ScriptedChatModel:
        return self


def _script(workdir: str) -> ScriptedChatModel:
    return ScriptedChatModel(messages=iter([
        AIMessage(content="", tool_calls=[{
            "name": "execute", "id": "call-exec",
            "args": {"command": "echo agent-was-here; id -un; touch /etc/agent-x"}}]),
        AIMessage(content="", tool_calls=[{
            "name": "write_file", "id": "call-write",
            "args": {"file_path": f"{workdir}/report.md", "content": "# Report\nall good\n"}}]),
        AIMessage(content="Done: report written."),
    ]))


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_create_deep_agent_end_to_end(backend: RingfenceSandbox, mode: str) -> None:
    agent = create_deep_agent(model=_script(backend.workdir), backend=backend,
                              system_prompt=f"Work in {backend.workdir}.")
    request = {"messages": [{"role": "user", "content": "check the sandbox, write a report"}]}
    result = agent.invoke(request) if mode == "invoke" else _run(agent.ainvoke(request))

    messages = result["messages"]
    assert messages[-1].content == "Done: report written."
    tools = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    ran = str(tools["call-exec"].content)
    assert "agent-was-here" in ran and "sandbox-agent" in ran
    assert "Read-only file system" in ran and "exit code 1" in ran
    assert tools["call-exec"].artifact == {"exit_code": 1, "truncated": False}
    assert tools["call-write"].status != "error", tools["call-write"].content
    assert Path(backend.workdir, "report.md").read_text() == "# Report\nall good\n"
    assert not os.path.exists("/etc/agent-x")

    texts = [row["text"] for row in Store().commands(backend.id)]
    assert any("echo agent-was-here; id -un; touch /etc/agent-x" in t for t in texts)
    # write_file is deepagents' preflight (an execute) plus our upload (a file event)
    writes = [e for e in Store().events(backend.id, kinds=("file.write",))]
    assert any(e["detail"] and "report.md" in str(e["detail"]) for e in writes)


def test_large_results_evict_into_the_workspace_with_a_composite_root(
        backend: RingfenceSandbox) -> None:
    """deepagents offloads a large tool result to /large_tool_results, which is
    read-only in the jail; with `artifacts_root` at the workspace it lands there."""
    model = ScriptedChatModel(messages=iter([
        AIMessage(content="", tool_calls=[{
            "name": "execute", "id": "big", "args": {"command": "seq 1 60000"}}]),
        AIMessage(content="ok"),
    ]))
    routed = CompositeBackend(default=backend, routes={}, artifacts_root=backend.workdir)
    result = create_deep_agent(model=model, backend=routed).invoke(
        {"messages": [{"role": "user", "content": "count"}]})
    (tool,) = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    saved = f"{backend.workdir}/large_tool_results/big"
    assert saved in str(tool.content) and len(str(tool.content)) < 5000
    assert Path(saved).read_text().splitlines()[:3] == ["1", "2", "3"]


def test_example_runs_offline() -> None:
    r = subprocess.run([sys.executable, str(REPO / "examples" / "deepagents_example.py")],
                       capture_output=True, text=True, timeout=180, check=False,
                       env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agent: The sandbox says: hello from" in r.stdout
    assert "recorded:" in r.stdout


# -- in an image (`image=`) ---------------------------------------------------------------


IN_IMAGE = ("grep ^VERSION_CODENAME= /etc/os-release; echo $IMAGE_VAR; pwd; "
            "test -e /usr/bin/firejail || echo no-firejail")


def test_deep_agent_runs_in_an_image(images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """`SandboxProvider(image="deb")`: the agent's execute and deepagents' own file tools
    run in the stored image (its Env, none of the host's programs); `backend.workdir` is
    the workspace inside it; the record is the store's like any session's."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    with SandboxProvider(network="none", image=images.deb) as provider:
        backend = provider.get_or_create()
        assert backend.workdir == "/workspace" != backend.sandbox.workdir
        assert provider.list()["items"][0]["metadata"]["workdir"] == "/workspace"
        model = ScriptedChatModel(messages=iter([
            AIMessage(content="", tool_calls=[{
                "name": "execute", "id": "call-exec", "args": {"command": IN_IMAGE}}]),
            AIMessage(content="", tool_calls=[{
                "name": "write_file", "id": "call-write",
                "args": {"file_path": "/workspace/report.md", "content": "in the image\n"}}]),
            AIMessage(content="done"),
        ]))
        result = create_deep_agent(model=model, backend=backend).invoke(
            {"messages": [{"role": "user", "content": "where are you?"}]})
        tools = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
        assert "VERSION_CODENAME=bookworm\nfrom-the-image\n/workspace\nno-firejail" \
            in str(tools["call-exec"].content)
        assert Path("/usr/bin/firejail").exists()  # the host has it; the image does not
        assert tools["call-write"].status != "error", tools["call-write"].content
        assert Path(backend.sandbox.workdir, "report.md").read_text() == "in the image\n"
        assert backend.read("/workspace/report.md").file_data["content"] \
            == "in the image"  # type: ignore[index]
        assert [e["path"] for e in backend.ls("/workspace").entries or []] \
            == ["/workspace/report.md"]
        sid = backend.id
        assert any(IN_IMAGE in row["text"] for row in Store().commands(sid))
        assert Store().get_session(sid)["resources"]["image_root"]["image"] == images.deb
    assert Store().get_session(sid)["state"] == "exited"


def test_get_or_create_takes_an_image_for_one_sandbox(
        images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    with SandboxProvider(network="none") as provider:
        on_host = provider.get_or_create()
        in_task = provider.get_or_create(image=images.layered)
        assert in_task.workdir == "/srv/task"  # the image's WorkingDir, seeded from it
        r = in_task.execute("pwd; cat README; python3 -c 'print(6 * 7)'")
        assert r.exit_code == 0 and r.output == "/srv/task\nthe task's repository\n42\n"
        assert on_host.execute("test -e /usr/bin/firejail && pwd").output \
            == on_host.workdir + "\n"
        assert "image_root" not in Store().get_session(on_host.id)["resources"]


def test_example_runs_in_an_image(images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's image variant: examples/deepagents_example.py --image NAME."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    r = subprocess.run([sys.executable, str(REPO / "examples" / "deepagents_example.py"),
                        "--image", images.py],
                       capture_output=True, text=True, timeout=180, check=False,
                       env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agent: The sandbox says: hello from sandbox-agent" in r.stdout
    assert " in /workspace" in r.stdout and "notes.md: b'# Notes" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("sandbox "))
    assert line.endswith(f" in image {images.py}")
    sid = line.split()[1]
    assert Store().get_session(sid)["resources"]["image_root"]["image"] == images.py
