"""The inspect-ai provider `firejail`: inspect's own conformance checks, and real evals.

inspect's portable `self_check` suite is pulled into this module and driven by the
`sandbox_env` fixture exactly as inspect's runner does it
(tests/tools/test_sandbox_docker_and_local.py): one sandbox per module through the
provider's task_init/sample_init, a function-scoped `sandbox_env` over it that marks the
checks this provider cannot satisfy as strict xfails. The only one: `test_exec_as_user`
(it runs adduser as root; the jail has no root, by design).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytest.importorskip("inspect_ai")

import inspect_ai.util._sandbox.self_check as _self_check
from inspect_ai.util import (
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxUnavailableError,
    SandboxUserUnsupportedError,
)
from inspect_ai.util._sandbox.limits import override_max_exec_output_size

# Pull the portable checks into this module so pytest collects them as tests, each
# driven by the `sandbox_env` fixture below.
from inspect_ai.util._sandbox.self_check import *  # noqa: F403

from sandbox import Store
from sandbox.adapters.inspect_ai import (
    FirejailSandboxConfig,
    FirejailSandboxEnvironment,
)
from tests.conftest import TEST_ROOT

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "inspect_example.py"

pytestmark = pytest.mark.anyio

XFAILS = {
    "test_exec_as_user": "the jail has no root (by design): exec as root, and so "
                         "adduser, raise SandboxUserUnsupportedError",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # AsyncSandbox is asyncio-native (pidfd, loop readers)


class ModuleEnv(NamedTuple):
    env: FirejailSandboxEnvironment
    state: Path


@pytest.fixture(scope="module")
async def _firejail_env() -> AsyncIterator[ModuleEnv]:
    """One sandbox for all the checks of this module (as inspect's runner), in its own
    store: the per-test `state_dir` fixture is function-scoped."""
    root = TEST_ROOT / f"inspect-{uuid.uuid4().hex[:8]}"
    state = root / "state"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOX_STATE_DIR", str(state))
        task_name = f"{__name__}_self_check"
        await FirejailSandboxEnvironment.task_init(task_name, None)
        envs = await FirejailSandboxEnvironment.sample_init(task_name, None, {})
        env = envs["default"]
        assert isinstance(env, FirejailSandboxEnvironment)
        try:
            yield ModuleEnv(env, state)
        finally:
            await FirejailSandboxEnvironment.sample_cleanup(task_name, None, envs, False)
            await FirejailSandboxEnvironment.task_cleanup(task_name, None, True)
            shutil.rmtree(root, ignore_errors=True)


# Must stay function-scoped: xfails are applied per check via request.node.
@pytest.fixture
def sandbox_env(request: pytest.FixtureRequest, _firejail_env: ModuleEnv
                ) -> SandboxEnvironment:
    reason = XFAILS.get(request.node.originalname)
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    return _firejail_env.env


def test_every_self_check_is_collected() -> None:
    """The star import really brought inspect's checks here (a version that renamed the
    suite would otherwise leave only this module's own tests, all green)."""
    names = set(_self_check.__all__)
    assert len(names) >= 40 and "test_exec_timeout_kills_child_processes" in names
    assert all(name in globals() for name in names)
    assert set(XFAILS) <= names


# -- what the checks leave out ----------------------------------------------------------


async def test_checks_ran_in_a_recorded_jail(_firejail_env: ModuleEnv) -> None:
    """The module's sandbox is a real jail as the agent user, with an executable
    /var/tmp (inspect's tool helpers), and its execs are in the store's record."""
    env = _firejail_env.env
    r = await env.exec(["sh", "-c", "id -u; printf '#!/bin/sh\\necho ran\\n' > /var/tmp/t; "
                        "chmod +x /var/tmp/t; /var/tmp/t; grep -E '^NoNewPrivs' "
                        "/proc/self/status"])
    assert r.success, r.stderr
    uid, ran, nnp = r.stdout.split("\n")[:3]
    assert int(uid) == os.stat(env.sandbox.workdir).st_uid != 0
    assert ran == "ran" and nnp.split() == ["NoNewPrivs:", "1"]
    with _store(_firejail_env.state) as store:
        texts = [c["text"] for c in store.commands(env.sandbox.id)]
    assert any("/var/tmp/t" in t for t in texts)


async def test_users(_firejail_env: ModuleEnv) -> None:
    env = _firejail_env.env
    uid = str(os.stat(env.sandbox.workdir).st_uid)
    name = (await env.exec(["id", "-un"])).stdout.strip()
    for user in (name, uid):
        r = await env.exec(["id", "-u"], user=user)
        assert r.stdout.strip() == uid
    for user in ("root", "0", "nobody"):
        with pytest.raises(SandboxUserUnsupportedError):
            await env.exec(["id", "-u"], user=user)


async def test_timeout_carries_partial_output(_firejail_env: ModuleEnv) -> None:
    with pytest.raises(TimeoutError) as e:
        await _firejail_env.env.exec(["sh", "-c", "echo before; sleep 30"], timeout=1)
    assert getattr(e.value, "truncated_output", "") == "before\n"


async def test_exec_output_limit(_firejail_env: ModuleEnv) -> None:
    env = _firejail_env.env
    with override_max_exec_output_size(1024):
        assert (await env.exec(["head", "-c", "1024", "/dev/zero"])).returncode == 0
        with pytest.raises(OutputLimitExceededError) as e:
            await env.exec(["head", "-c", "5000", "/dev/zero"])
    assert "1 KiB" in str(e.value) and e.value.truncated_output


async def test_file_errors_carry_errno_and_path(_firejail_env: ModuleEnv) -> None:
    env = _firejail_env.env
    with pytest.raises(FileNotFoundError) as nf:
        await env.read_file("no/such/file")
    assert nf.value.filename == "no/such/file" and nf.value.errno == 2
    with pytest.raises(PermissionError) as pe:
        await env.write_file("/etc/hostname", "x")  # read-only outside the workspace
    assert pe.value.filename == "/etc/hostname"
    await env.write_file("bin.dat", b"\xff\xfe\x00")
    with pytest.raises(UnicodeDecodeError):
        await env.read_file("bin.dat", text=True)
    await env.write_file("crlf.txt", "a\r\nb\r\n")
    assert await env.read_file("crlf.txt") == "a\r\nb\r\n"  # newlines kept as written
    await env.exec(["rm", "-f", "bin.dat", "crlf.txt"])


async def test_config_profile_and_tables(state_dir: Path) -> None:
    """A config model with a profile, network, limits and env; `config_deserialize`
    round-trips it; a bad profile fails at task_init, before any sample."""
    cfg = FirejailSandboxConfig(profile="strict", network="none", limits={"pids": 64},
                                env={"GREETING": "hi"})
    assert FirejailSandboxEnvironment.config_deserialize(cfg.model_dump()) == cfg
    await FirejailSandboxEnvironment.task_init("t", cfg)
    envs = await FirejailSandboxEnvironment.sample_init("t", cfg, {})
    try:
        env = envs["default"]
        assert isinstance(env, FirejailSandboxEnvironment)
        prof = env.sandbox.profile
        assert (prof.name, prof.limits.pids, prof.limits.memory_mib, prof.network.mode,
                prof.filesystem.exec_var_tmp) == ("strict", 64, 1024, "none", True)
        assert (await env.exec(["sh", "-c", "echo $GREETING"])).stdout == "hi\n"
    finally:
        await FirejailSandboxEnvironment.sample_cleanup("t", cfg, envs, False)
    from sandbox.errors import SandboxError

    with pytest.raises(SandboxError):
        await FirejailSandboxEnvironment.task_init("t", "no-such-profile-xyz")


async def test_killed_from_another_process_is_unavailable(state_dir: Path) -> None:
    """`inspect sandbox cleanup firejail ID` (cli_cleanup) in another process kills the
    sample's sandbox through the store; the provider then raises SandboxUnavailableError
    (a tool error, not the command's output)."""
    envs = await FirejailSandboxEnvironment.sample_init("t", None, {})
    try:
        env = envs["default"]
        assert isinstance(env, FirejailSandboxEnvironment)
        sid = env.sandbox.id

        def cleanup(*args: str) -> str:
            cli = subprocess.run(
                [str(REPO / ".venv" / "bin" / "inspect"), "sandbox", "cleanup", "firejail",
                 *args], capture_output=True, text=True, timeout=60, env=dict(os.environ))
            assert cli.returncode == 0, cli.stderr
            return cli.stdout

        # without an id: only sessions whose owner died are reaped; this one's is alive
        out = cleanup()
        assert out.startswith("reaped 0 ") and sid in out, out
        assert env.sandbox.is_alive()
        assert f"{sid} killed" in cleanup(sid)
        with pytest.raises(SandboxUnavailableError):
            await env.exec(["true"])
        with pytest.raises(SandboxUnavailableError):
            await env.read_file("x")
        with _store(state_dir) as store:
            assert store.get_session(sid)["state"] == "killed"
    finally:
        await FirejailSandboxEnvironment.sample_cleanup("t", None, envs, True)


async def test_task_cleanup_ends_what_sample_cleanup_missed(state_dir: Path) -> None:
    """An interrupted eval may never run sample_cleanup: task_cleanup ends those jails."""
    envs = await FirejailSandboxEnvironment.sample_init("t", None, {})
    env = envs["default"]
    assert isinstance(env, FirejailSandboxEnvironment)
    assert env.sandbox.is_alive()
    await FirejailSandboxEnvironment.task_cleanup("shutdown", None, True)
    assert not env.sandbox.is_alive() and env.sandbox.state == "exited"


# -- the provider as inspect finds it ----------------------------------------------------


def test_entry_point_registers_firejail_in_a_fresh_process() -> None:
    """inspect finds the provider by name through the `inspect_ai` entry point group
    alone: nothing imports the adapter before the lookup."""
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "eps = {e.name: e.value for e in entry_points(group='inspect_ai')}\n"
        "from inspect_ai.util._sandbox.registry import registry_find_sandboxenv\n"
        "before = 'sandbox.adapters.inspect_ai' in sys.modules\n"
        "cls = registry_find_sandboxenv('firejail')\n"
        "print(eps.get('firejail'), before, cls.__module__, cls.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd="/", check=True).stdout.split()
    assert out == ["sandbox.adapters.inspect_ai", "False", "sandbox.adapters.inspect_ai",
                   "FirejailSandboxEnvironment"]


def _store(state: Path) -> contextlib.closing[Store]:
    """The store of a state dir (what SANDBOX_STATE_DIR=state gives every process)."""
    return contextlib.closing(Store(state / "sandbox.db"))


def _check_log(log: Any, state: Path, profile_file: Path) -> None:
    """The eval succeeded, the bash() tool's output came from the jail, the scorer read
    the file back, and both commands are in the sandbox's record."""
    from inspect_ai.model import ChatMessageTool

    assert log.status == "success", log.error
    (sample,) = log.samples
    tool_msgs = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
    assert len(tool_msgs) == 1 and tool_msgs[0].error is None
    greeting, user = tool_msgs[0].text.splitlines()
    assert greeting == "hello from the jail" and user.startswith("sandbox-agent")
    assert sample.scores["file_written"].value == "C"
    with _store(state) as store:
        (session,) = store.list_sessions(limit=100)  # one sample, one sandbox
        sid = session["id"]
        texts = [c["text"] for c in store.commands(sid)]
        assert store.verify(sid)[0]
        (start,) = store.events(sid, kinds=("session.start",))
    assert session["state"] == "exited"  # sample_cleanup closed it
    assert start["detail"]["sources"][-1] == str(profile_file)
    assert texts == ["bash --login -c 'echo hello from the jail > greeting.txt && cat "
                     "greeting.txt && id -un'", "/bin/cat -- greeting.txt"]


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    import inspect_example

    yield inspect_example
    sys.modules.pop("inspect_example", None)


async def test_eval_in_process(example: Any, state_dir: Path, tmp_path: Path) -> None:
    """`eval_async` on this test's loop (a sync `eval()` refuses to start inside a
    running loop, and the module's sandbox keeps one)."""
    from inspect_ai import eval_async
    from inspect_ai.util._display import init_display_type

    init_display_type("none")  # eval_async has no display= (eval() sets it this way)
    (log,) = await eval_async(example.ringfence_hello(), log_dir=str(tmp_path / "logs"))
    # the example's profile file, relative to the task file's directory
    _check_log(log, state_dir, EXAMPLE.parent / "inspect" / "profile.toml")
    assert log.eval.sandbox.type == "firejail"
    assert log.eval.sandbox.config == "inspect/profile.toml"


async def test_injected_tools_run_from_var_tmp(state_dir: Path, tmp_path: Path) -> None:
    """inspect's injected helper (text_editor, bash_session) is copied into /var/tmp and
    run there as the agent user: the provider's exec_var_tmp makes that possible."""
    from inspect_ai import Task, eval_async
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageTool, ModelOutput, ModelUsage, get_model
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import bash_session, text_editor
    from inspect_ai.util._display import init_display_type

    outputs = [
        ModelOutput.for_tool_call("mockllm/model", "text_editor", {
            "command": "create", "path": "/tmp/notes.txt", "file_text": "jailed notes\n"}),
        ModelOutput.for_tool_call("mockllm/model", "bash_session", {
            "action": "type_submit", "input": "cat /tmp/notes.txt; id -un"}),
        ModelOutput.from_content("mockllm/model", "done"),
    ]
    for o in outputs:
        o.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    model = get_model("mockllm/model", memoize=False, custom_outputs=outputs)
    task = Task(dataset=[Sample(input="take notes")],
                solver=[use_tools([text_editor(), bash_session()]), generate()],
                sandbox="firejail", model=model)
    init_display_type("none")
    (log,) = await eval_async(task, log_dir=str(tmp_path / "logs"))
    assert log.status == "success", log.error
    tools = [m for m in log.samples[0].messages if isinstance(m, ChatMessageTool)]
    assert [m.error for m in tools] == [None, None], [m.error for m in tools]
    assert "jailed notes" in tools[1].text and "sandbox-agent" in tools[1].text
    with _store(state_dir) as store:
        (session,) = store.list_sessions(limit=100)
        texts = [c["text"] for c in store.commands(session["id"])]
    assert any(".da7be258e003d428" in t and "start-server" in t for t in texts), texts


def test_eval_cli(state_dir: Path, tmp_path: Path) -> None:
    """`inspect eval` in a subprocess: SANDBOX_STATE_DIR reaches it, and `--sandbox
    firejail:strict` names a profile (inspect hands the provider `<task dir>/strict`)."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    logs = tmp_path / "logs"
    r = subprocess.run(
        [str(REPO / ".venv" / "bin" / "inspect"), "eval", "examples/inspect_example.py",
         "--sandbox", "firejail:strict", "--display", "none", "--log-dir", str(logs),
         "--log-format", "json"],
        capture_output=True, text=True, timeout=300, cwd=str(REPO),
        env={**os.environ, "INSPECT_LOG_LEVEL": "warning"})
    assert r.returncode == 0, r.stdout + r.stderr
    (info,) = list_eval_logs(str(logs))
    from sandbox.jail.profile import find

    _check_log(read_eval_log(info), state_dir, find("strict"))


# -- images: the compose file's default service --------------------------------------------

IMAGE_EXAMPLE = REPO / "examples" / "inspect_image" / "task.py"


def test_compose_default_service_maps_to_the_config(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The default service (x-default, else `default`, else the only one) gives image,
    working_dir, environment (a bare KEY is the host's value) and network_mode none; the
    config's own fields win; what cannot map is an error that says what to do."""
    from sandbox.adapters.inspect_config import parse_config
    from sandbox.errors import SetupError

    monkeypatch.setenv("FROM_HOST", "host-value")
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  db:\n    image: postgres:16\n"
        "  agent:\n    x-default: true\n    image: py\n    working_dir: /srv/app\n"
        "    environment:\n      - LEVEL=hard\n      - FROM_HOST\n      - UNSET_HERE\n"
        "    network_mode: none\n")
    cfg = parse_config(str(compose))
    assert (cfg.image, cfg.workdir, cfg.env, cfg.network) == (
        "py", "/srv/app", {"LEVEL": "hard", "FROM_HOST": "host-value"}, "none")
    mine = parse_config(FirejailSandboxConfig(compose=str(compose), image="deb",
                                         env={"LEVEL": "mine"}, network="allowlist"))
    assert (mine.image, mine.workdir, mine.env["LEVEL"], mine.network) == (
        "deb", "/srv/app", "mine", "allowlist")
    # another network mode keeps the profile's network: never full egress by request
    compose.write_text("services:\n  default:\n    image: py\n    network_mode: host\n")
    assert parse_config(str(compose)).network is None
    for text, says in (
            ("services:\n  a:\n    image: x\n  b:\n    image: y\n", "none is the default"),
            ("services:\n  default:\n    build: .\n", "has no `image:`")):
        compose.write_text(text)
        with pytest.raises(SetupError, match=says):
            parse_config(str(compose))
    with pytest.raises(SetupError, match=r"Dockerfile.*sandbox image pull docker-daemon:"):
        parse_config(str(tmp_path / "Dockerfile"))


