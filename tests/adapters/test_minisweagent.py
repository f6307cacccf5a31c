"""mini-swe-agent adapter: `SandboxEnvironment` against real sandboxes.

The first part ports mini-swe-agent's own tests of `LocalEnvironment`
(tests/environments/test_local.py upstream) to our class; what differs on purpose (the
host environment is not inherited, the default cwd is the workspace) is tested as such.
Then: the submit marker, the class resolved by mini-swe-agent's own `get_environment`, the
confinement of every action, the record, and `DefaultAgent` end to end driven by its
deterministic test model.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")  # no banner from `import minisweagent`

import yaml
from minisweagent import package_dir
from minisweagent.agents import get_agent
from minisweagent.agents.default import DefaultAgent
from minisweagent.environments import get_environment, get_environment_class
from minisweagent.exceptions import Submitted
from minisweagent.models import get_model
from minisweagent.models.test_models import DeterministicModel, make_output

from sandbox import Store
from sandbox.adapters.minisweagent import (
    SandboxClosed,
    SandboxEnvironment,
    SandboxEnvironmentConfig,
)
from tests.helpers import procs_matching, wait_for
from tests.images.conftest import Images

CLASS_PATH = "sandbox.adapters.minisweagent.SandboxEnvironment"
REPO = Path(__file__).resolve().parents[2]
MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


@pytest.fixture
def make_env() -> Iterator[Any]:
    """Build environments that are all closed at the end of the test."""
    made: list[SandboxEnvironment] = []

    def make(**kwargs: Any) -> SandboxEnvironment:
        env = SandboxEnvironment(**kwargs)
        made.append(env)
        return env

    try:
        yield make
    finally:
        for env in made:
            env.close()


@pytest.fixture
def env(make_env: Any) -> SandboxEnvironment:
    return make_env()  # type: ignore[no-any-return]


def agent_config() -> dict[str, Any]:
    """The agent part of mini-swe-agent's own default.yaml (text actions), as its tests use."""
    config = yaml.safe_load((package_dir / "config" / "default.yaml").read_text())
    return config["agent"]  # type: ignore[no-any-return]


# -- ported from mini-swe-agent tests/environments/test_local.py ------------------------


def test_config_defaults() -> None:
    config = SandboxEnvironmentConfig()
    assert config.cwd == ""
    assert config.env == {}
    assert config.timeout == 30
    assert config.interpreter == ["bash", "-c"]
    assert config.profile == "default"
    assert config.network is None and config.workdir is None


def test_basic_execution(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "echo 'hello world'"})
    assert result == {"output": "hello world\n", "returncode": 0, "exception_info": ""}


def test_set_env_variables(make_env: Any) -> None:
    env = make_env(env={"TEST_VAR": "test_value", "ANOTHER_VAR": "another_value"})
    result = env.execute({"command": "echo $TEST_VAR"})
    assert result["returncode"] == 0 and result["output"] == "test_value\n"
    result = env.execute({"command": "echo $TEST_VAR $ANOTHER_VAR"})
    assert result["output"] == "test_value another_value\n"


