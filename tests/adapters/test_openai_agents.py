"""The OpenAI Agents SDK backend: real jails, a scripted model, no network, no API key.

The PTY and lifecycle tests are ports of the SDK's own UnixLocal conformance tests
(tests/sandbox/test_unix_local.py in openai-agents-python) against our client; where
our semantics differ on purpose (a signal is exit 128+N, not -N) the test says so.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("agents")

from agents import RunConfig, Runner, function_tool, set_tracing_disabled
from agents.items import ToolCallOutputItem
from agents.run_state import RunState
from agents.sandbox import SandboxAgent, SandboxPathGrant, SandboxRunConfig
from agents.sandbox.errors import (
    ExecTimeoutError,
    InvalidManifestPathError,
    PtySessionNotFoundError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
)
from agents.sandbox.manifest import Manifest
from agents.sandbox.session.sandbox_client import BaseSandboxClientOptions
from agents.sandbox.session.sandbox_session import SandboxSession
from agents.sandbox.snapshot import LocalSnapshotSpec
from agents.sandbox.types import User
from agents.testing import ScriptedModel, assistant_message, function_call
from openai.types.responses import ResponseCustomToolCall

from sandbox import AsyncSandbox, NotFound, Store
from sandbox.adapters.openai_agents import (
    FirejailSandboxClient,
    FirejailSandboxClientOptions,
    FirejailSandboxSession,
    FirejailSandboxSessionState,
)
from tests.images.conftest import Images

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, no tracing export: nothing may reach out of this machine."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-not-used")
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    set_tracing_disabled(True)


@asynccontextmanager
async def session_of(client: FirejailSandboxClient, **kw: Any) -> AsyncIterator[SandboxSession]:
    s = await client.create(**kw)
    try:
        await s.start()
        yield s
    finally:
        try:
            await s.aclose()
        finally:
            await client.delete(s)


def inner(s: SandboxSession) -> FirejailSandboxSession:
    i = s._inner
    assert isinstance(i, FirejailSandboxSession)
    return i


def commands(sandbox_id: str) -> list[str]:
    return [c["text"] for c in Store().commands(sandbox_id)]


# -- end to end: a SandboxAgent run driven by a scripted model -----------------------------


PATCH = "*** Begin Patch\n*** Add File: notes/hello.txt\n+written through apply_patch\n*** End Patch\n"


def scripted_agent(first: str, last: str, answer: str) -> tuple[SandboxAgent, ScriptedModel]:
    """An agent whose scripted model runs `first` in the shell, adds notes/hello.txt with
    apply_patch (PATCH), runs `last`, then answers `answer`."""
    model = ScriptedModel([
        [function_call("exec_command", {"cmd": first}, call_id="c1")],
        [ResponseCustomToolCall(type="custom_tool_call", name="apply_patch", input=PATCH,
                                call_id="c2", id="c2")],
        [function_call("exec_command", {"cmd": last}, call_id="c3")],
        [assistant_message(answer)],
    ])
    return SandboxAgent(name="dev", instructions="Work in the sandbox.", model=model), model


def test_sandbox_agent_run_with_scripted_model(test_dir: Path) -> None:
    agent, model = scripted_agent("echo hello-from-jail; id -u; id -un",
                                  "cat notes/hello.txt; touch /usr/owned",
                                  "all done: notes/hello.txt written")
    client = FirejailSandboxClient()
    snapshots = test_dir / "snapshots"

    result = run(Runner.run(agent, "write a note", run_config=RunConfig(
        sandbox=SandboxRunConfig(client=client, snapshot=LocalSnapshotSpec(base_path=snapshots)),
        tracing_disabled=True)))

    assert result.final_output == "all done: notes/hello.txt written"
    model.assert_complete()
    outputs = [str(i.output) for i in result.new_items if isinstance(i, ToolCallOutputItem)]
    assert len(outputs) == 3
    first, patched, last = outputs
    assert "hello-from-jail" in first
    uid, name = first.split("hello-from-jail\n", 1)[1].splitlines()[:2]
    assert uid != "0" and name.startswith("sandbox-agent")  # the jail's agent user, not root
    assert "notes/hello.txt" in patched
    assert "written through apply_patch" in last
    assert "Read-only file system" in last or "Permission denied" in last  # / is read-only

    # One jail ran it all, and its record holds the model's commands.
    assert len(client.sandbox_ids) == 1
    recorded = "\n".join(commands(client.sandbox_ids[0]))
    assert "echo hello-from-jail; id -u; id -un" in recorded
    assert "cat notes/hello.txt; touch /usr/owned" in recorded
    events = [e["kind"] for e in Store().events(client.sandbox_ids[0])]
    assert "file.write" in events  # apply_patch wrote through the jail
    # The jail is gone after the run; stop() persisted the workspace first.
    with pytest.raises(NotFound):
        AsyncSandbox.lookup(client.sandbox_ids[0])
    archives = list(snapshots.glob("*.tar"))
    assert len(archives) == 1
    with tarfile.open(archives[0]) as tar:
        f = tar.extractfile("./notes/hello.txt")
        assert f is not None and f.read() == b"written through apply_patch"


def test_runner_pause_and_resume_across_jails(test_dir: Path) -> None:
    """A simplified port of the SDK's test_runner_preserves_unix_local_lifecycle_state_
    across_pause_and_resume: an approval interrupts the run, the jail is persisted and
    ended, the RunState goes through JSON, and the resumed run gets a fresh jail hydrated
    from the snapshot."""

    @function_tool(name_override="approval_tool", needs_approval=True)
    def approval_tool() -> str:
        return "approved"

    def agent_with(model: ScriptedModel) -> SandboxAgent[Any]:
        return SandboxAgent(name="sandbox", model=model, instructions="Use the sandbox.",
                            tools=[approval_tool])

    client = FirejailSandboxClient()
    config = RunConfig(sandbox=SandboxRunConfig(
        client=client, snapshot=LocalSnapshotSpec(base_path=test_dir / "snap")))
    first_model = ScriptedModel([
        [function_call("exec_command", {"cmd": "echo note v1 > runtime_note.txt"},
                       call_id="c1")],
        [function_call("approval_tool", {}, call_id="c2")],
    ])
    first = run(Runner.run(agent_with(first_model), "go", run_config=config))
    assert len(first.interruptions) == 1
    state = first.to_state()
    assert state._sandbox is not None and state._sandbox["backend_id"] == "firejail"
    session_state = state._sandbox["session_state"]
    assert isinstance(session_state, dict)
    assert session_state["snapshot"]["type"] == "local"  # type: ignore[index]
    first_root = session_state["manifest"]["root"]  # type: ignore[index]
    assert not Path(first_root).exists()  # the jail and its workspace are gone

    resumed_model = ScriptedModel([
        [function_call("exec_command", {"cmd": "cat runtime_note.txt; pwd"}, call_id="c3")],
        [assistant_message("done")],
    ])
    resumed_agent = agent_with(resumed_model)

    async def resume() -> Any:
        restored = await RunState.from_json(resumed_agent, state.to_json())
        restored.approve(restored.get_interruptions()[0])
        return await Runner.run(resumed_agent, restored, run_config=config)

    resumed = run(resume())
    assert resumed.final_output == "done"
    outputs = [str(i.output) for i in resumed.new_items if isinstance(i, ToolCallOutputItem)]
    assert "approved" in outputs
    assert "note v1" in outputs[-1]
    assert len(client.sandbox_ids) == 2  # a fresh jail, hydrated from the snapshot
    assert "cat runtime_note.txt; pwd" in "\n".join(commands(client.sandbox_ids[1]))
    assert not Path(first_root).exists()


# -- the session's methods -----------------------------------------------------------------


def test_exec_semantics() -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client) as s:
            root = s.state.manifest.root
            assert root.startswith("/srv/sandbox/work/")
            assert await s.running()
            r = await s.exec("echo out; echo err >&2; exit 3")
            assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3)
            r = await s.exec("pwd", shell=False)
            assert r.stdout.decode().strip() == root
            r = await s.exec("printf '%s' \"$HOME\"")
            assert r.stdout.decode() == root
            r = await s.exec("kill -TERM $$")
            assert r.exit_code == 128 + signal.SIGTERM  # UnixLocal would say -15
            r = await s.exec("no-such-program-xyz", shell=False)
            assert r.exit_code == 127
            with pytest.raises(ExecTimeoutError):
                await s.exec("sleep 30", timeout=0.5)
            r = await s.exec("touch /etc/owned")
            assert r.exit_code != 0
            with pytest.raises(PermissionError):
                await s.exec("id", user="root")
            me = (await s.exec("id -un")).stdout.decode().strip()
            assert (await s.exec("id -un", user=User(name=me))).stdout.decode().strip() == me
        assert not await s.running()
    run(go())


def test_manifest_environment_reaches_commands() -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client, manifest=Manifest(environment={"value": {"GREETING": "hi"}})) as s:
            r = await s.exec("printf '%s' \"$GREETING\"")
            assert r.stdout == b"hi"
    run(go())


def test_read_write_and_path_policy() -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client) as s:
            blob = bytes(range(256)) * 4
            await s.write(Path("deep/dir/blob.bin"), io.BytesIO(blob))
            assert (await s.read(Path("deep/dir/blob.bin"))).read() == blob
            abs_path = Path(s.state.manifest.root) / "deep/dir/blob.bin"
            assert (await s.read(abs_path)).read() == blob
            assert await s.read_bounded(Path("deep/dir/blob.bin"), max_bytes=10) == blob[:10]
            with pytest.raises(WorkspaceReadNotFoundError):
                await s.read(Path("missing.txt"))
            with pytest.raises(InvalidManifestPathError):
                await s.read(Path("../../etc/passwd"))
            with pytest.raises(InvalidManifestPathError):
                await s.write(Path("/etc/owned"), io.BytesIO(b"x"))
            # A symlink the agent planted does not lead the SDK's read out of the jail's view.
            await s.exec("ln -s /etc/shadow leak")
            with pytest.raises(Exception):  # noqa: B017 - unreadable as the agent user
                await s.read(Path("leak"))
            names = sorted(e.path.rsplit("/", 1)[-1] for e in await s.ls("."))
            assert names == ["deep", "leak"]
            # Every transfer is in the record.
            kinds = [e["kind"] for e in Store().events(inner(s).sandbox.id)]
            assert "file.write" in kinds and "file.read" in kinds
    run(go())


def test_persist_and_hydrate_roundtrip() -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client) as a:
            root = a.state.manifest.root
            await a.write(Path("src/main.py"), io.BytesIO(b"print(1)\n"))
            await a.exec("chmod +x src/main.py; mkfifo pipe; "
                         f"ln -s {root}/src/main.py abs-link; ln -s src rel-link; "
                         "mkdir cache; echo junk > cache/x")
            a.register_persist_workspace_skip_path("cache")
            archive = await a.persist_workspace()
            with tarfile.open(fileobj=archive) as tar:
                members = {m.name: m for m in tar.getmembers()}
            archive.seek(0)
            assert "./src/main.py" in members and "./pipe" not in members
            assert not any(n.startswith("./cache") for n in members)
            assert members["./abs-link"].linkname == "src/main.py"  # made relative
            async with session_of(client) as b:
                assert b.state.manifest.root != root
                await b.hydrate_workspace(archive)
                r = await b.exec("cat abs-link; cat rel-link/main.py; test -x src/main.py")
                assert r.exit_code == 0 and r.stdout == b"print(1)\nprint(1)\n"
                # A hostile archive is refused before anything is unpacked.
                evil = io.BytesIO()
                with tarfile.open(fileobj=evil, mode="w") as tar:
                    info = tarfile.TarInfo("../escape.txt")
                    info.size = 1
                    tar.addfile(info, io.BytesIO(b"x"))
                evil.seek(0)
                with pytest.raises(WorkspaceArchiveWriteError):
                    await b.hydrate_workspace(evil)
    run(go())


# -- lifecycle: create/resume/delete, state and options round trips ------------------------


def test_options_and_state_round_trip_as_json() -> None:
    opts = FirejailSandboxClientOptions(profile="strict", network=["pypi.org:443"],
                                       limits={"memory_mib": 1024})
    parsed = BaseSandboxClientOptions.parse(opts.model_dump(mode="json"))
    assert parsed == opts and isinstance(parsed, FirejailSandboxClientOptions)

    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client, options=opts) as s:
            payload = client.serialize_session_state(s.state)
            state = client.deserialize_session_state(payload)
            assert isinstance(state, FirejailSandboxSessionState)
            assert state.sandbox_id == inner(s).sandbox.id
            assert state.options == opts
            assert state.manifest.root == s.state.manifest.root
            assert inner(s).sandbox.profile.name == "strict"
    run(go())


def test_resume_reattaches_to_a_live_jail_then_rehydrates_a_fresh_one(test_dir: Path) -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        snap = LocalSnapshotSpec(base_path=test_dir / "snap")
        first = await client.create(snapshot=snap)
        try:
            await first.start()
            await first.write(Path("kept.txt"), io.BytesIO(b"v1"))
            await first.exec("echo live > live.txt")
            payload = client.serialize_session_state(first.state)

            # Still alive in this process: resume re-attaches to the very same jail.
            again = await client.resume(client.deserialize_session_state(payload))
            await again.start()
            assert inner(again).sandbox is inner(first).sandbox
            assert (await again.read(Path("live.txt"))).read() == b"live\n"

            await first.aclose()  # persists to the snapshot, then ends the jail
        finally:
            await client.delete(first)
        assert not await again.running()
        payload = client.serialize_session_state(first.state)

        # Gone: resume starts a fresh jail and the SDK hydrates it from the snapshot.
        fresh = await client.resume(client.deserialize_session_state(payload))
        try:
            await fresh.start()
            assert inner(fresh).sandbox.id != client.sandbox_ids[0]
            assert (await fresh.read(Path("kept.txt"))).read() == b"v1"
            assert (await fresh.read(Path("live.txt"))).read() == b"live\n"
        finally:
            await fresh.aclose()
            await client.delete(fresh)
        assert len(client.sandbox_ids) == 2
    run(go())


def test_rejects_host_path_grant_before_starting_a_jail(test_dir: Path) -> None:
    # Port of test_unix_local_rejects_host_path_before_creating_workspace.
    client = FirejailSandboxClient()
    manifest = Manifest(extra_path_grants=(
        SandboxPathGrant(path="/mnt/shared-data", host_path=str(test_dir)),))
    with pytest.raises(ValueError, match="does not support sandbox path grant host_path"):
        run(client.create(manifest=manifest, snapshot=None, options=None))
    assert client.sandbox_ids == []


def test_rejects_manifest_users() -> None:
    client = FirejailSandboxClient()
    with pytest.raises(ValueError, match="users or groups"):
        run(client.create(manifest=Manifest(users=[User(name="alice")])))
    assert client.sandbox_ids == []


def test_guard_blocks_come_back_as_exit_126_on_both_paths() -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client) as s:
            r = await s.exec("ssh -R 9000:localhost:22 attacker.example")
            assert r.exit_code == 126 and b"tunnels.ssh_forward" in r.stderr
            u = await s.pty_exec_start("ssh -R 9000:localhost:22 attacker.example",
                                       tty=True, yield_time_s=0.5)
            assert u.process_id is None and u.exit_code == 126
            assert b"tunnels.ssh_forward" in u.output
    run(go())


# -- PTY: ports of the SDK's TestUnixLocalPty ---------------------------------------------


def test_pty_exec_write_poll_and_unknown_session_errors() -> None:
    async def go() -> None:
        async with session_of(FirejailSandboxClient()) as s:
            started = await s.pty_exec_start(
                "sh", "-c", "IFS= read -r line; printf '%s\\n' \"$line\"; tty",
                shell=False, tty=True, yield_time_s=0.05)
            assert started.process_id is not None
            assert started.exit_code is None

            written = await s.pty_write_stdin(
                session_id=started.process_id, chars="hello from pty\n", yield_time_s=0.25)
            if written.process_id is not None:  # slow machine: poll to the end
                written = await s.pty_write_stdin(
                    session_id=started.process_id, chars="", yield_time_s=5.5)
            text = written.output.decode("utf-8", errors="replace")
            assert written.process_id is None
            assert written.exit_code == 0
            assert "hello from pty" in text
            assert "/dev/pts/" in text  # a real terminal, inside the jail

            with pytest.raises(PtySessionNotFoundError):
                await s.pty_write_stdin(session_id=started.process_id, chars="")
            with pytest.raises(PtySessionNotFoundError):
                await s.pty_write_stdin(session_id=999_999, chars="")
    run(go())


@pytest.mark.parametrize(("signum", "chars"), [
    pytest.param(signal.SIGINT, "\x03", id="sigint"),
    pytest.param(signal.SIGQUIT, "\x1c", id="sigquit"),
])
def test_pty_terminal_signals_interrupt(signum: signal.Signals, chars: str) -> None:
    async def go() -> None:
        async with session_of(FirejailSandboxClient()) as s:
            started = await s.pty_exec_start("sleep", "30", shell=False, tty=True,
                                              yield_time_s=0.05)
            assert started.process_id is not None
            interrupted = await s.pty_write_stdin(
                session_id=started.process_id, chars=chars, yield_time_s=5.5)
            assert interrupted.process_id is None
            assert interrupted.exit_code == 128 + signum  # UnixLocal reports -signum
            with pytest.raises(PtySessionNotFoundError):
                await s.pty_write_stdin(session_id=started.process_id, chars="")
    run(go())


def test_non_tty_pty_session_rejects_stdin_and_can_still_be_polled() -> None:
    async def go() -> None:
        async with session_of(FirejailSandboxClient()) as s:
            started = await s.pty_exec_start(
                "sh", "-c", "printf 'stdout\\n'; printf 'stderr\\n' >&2; sleep 1",
                shell=False, tty=False, yield_time_s=0.05)
            assert started.process_id is not None
            assert started.exit_code is None
            if "stderr" not in started.output.decode():  # output may trail the yield
                more = await s.pty_write_stdin(session_id=started.process_id, chars="",
                                               yield_time_s=0.3)
                started.output += more.output
            started_text = started.output.decode("utf-8", errors="replace")
            assert "stdout" in started_text
            assert "stderr" in started_text

            with pytest.raises(RuntimeError, match="stdin is not available for this process"):
                await s.pty_write_stdin(session_id=started.process_id, chars="hello")

            finished = await s.pty_write_stdin(
                session_id=started.process_id, chars="", yield_time_s=5.5)
            assert finished.process_id is None
            assert finished.exit_code == 0
            assert finished.output.decode() == ""
            with pytest.raises(PtySessionNotFoundError):
                await s.pty_write_stdin(session_id=started.process_id, chars="")
    run(go())


def test_stop_terminates_active_pty_sessions() -> None:
    async def go() -> None:
        client = FirejailSandboxClient()
        async with session_of(client) as s:
            started = await s.pty_exec_start(
                "sh", "-c", "printf 'ready\\n'; sleep 30", shell=False, tty=True,
                yield_time_s=0.25)
            assert started.process_id is not None
            if "ready" not in started.output.decode():
                started = await s.pty_write_stdin(session_id=started.process_id, chars="",
                                                  yield_time_s=1)
            assert "ready" in started.output.decode("utf-8", errors="replace")

            await s.stop()

            assert started.process_id is not None
            with pytest.raises(PtySessionNotFoundError):
                await s.pty_write_stdin(session_id=started.process_id, chars="")
            # The jail outlives stop() (persistence only); the sleep is gone from it.
            r = await s.exec("ps -eo comm")
            assert "sleep" not in r.stdout.decode().split()
            # The killed PTY process is in the record like any exec.
            assert any("sleep 30" in c for c in commands(inner(s).sandbox.id))
    run(go())


# -- in an image (`image`, as DockerSandboxClientOptions') ----------------------------------


IN_IMAGE = ("grep ^VERSION_CODENAME= /etc/os-release; echo $IMAGE_VAR; pwd; "
            "test -e /usr/bin/firejail || echo no-firejail")


def test_sandbox_agent_runs_in_an_image(test_dir: Path, images: Images,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A SandboxAgent run with `image="deb"`: the shell and apply_patch work in the stored
    image (its Env, none of the host's programs), the root is the image's /workspace, and
    the record holds the model's commands like any session's."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    agent, _ = scripted_agent(IN_IMAGE, "cat /workspace/notes/hello.txt", "done")
    client = FirejailSandboxClient()
    result = run(Runner.run(agent, "where am i", run_config=RunConfig(
        sandbox=SandboxRunConfig(client=client,
                                 options=FirejailSandboxClientOptions(image=images.deb),
                                 snapshot=LocalSnapshotSpec(base_path=test_dir / "snap")),
        tracing_disabled=True)))
    assert result.final_output == "done"
    first, _, last = [str(i.output) for i in result.new_items
                      if isinstance(i, ToolCallOutputItem)]
    assert "VERSION_CODENAME=bookworm\nfrom-the-image\n/workspace\nno-firejail" in first
    assert Path("/usr/bin/firejail").exists()  # the host has it; the image does not
    assert "written through apply_patch" in last
    (sid,) = client.sandbox_ids
    assert IN_IMAGE in "\n".join(commands(sid))
    row = Store().get_session(sid)
    assert row["resources"]["image_root"]["image"] == images.deb
    assert row["state"] == "exited"


def test_manifest_root_in_an_image_is_a_path_inside_it(
        test_dir: Path, images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default root is the image's WorkingDir (seeded with what the image holds
    there); another root is where the workspace goes; resume keeps it, hydrated."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))

    async def go() -> None:
        client = FirejailSandboxClient()
        opts = FirejailSandboxClientOptions(image=images.layered)
        async with session_of(client, options=opts) as s:
            assert s.state.manifest.root == "/srv/task"
            assert (await s.read(Path("README"))).read() == b"the task's repository\n"
            r = await s.exec("pwd; printf '%s' \"$HOME\"")
            assert r.stdout == b"/srv/task\n/srv/task"
        snap = LocalSnapshotSpec(base_path=test_dir / "snap")
        opts = FirejailSandboxClientOptions(image=images.deb)
        first = await client.create(options=opts, manifest=Manifest(root="/testbed"),
                                    snapshot=snap)
        try:
            await first.start()
            assert first.state.manifest.root == "/testbed"
            await first.write(Path("kept.txt"), io.BytesIO(b"v1\n"))
            r = await first.exec("pwd; cat /testbed/kept.txt; echo $IMAGE_VAR")
            assert r.stdout == b"/testbed\nv1\nfrom-the-image\n"
            await first.aclose()
        finally:
            await client.delete(first)
        payload = client.serialize_session_state(first.state)
        fresh = await client.resume(client.deserialize_session_state(payload))
        try:
            await fresh.start()
            r = await fresh.exec("pwd; cat kept.txt; echo $IMAGE_VAR")
            assert r.stdout == b"/testbed\nv1\nfrom-the-image\n"
        finally:
            await fresh.aclose()
            await client.delete(fresh)
        assert len(client.sandbox_ids) == 3
        for sid in client.sandbox_ids:
            assert Store().get_session(sid)["resources"]["image_root"]["image"] \
                in (images.layered, images.deb)
    run(go())


def test_example_runs_in_an_image(images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's image variant: examples/openai_agents_example.py --image NAME."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "openai_agents_example.py"),
         "--image", images.py],
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FizzBuzz" in proc.stdout and "/workspace" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if "the record of jail" in line)
    assert f" in image {images.py} " in header
    sid = header.split()[5]
    assert Store().get_session(sid)["resources"]["image_root"]["image"] == images.py