async def test_an_image_not_in_the_store_fails_at_task_init(images: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Nothing is pulled during an eval: a missing image stops it before any sample, with
    the commands that add it."""
    from sandbox.errors import NotFound

    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  default:\n    image: no-such-image:1\n")
    with pytest.raises(NotFound, match=r"no-such-image:1.*sandbox image pull docker://"):
        await FirejailSandboxEnvironment.task_init("t", str(compose))


async def test_eval_in_an_image_from_compose(images: Any, state_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's image example with `image=py` (the suite's own Debian image with a
    `python`): bash() ran the image's python in the compose file's working_dir with its
    environment, in a recorded session that names the image."""
    from inspect_ai import eval_async
    from inspect_ai.model import ChatMessageTool
    from inspect_ai.util._display import init_display_type

    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    monkeypatch.syspath_prepend(str(IMAGE_EXAMPLE.parent))
    import task as image_task

    try:
        init_display_type("none")
        (log,) = await eval_async(image_task.ringfence_image(image="py"),
                                  log_dir=str(tmp_path / "logs"))
    finally:
        sys.modules.pop("task", None)
    assert log.status == "success", log.error
    (sample,) = log.samples
    (tool,) = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
    assert tool.text.splitlines() == ["Python 3.11.2", "/srv/task", "easy"], tool.text
    assert sample.scores["python_ran"].value == "C"
    with _store(state_dir) as store:
        (session,) = store.list_sessions(limit=100)
        (ev,) = store.events(session["id"], kinds=("session.image",))
    assert (ev["detail"]["image"], ev["detail"]["workdir"]) == ("py", "/srv/task")


def test_eval_cli_finds_compose_next_to_the_task(images: Any, state_dir: Path,
                                                 tmp_path: Path) -> None:
    """`sandbox="firejail"` with no config: inspect hands the provider the compose.yaml
    beside the task file (config_files), as it does for docker."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    task_dir = tmp_path / "task"
    task_dir.mkdir()
    shutil.copy(IMAGE_EXAMPLE, task_dir / "task.py")
    (task_dir / "compose.yaml").write_text(
        (IMAGE_EXAMPLE.parent / "compose.yaml").read_text().replace(
            "image: python:3.12-slim", "image: py"))
    logs = tmp_path / "logs"
    r = subprocess.run(
        [str(REPO / ".venv" / "bin" / "inspect"), "eval", "task.py", "--display", "none",
         "--log-dir", str(logs), "--log-format", "json"],
        capture_output=True, text=True, timeout=300, cwd=str(task_dir),
        env={**os.environ, "INSPECT_LOG_LEVEL": "warning",
             "SANDBOX_IMAGE_DIR": str(images.root / "store")})
    assert r.returncode == 0, r.stdout + r.stderr
    (info,) = list_eval_logs(str(logs))
    log = read_eval_log(info)
    assert log.status == "success", log.error
    assert log.samples[0].scores["python_ran"].value == "C"
    assert log.eval.sandbox.config.endswith("compose.yaml")