def test_host_env_is_not_inherited_but_forward_env_passes_it(
        make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlike LocalEnvironment (which passes os.environ): only what is named comes in."""
    monkeypatch.setenv("EXISTING_VAR", "existing_value")
    monkeypatch.setenv("CONFLICT_VAR", "original_value")
    plain = make_env(env={"NEW_VAR": "new_value"})
    assert plain.execute({"command": "echo \"[$EXISTING_VAR] $NEW_VAR\""})["output"] \
        == "[] new_value\n"
    forwarding = make_env(forward_env=["EXISTING_VAR", "CONFLICT_VAR", "UNSET_VAR_X"],
                          env={"CONFLICT_VAR": "override_value"})
    out = forwarding.execute({"command": "echo $EXISTING_VAR $CONFLICT_VAR ${UNSET_VAR_X-unset}"})
    assert out["output"] == "existing_value override_value unset\n"


def test_custom_cwd(make_env: Any, workspace: Path) -> None:
    sub = workspace / "sub"
    sub.mkdir()
    os.chown(sub, workspace.stat().st_uid, workspace.stat().st_gid)
    env = make_env(workdir=str(workspace), cwd=str(sub))
    assert env.execute({"command": "pwd"})["output"] == f"{sub}\n"
    relative = make_env(cwd="rel")  # under that sandbox's own workspace
    relative.execute({"command": "mkdir rel"}, cwd=relative.sandbox.workdir)
    assert relative.execute({"command": "pwd"})["output"] == f"{relative.sandbox.workdir}/rel\n"


def test_cwd_parameter_overrides_config_cwd(make_env: Any) -> None:
    env = make_env(cwd="/tmp")
    env.execute({"command": "mkdir -p other"}, cwd=env.sandbox.workdir)
    assert env.execute({"command": "pwd"})["output"] == "/tmp\n"
    other = f"{env.sandbox.workdir}/other"
    assert env.execute({"command": "pwd"}, cwd=other)["output"] == other + "\n"


def test_default_cwd_is_the_workspace(env: SandboxEnvironment) -> None:
    assert env.execute({"command": "pwd"})["output"] == env.sandbox.workdir + "\n"
    assert env.sandbox.workdir != os.getcwd()


def test_command_failure(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "exit 1"})
    assert result["returncode"] == 1
    assert result["output"] == ""


def test_nonexistent_command(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "nonexistent_command_12345"})
    assert result["returncode"] == 127
    assert "nonexistent_command_12345: command not found" in result["output"]


def test_stderr_is_merged_in_order(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "echo 'error message' >&2"})
    assert result["returncode"] == 0 and result["output"] == "error message\n"
    result = env.execute({"command": "echo 1; echo 2 >&2; echo 3; echo 4 >&2; exit 3"})
    assert result["output"] == "1\n2\n3\n4\n" and result["returncode"] == 3


def test_timeout(make_env: Any) -> None:
    env = make_env(timeout=1)
    t0 = time.monotonic()
    result = env.execute({"command": "echo started; sleep 20"})
    assert time.monotonic() - t0 < 10
    assert result["returncode"] == -1
    assert "timed out" in result["exception_info"]
    assert result["exception_info"] == ("An error occurred while executing the command: "
                                        "Command 'echo started; sleep 20' timed out after 1 seconds")
    assert result["extra"]["exception_type"] == "ExecTimeout"
    # the partial output is kept (the outer sh may add "Killed" as the tree goes)
    assert result["output"].startswith("started\n")


def test_timeout_argument_overrides_config(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "sleep 20"}, timeout=1)
    assert result["returncode"] == -1 and "after 1 seconds" in result["exception_info"]


def test_timeout_kills_child_processes(make_env: Any) -> None:
    """As upstream's test: a child the action started dies with it (a backgrounded one
    and a nohup one too)."""
    env = make_env(timeout=1)
    result = env.execute({"command": "(sleep 977.5 &); nohup sleep 978.5 >/dev/null 2>&1 &"
                                     " python3 -c 'import time; time.sleep(979.5)'"})
    assert result["returncode"] == -1
    names = ("sleep 977.5", "sleep 978.5", "python3 -c import time; time.sleep(979.5)")
    assert wait_for(lambda: not any(procs_matching(n) for n in names), timeout=10)
    assert env.execute({"command": "pgrep -c 'sleep|python3' || true"})["output"] == "0\n"


def test_detached_child_outlives_the_timeout_but_not_close(make_env: Any) -> None:
    """`setsid` plus a double fork leaves the exec's session and tree (re-parented to the
    jail's init), so the timeout's kill misses it, as LocalEnvironment's killpg does; the
    sandbox's end takes it."""
    env = make_env(timeout=1)
    assert env.execute({"command": "(setsid sleep 987.25 &); sleep 986.25"})["returncode"] == -1
    assert wait_for(lambda: not procs_matching("sleep 986.25"), timeout=10)
    assert procs_matching("sleep 987.25"), "the detached child is gone: update this test"
    env.close()
    assert wait_for(lambda: not procs_matching("sleep 987.25"), timeout=10)


def test_custom_timeout_config() -> None:
    config = SandboxEnvironmentConfig(timeout=5)
    assert config.timeout == 5


@pytest.mark.parametrize(("command", "expected_returncode"),
                         [("echo 'test'", 0), ("exit 1", 1), ("exit 42", 42),
                          ("kill -TERM $$", 128 + 15)])
def test_return_codes(env: SandboxEnvironment, command: str, expected_returncode: int) -> None:
    assert env.execute({"command": command})["returncode"] == expected_returncode


def test_multiline_output(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "echo -e 'line1\\nline2\\nline3'"})
    assert result["returncode"] == 0
    assert result["output"].strip().split("\n") == ["line1", "line2", "line3"]


