"""mini-swe-agent environment: every action runs in a ringfence sandbox.

    environment:
      environment_class: sandbox.adapters.minisweagent.SandboxEnvironment
      profile: default          # or strict, pypi, ... (a profile name)
      network: none             # none | guarded | ["pypi.org:443", ...] | a [network] table
      timeout: 60
      image: python:3.12-slim   # optional: a stored image as the root filesystem

`SandboxEnvironment` has the semantics of mini-swe-agent's `LocalEnvironment`
(`minisweagent.environments.local`): each action is a fresh `bash -c` (nothing persists
between actions but the files), stdout and stderr are merged in the order they were
written, the result is `{"output", "returncode", "exception_info"}` (plus `"extra"` on an
exception), a timeout gives returncode -1 with the partial output, and an action whose
output starts with the line `COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` (exit 0) raises
`minisweagent.exceptions.Submitted` with the rest of the output as the submission.

What differs from the local environment, on purpose:

- the action runs inside the jail (`Sandbox.exec`): as the sandbox's agent user, the
  workspace the only writable tree, the profile's network (none by default), every action
  text-checked by the guard and recorded in the store (`Store().commands(env.sandbox.id)`,
  source "exec"). A timeout kills the whole process tree in the jail.
- the host environment is not inherited (the local environment passes `os.environ`): the
  jail's clean environment plus `env`, plus the host variables named in `forward_env`.
  `get_template_vars()` likewise leaves out the host's `os.environ`.
- the default `cwd` is the sandbox workspace (a fresh private one unless `workdir` is given),
  and a relative `cwd` is under it.
- an action the guard blocks comes back as returncode 126 with the guard's message as its
  output (`extra.blocked`); when the sandbox itself has ended (killed by a guard rule, or
  closed), `execute` raises `SandboxClosed`, an `InterruptAgentFlow` whose exit message ends
  the agent's run with exit_status "SandboxClosed" instead of looping on dead actions.

Images: `image` names a stored image (`sandbox image ls`; pull it first, `sudo sandbox
image pull docker://python:3.12-slim python:3.12-slim`) as the root filesystem instead of
the host's, as `DockerEnvironment`'s `image` names the container's (the same config keys
work: `image`, `cwd`, `env`, `forward_env`, `timeout`, `interpreter`). Without it (the
default) actions see the host's filesystem read-only. In an image an absolute `cwd` other
than `/` is also where the workspace goes (the profile's `[image] workdir`: seeded with
what the image holds there, so a SWE-bench `/testbed` stays the repository and is the
agent's to edit); `cwd: ""` is the image's WorkingDir (else /workspace), `/` runs actions
at the image's root with the workspace at that default place. The image's `Env` comes
first, under the profile's and `env`. `get_template_vars()["workdir"]` is the workspace
as actions see it (`env.sandbox.inside_workdir`); `env.sandbox.workdir` stays its host
path.

Lifecycle: the sandbox starts in `__init__` (as `DockerEnvironment` starts its container)
and ends in `close()` (alias `cleanup()`), also run by `__exit__` and, as a last resort, by
`__del__`. Call `close()` (or use `with`) when the run is over: a fresh workspace is
destroyed then, so copy out what you need before (`env.sandbox.download(...)`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import posixpath
import shlex
from typing import Any

from minisweagent.exceptions import InterruptAgentFlow, Submitted
from minisweagent.utils.serialize import recursive_merge
from pydantic import BaseModel

from ..doors.api import Sandbox
from ..doors.execute import ExecTimeout
from ..doors.options import spec_of
from ..errors import SessionClosed
from ..jail.profile import Profile, load, override
from ..result import ExecResult

SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


class SandboxEnvironmentConfig(BaseModel):
    """Keyword arguments of `SandboxEnvironment` (the `environment:` table of a config).
    Each field named as a `sandbox.doors.options.SandboxSpec` field is passed on to the
    sandbox as is (`env` with `forward_env` added)."""

    cwd: str = ""
    """Working directory of each action; "" is the sandbox workspace, relative is under it."""
    env: dict[str, str] = {}
    """Environment variables set for every action (on top of the jail's clean environment)."""
    forward_env: list[str] = []
    """Host environment variables to pass in when set on the host (`env` wins on conflict)."""
    timeout: int = 30
    """Seconds an action may run; then its whole process tree is killed (returncode -1)."""
    interpreter: list[str] = ["bash", "-c"]
    """The action is appended to this as one argument; stderr is merged into stdout."""
    profile: str = "default"
    """A ringfence profile name (see `sandbox profiles`)."""
    network: str | list[str] | dict[str, Any] | None = None
    """None: the profile's; "none", "guarded", a list of allowed `host:port`, or a table."""
    workdir: str | None = None
    """A host directory to use as the workspace (writable by the agent user); None: a fresh
    private workspace, destroyed at close."""
    limits: dict[str, Any] | None = None
    """A [limits] table replacing the profile's (memory_mib, pids, ...)."""
    gpu: int | dict[str, Any] | None = None
    """GPUs to pass in: a count or a [gpu] table."""
    image: str | None = None
    """A stored image's name or digest (`sandbox image ls`) as the root filesystem, as
    `DockerEnvironment`'s `image`; None: the host's filesystem (read-only). In an image an
    absolute `cwd` (not `/`) is where the workspace is mounted (`[image] workdir`)."""


class SandboxClosed(InterruptAgentFlow):
    """The sandbox has ended (a guard rule killed it, or it was closed): the agent's run
    ends with exit_status "SandboxClosed"."""


class SandboxEnvironment:
    """A mini-swe-agent `Environment` whose actions run in a ringfence `Sandbox`."""

    def __init__(self, *, config_class: type[SandboxEnvironmentConfig] = SandboxEnvironmentConfig,
                 **kwargs: Any) -> None:
        """See `SandboxEnvironmentConfig` for the keyword arguments."""
        self.config = config_class(**kwargs)
        env = {key: value for key in self.config.forward_env
               if (value := os.environ.get(key)) is not None}
        env.update(self.config.env)
        self.sandbox = Sandbox(self._profile(), **spec_of(self.config, env=env or None))
        self.sandbox.start()

    def _profile(self) -> Profile | str:
        """The profile; in an image with an absolute `cwd` below `/`, with that as its
        `[image] workdir` (`docker run -w`: the workspace goes there)."""
        cwd = posixpath.normpath(self.config.cwd) if self.config.cwd else ""
        if self.config.image is None or not cwd.startswith("/") or cwd in ("/", "//"):
            return self.config.profile
        return override(load(self.config.profile), {"image": {"workdir": cwd}},
                        "mini-swe-agent environment (cwd)")

    def execute(self, action: dict[str, Any], cwd: str = "", *, timeout: int | None = None
                ) -> dict[str, Any]:
        """Run the action's command in the sandbox and return the result as a dict."""
        command = action.get("command", "")
        where = cwd or self.config.cwd or None
        line = f"{shlex.join([*self.config.interpreter, command])} 2>&1"
        try:
            result = self.sandbox.exec(line, cwd=where, timeout=timeout or self.config.timeout)
            output: dict[str, Any] = {"output": _merged(result), "returncode": result.returncode,
                                      "exception_info": ""}
            extra: dict[str, Any] = {}
            if result.blocked:
                extra["blocked"] = True
            if result.truncated:
                extra["truncated"] = True
            if result.alerts:
                extra["alerts"] = result.alerts
            if extra:
                output["extra"] = extra
        except SessionClosed as e:
            raise SandboxClosed({
                "role": "exit",
                "content": f"The sandbox has ended: {e}",
                "extra": {"exit_status": "SandboxClosed", "submission": "",
                          "sandbox_id": self.sandbox.id},
            }) from e
        except Exception as e:
            raw, message = "", str(e)
            if isinstance(e, ExecTimeout):  # worded as subprocess.TimeoutExpired, as local's
                raw = _merged(e.result)
                limit = timeout or self.config.timeout
                message = f"Command {command!r} timed out after {limit} seconds"
            output = {
                "output": raw,
                "returncode": -1,
                "exception_info": f"An error occurred while executing the command: {message}",
                "extra": {"exception_type": type(e).__name__, "exception": message},
            }
        self._check_finished(output)
        return output

    def _check_finished(self, output: dict[str, Any]) -> None:
        """Raises Submitted if the output indicates task completion (as LocalEnvironment)."""
        lines = output.get("output", "").lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_MARKER and output["returncode"] == 0:
            submission = "".join(lines[1:])
            raise Submitted(
                {
                    "role": "exit",
                    "content": submission,
                    "extra": {"exit_status": "Submitted", "submission": submission},
                }
            )

    def get_template_vars(self, **kwargs: Any) -> dict[str, Any]:
        """The config, the kernel's uname, and the sandbox's id and workspace as actions
        see it (not the host's environment variables)."""
        ours = {"sandbox_id": self.sandbox.id, "workdir": self.sandbox.inside_workdir}
        return recursive_merge(self.config.model_dump(), platform.uname()._asdict(), ours, kwargs)

    def serialize(self) -> dict[str, Any]:
        return {
            "info": {
                "config": {
                    "environment": self.config.model_dump(mode="json"),
                    "environment_type": f"{self.__class__.__module__}.{self.__class__.__name__}",
                },
                "sandbox": {"id": self.sandbox.id, "workdir": self.sandbox.workdir,
                            **({"image": self.config.image,
                                "inside_workdir": self.sandbox.inside_workdir}
                               if self.config.image is not None else {})},
            }
        }

    def close(self) -> None:
        """End the sandbox (idempotent): its processes are killed, a fresh workspace is
        removed, the record stays in the store."""
        sandbox = getattr(self, "sandbox", None)  # __init__ may have failed before it
        if sandbox is not None:
            sandbox.close()

    cleanup = close

    def __enter__(self) -> SandboxEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        """Close a sandbox nobody closed (mini-swe-agent's runners never call close).
        Only a running one: a collection can run this inside the sandbox's own teardown
        (the atexit close imports, the import collects a cycle holding this env), and
        closing again there would wait for that very teardown."""
        sandbox = getattr(self, "sandbox", None)
        if sandbox is not None and sandbox.state == "running":
            with contextlib.suppress(Exception):  # interpreter shutdown: nothing to report to
                sandbox.close()


def _merged(result: ExecResult) -> str:
    """stdout (which carries stderr too: `2>&1`) and whatever still went to stderr (the
    guard's message for a blocked action)."""
    return result.stdout + result.stderr