def test_file_operations(env: SandboxEnvironment) -> None:
    assert env.execute({"command": "echo 'test content' > test.txt"})["returncode"] == 0
    assert env.execute({"command": "cat test.txt"})["output"] == "test content\n"
    assert (Path(env.sandbox.workdir) / "test.txt").read_text() == "test content\n"


def test_shell_features(env: SandboxEnvironment) -> None:
    assert env.execute({"command": "echo 'hello world' | grep 'world'"})["output"] \
        == "hello world\n"
    assert env.execute({"command": "echo $(echo 'nested')"})["output"] == "nested\n"
    # bash, not sh: arrays, [[ ]], brace expansion
    bashisms = env.execute({"command": "a=(x y); [[ ${a[1]} == y ]] && echo {1..3}"})
    assert bashisms == {"output": "1 2 3\n", "returncode": 0, "exception_info": ""}


# -- the semantics around it --------------------------------------------------------------


def test_each_action_is_a_fresh_shell(env: SandboxEnvironment) -> None:
    env.execute({"command": "cd /tmp && export KEPT=yes && touch /tmp/still-here"})
    result = env.execute({"command": "pwd; echo \"[$KEPT]\"; ls /tmp/still-here"})
    assert result["output"] == f"{env.sandbox.workdir}\n[]\n/tmp/still-here\n"


def test_submit_marker(env: SandboxEnvironment) -> None:
    with pytest.raises(Submitted) as info:
        env.execute({"command": f"echo {MARKER} && printf 'diff --git a/f b/f\\n+x\\n'"})
    (message,) = info.value.messages
    assert message == {"role": "exit", "content": "diff --git a/f b/f\n+x\n",
                       "extra": {"exit_status": "Submitted",
                                 "submission": "diff --git a/f b/f\n+x\n"}}
    with pytest.raises(Submitted):  # leading blank lines are skipped, as local does
        env.execute({"command": f"echo; echo '  {MARKER}  '"})


@pytest.mark.parametrize("command", [
    f"echo {MARKER}; exit 1",            # a failing submit is not a submit
    f"echo before; echo {MARKER}",       # not the first line
    f"echo {MARKER}-not",                # not the whole line
])
def test_no_submit(env: SandboxEnvironment, command: str) -> None:
    result = env.execute({"command": command})
    assert MARKER in result["output"]


def test_resolved_by_minisweagent_get_environment(test_dir: Path) -> None:
    assert get_environment_class(CLASS_PATH) is SandboxEnvironment
    env = get_environment({"environment_class": CLASS_PATH, "timeout": 7, "env": {"A": "b"}})
    try:
        assert isinstance(env, SandboxEnvironment)
        assert env.config.timeout == 7
        assert env.execute({"command": "echo $A"})["output"] == "b\n"
    finally:
        env.close()  # type: ignore[attr-defined]


def test_shipped_example_config_resolves() -> None:
    """examples/minisweagent.yaml, as `mini -c mini.yaml -c examples/minisweagent.yaml` reads it."""
    config = yaml.safe_load((REPO / "examples" / "minisweagent.yaml").read_text())
    assert config["environment"]["environment_class"] == CLASS_PATH
    env = get_environment(config["environment"], default_type="local")
    try:
        assert isinstance(env, SandboxEnvironment)
        assert env.execute({"command": "echo $PAGER"})["output"] == "cat\n"
    finally:
        env.close()  # type: ignore[attr-defined]


def test_template_vars_and_serialize(env: SandboxEnvironment,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_SECRET_X", "do-not-leak")
    tv = env.get_template_vars(extra_key=1)
    assert tv["timeout"] == 30 and tv["cwd"] == "" and tv["profile"] == "default"
    assert tv["system"] == "Linux" and tv["machine"]  # what default.yaml's prompt renders
    assert tv["sandbox_id"] == env.sandbox.id and tv["workdir"] == env.sandbox.workdir
    assert tv["extra_key"] == 1
    assert "HOST_SECRET_X" not in tv
    info = env.serialize()["info"]
    assert info["config"]["environment_type"] == CLASS_PATH
    assert info["config"]["environment"]["timeout"] == 30
    assert info["sandbox"] == {"id": env.sandbox.id, "workdir": env.sandbox.workdir}


def test_close_is_idempotent_and_ends_the_sandbox(make_env: Any) -> None:
    env = make_env()
    workdir = Path(env.sandbox.workdir)
    assert env.sandbox.is_alive() and workdir.is_dir()
    env.close()
    env.close()
    env.cleanup()
    assert not env.sandbox.is_alive()
    assert not workdir.exists()  # a fresh workspace is removed at close
    with pytest.raises(SandboxClosed) as info:
        env.execute({"command": "echo hi"})
    assert info.value.messages[0]["extra"]["exit_status"] == "SandboxClosed"


def test_context_manager_and_given_workdir(workspace: Path) -> None:
    with SandboxEnvironment(workdir=str(workspace)) as env:
        assert env.execute({"command": "pwd; echo kept > out.txt"})["output"] \
            == f"{workspace}\n"
        sid = env.sandbox.id
    assert not env.sandbox.is_alive()
    assert (workspace / "out.txt").read_text() == "kept\n"  # a given workdir stays
    assert Store().commands(sid)[-1]["source"] == "exec"


def test_dropped_without_close_the_sandbox_still_ends(make_env: Any) -> None:
    """`__del__` closes it (mini-swe-agent's benchmark runners never call close)."""
    import gc

    env = SandboxEnvironment()
    sandbox, workdir = env.sandbox, Path(env.sandbox.workdir)
    assert env.execute({"command": "echo x > f"})["returncode"] == 0
    del env
    gc.collect()
    assert not sandbox.is_alive()
    assert not workdir.exists()


def test_profile_and_limits_are_passed_on(make_env: Any) -> None:
    env = make_env(profile="strict", limits={"processes": 64})
    assert env.sandbox.profile.name == "strict"
    assert env.execute({"command": "ulimit -u"})["output"] == "64\n"
    assert make_env(profile="strict").execute({"command": "ulimit -u"})["output"] == "128\n"


# -- confinement and the record -----------------------------------------------------------


def test_actions_run_confined(make_env: Any) -> None:
    env, other = make_env(), make_env()
    workdir = Path(env.sandbox.workdir)
    agent_uid = workdir.stat().st_uid
    assert agent_uid != 0
    ids = env.execute({"command": "id -u; id -g"})["output"].split()
    assert ids == [str(agent_uid), str(workdir.stat().st_gid)]

    for target in ("/etc/ringfence-msw-probe", "/usr/ringfence-msw-probe",
                   "/root/ringfence-msw-probe", "/srv/ringfence-msw-probe"):
        result = env.execute({"command": f"echo x > {target}"})
        assert result["returncode"] != 0, target
        assert not Path(target).exists(), target
    assert env.execute({"command": "echo x > inside.txt"})["returncode"] == 0
    assert (workdir / "inside.txt").stat().st_uid == agent_uid
    # another fresh sandbox's workspace belongs to another agent user: out of reach
    assert Path(other.sandbox.workdir).stat().st_uid != agent_uid
    for command in (f"ls {other.sandbox.workdir}", f"touch {other.sandbox.workdir}/x"):
        result = env.execute({"command": command})
        assert result["returncode"] != 0 and "Permission denied" in result["output"], command

    # network none: loopback only, and the host's loopback is out of reach
    links = env.execute({"command": "ls /sys/class/net"})["output"].split()
    assert links == ["lo"]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = f"echo hi > /dev/tcp/127.0.0.1/{port} && echo connected"
        result = env.execute({"command": probe})
        assert result["returncode"] != 0 and "connected" not in result["output"]
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()


def test_every_action_is_recorded(env: SandboxEnvironment) -> None:
    commands = ["echo one", "ls -la", "false", "echo 'quoted \"text\"' >&2"]
    for command in commands:
        env.execute({"command": command})
    rows = Store().commands(env.sandbox.id)
    assert [r["source"] for r in rows] == ["exec"] * len(commands)
    assert [r["text"] for r in rows] == [
        f"bash -c {q} 2>&1" for q in ("'echo one'", "'ls -la'", "false",
                                       "'echo '\"'\"'quoted \"text\"'\"'\"' >&2'")]
    assert [r["exit_code"] for r in rows] == [0, 0, 1, 0]
    assert rows[0]["output"] == "one\n" and rows[3]["output"] == 'quoted "text"\n'


def test_guard_blocks_an_action(env: SandboxEnvironment) -> None:
    result = env.execute({"command": "cd /tmp && nmap -p1 127.0.0.1"})
    assert result["returncode"] == 126
    assert "blocked by guard rule recon.scanner_tools" in result["output"]
    assert result["extra"]["blocked"] is True
    assert any(a["rule"] == "recon.scanner_tools" for a in result["extra"]["alerts"])
    assert env.execute({"command": "echo still-running"})["output"] == "still-running\n"


# -- in an image (`image`, as DockerEnvironment's) ------------------------------------------


def test_actions_run_in_an_image(images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """`image` and `cwd` as in a DockerEnvironment config (SWE-bench's `cwd: /testbed`):
    the root is the stored image's (its Env, none of the host's programs), the workspace
    is at `cwd`, and every action is in the store like any session's."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    env = get_environment({"environment_class": CLASS_PATH, "image": images.deb,
                           "cwd": "/testbed", "env": {"MINE": "set"}})
    try:
        assert isinstance(env, SandboxEnvironment)
        command = ("grep ^VERSION_CODENAME= /etc/os-release; echo $IMAGE_VAR $MINE; pwd; "
                   "test -e /usr/bin/firejail || echo no-firejail; echo made > out.txt")
        assert env.execute({"command": command}) == {
            "output": "VERSION_CODENAME=bookworm\nfrom-the-image set\n/testbed\nno-firejail\n",
            "returncode": 0, "exception_info": ""}
        assert Path("/usr/bin/firejail").exists() and not Path("/testbed").exists()
        # the workspace at /testbed is the sandbox's (host) workspace
        assert (Path(env.sandbox.workdir) / "out.txt").read_text() == "made\n"
        assert env.sandbox.inside_workdir == "/testbed"
        assert env.get_template_vars()["workdir"] == "/testbed"
        assert env.serialize()["info"]["sandbox"]["image"] == images.deb
        assert env.execute({"command": "echo x > /etc/probe"})["returncode"] != 0  # not root
        sid = env.sandbox.id
        rows = Store().commands(sid)
        assert [r["source"] for r in rows] == ["exec", "exec"]
        assert rows[0]["text"] == f"bash -c {shlex.quote(command)} 2>&1"
        assert rows[0]["output"].startswith("VERSION_CODENAME=bookworm\nfrom-the-image")
        assert Store().get_session(sid)["resources"]["image_root"]["image"] == images.deb
    finally:
        env.close()  # type: ignore[attr-defined]
    assert Store().get_session(sid)["state"] == "exited"


def test_default_cwd_in_an_image_is_its_working_dir(
        make_env: Any, images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cwd: ""`: the image's WorkingDir, seeded with what the image holds there (the
    task's repository stays visible and is the agent's to edit); `cwd: /` runs at the
    image's root, the workspace at its default place."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    env = make_env(image=images.layered)
    assert env.execute({"command": "pwd; cat README; echo edit >> README"})["output"] \
        == "/srv/task\nthe task's repository\n"
    assert (Path(env.sandbox.workdir) / "README").read_text() \
        == "the task's repository\nedit\n"
    rooted = make_env(image=images.deb, cwd="/")
    assert rooted.execute({"command": "pwd; echo $IMAGE_VAR"})["output"] \
        == "/\nfrom-the-image\n"
    assert rooted.sandbox.inside_workdir == "/workspace"


def test_example_runs_in_an_image(images: Images, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's image variant: examples/minisweagent_example.py --image NAME."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "minisweagent_example.py"),
         "--image", images.py],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "MSWEA_SILENT_STARTUP": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exit status: Submitted" in proc.stdout
    assert "return a + b" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("record of"))
    assert header.endswith(f" in image {images.py}:")
    sid = header.split()[3]
    assert Store().get_session(sid)["resources"]["image_root"]["image"] == images.py
    rows = Store().commands(sid)
    assert [r["source"] for r in rows] == ["exec"] * 6
    assert rows[0]["output"].startswith('PRETTY_NAME="Debian GNU/Linux 12')


# -- DefaultAgent end to end --------------------------------------------------------------


def test_default_agent_end_to_end(env: SandboxEnvironment, tmp_path: Path) -> None:
    actions = [
        "printf 'def add(a, b):\\n    return a - b\\n' > calc.py",
        "sed -i 's/a - b/a + b/' calc.py && python3 -c 'import calc; print(calc.add(2, 3))'",
        "ls /nonexistent-dir",
        f"echo {MARKER} && cat calc.py",
    ]
    model = DeterministicModel(outputs=[
        make_output(f"THOUGHT: step {i}\n\n```mswea_bash_command\n{a}\n```", [{"command": a}])
        for i, a in enumerate(actions)])
    trajectory = tmp_path / "traj.json"
    agent = DefaultAgent(model, env, **agent_config(), output_path=trajectory)
    result = agent.run("Fix add() in calc.py")

    assert result["exit_status"] == "Submitted"
    assert result["submission"] == "def add(a, b):\n    return a + b\n"
    observations = [m for m in agent.messages if m["role"] == "user"][1:]
    assert [m["extra"]["returncode"] for m in observations] == [0, 0, 2]
    assert observations[1]["extra"]["raw_output"] == "5\n"
    assert "No such file or directory" in observations[2]["extra"]["raw_output"]

    rows = Store().commands(env.sandbox.id)
    assert [r["source"] for r in rows] == ["exec"] * len(actions)
    assert [r["text"].removeprefix("bash -c ").removesuffix(" 2>&1") for r in rows] \
        == [shlex.quote(a) for a in actions]
    assert [r["exit_code"] for r in rows] == [0, 0, 2, 0]

    saved = json.loads(trajectory.read_text())
    assert saved["info"]["exit_status"] == "Submitted"
    assert saved["info"]["config"]["environment_type"] == CLASS_PATH
    assert saved["info"]["sandbox"]["id"] == env.sandbox.id


def test_agent_from_config_dicts_as_mini_builds_it() -> None:
    """model, environment and agent from config tables, the way `mini` wires them."""
    model = get_model(config={
        "model_class": "minisweagent.models.test_models.DeterministicModel",
        "model_name": "deterministic",
        "outputs": [make_output("", [{"command": "whoami > who.txt"}]),
                    make_output("", [{"command": f"echo {MARKER}; cat who.txt"}])]})
    env = get_environment({"environment_class": CLASS_PATH, "network": "none"})
    try:
        agent = get_agent(model, env, {**agent_config(), "step_limit": 5},
                          default_type="default")
        result = agent.run("who am i")
        assert result["exit_status"] == "Submitted"
        assert result["submission"].startswith("sandbox-agent")
        assert len(Store().commands(env.sandbox.id)) == 2  # type: ignore[attr-defined]
    finally:
        env.close()  # type: ignore[attr-defined]


def test_agent_run_ends_when_the_guard_kills_the_sandbox(env: SandboxEnvironment) -> None:
    """A kill rule (a miner) ends the session; the agent stops with "SandboxClosed"
    instead of looping on dead actions."""
    model = DeterministicModel(outputs=[
        make_output("", [{"command": "echo fine"}]),
        make_output("", [{"command": "xmrig -o stratum+tcp://pool.invalid:3333"}]),
        make_output("", [{"command": "echo never"}]),
        make_output("", [{"command": f"echo {MARKER}"}]),
    ])
    agent = DefaultAgent(model, env, **{**agent_config(), "step_limit": 10})
    result = agent.run("mine")
    assert result["exit_status"] == "SandboxClosed"
    assert result["sandbox_id"] == env.sandbox.id
    assert model.current_index == 2  # the third action found the sandbox gone
    assert not env.sandbox.is_alive()
    rows = Store().commands(env.sandbox.id)
    assert "never" not in " ".join(r["text"] for r in rows)


def test_mini_cli_with_the_shipped_config(test_dir: Path) -> None:
    """`mini -c mini.yaml -c examples/minisweagent.yaml`: the env is never closed by mini,
    so the sandbox ends at interpreter exit, promptly (a `__del__` run inside that
    teardown once waited 30 s for it)."""
    model = test_dir / "model.yaml"
    model.write_text(yaml.safe_dump({"model": {
        "model_class": "minisweagent.models.test_models.DeterministicModel",
        "model_name": "deterministic",
        "outputs": [make_output("look", [{"command": "id -un; pwd"}]),
                    make_output("done", [{"command": f"echo {MARKER}; echo ok"}])]}}))
    trajectory = test_dir / "traj.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "minisweagent.run.mini", "-c", "mini.yaml",
         "-c", str(REPO / "examples" / "minisweagent.yaml"), "-c", str(model),
         "-t", "who am i", "--yolo", "--exit-immediately", "-o", str(trajectory)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "MSWEA_CONFIGURED": "true", "MSWEA_SILENT_STARTUP": "1",
             "MSWEA_GLOBAL_CONFIG_DIR": str(test_dir / "mswea")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 20, proc.stderr
    assert "still running" not in proc.stderr
    saved = json.loads(trajectory.read_text())
    assert saved["info"]["exit_status"] == "Submitted"
    assert saved["info"]["submission"] == "ok\n"
    sid = saved["info"]["sandbox"]["id"]
    rows = Store().commands(sid)
    assert [r["source"] for r in rows] == ["exec", "exec"]
    assert rows[0]["output"].startswith("sandbox-agent")
    assert Store().get_session(sid)["state"] == "exited"
