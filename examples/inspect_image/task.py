"""An inspect-ai task that runs in its own image, from the compose.yaml beside it.

    sandbox image pull docker://python:3.12-slim python:3.12-slim   # once, as root
    inspect eval examples/inspect_image/task.py --display none

`sandbox="firejail"` alone finds `compose.yaml` next to the task, as inspect's docker
provider does (and `--sandbox firejail` on a docker task forwards that task's compose
file). The default service's `image`, `working_dir` and `environment` are honoured; the
jail, its record and its egress are the same as without an image. `-T image=NAME` runs
another stored image instead (the tests use one they build themselves).
"""

from __future__ import annotations

from pathlib import Path

from inspect_ai import Task, eval, task
from inspect_ai.dataset import Sample
from inspect_ai.model import Model, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer
from inspect_ai.solver import TaskState, generate, use_tools
from inspect_ai.tool import bash
from inspect_ai.util import SandboxEnvironmentSpec, sandbox

from sandbox.adapters.inspect_ai import FirejailSandboxConfig

COMMAND = "python --version > report.txt && pwd >> report.txt && echo $TASK_LEVEL >> " \
          "report.txt && cat report.txt"


def scripted_model() -> Model:
    """A mock model that calls bash() once, then gives its answer."""
    call = ModelOutput.for_tool_call("mockllm/model", "bash", {"command": COMMAND})
    answer = ModelOutput.from_content("mockllm/model", "I wrote report.txt.")
    for output in (call, answer):
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    return get_model("mockllm/model", memoize=False, custom_outputs=[call, answer])


@scorer(metrics=[accuracy()])
def python_ran():  # type: ignore[no-untyped-def]
    """Correct when the image's python ran in the compose file's working_dir."""

    async def score(state: TaskState, target: Target) -> Score:
        try:
            text = await sandbox().read_file("report.txt")
        except FileNotFoundError:
            return Score(value=INCORRECT, explanation="report.txt was not written")
        ok = text.startswith("Python ") and target.text in text
        return Score(value=CORRECT if ok else INCORRECT, answer=text)

    return score


@task
def ringfence_image(image: str | None = None, scripted: bool = True) -> Task:
    # "firejail" alone: the provider takes compose.yaml from the task's directory
    spec: str | SandboxEnvironmentSpec = "firejail"
    if image:  # the compose file's settings, with another image
        spec = SandboxEnvironmentSpec("firejail", FirejailSandboxConfig(
            compose=str(Path(__file__).with_name("compose.yaml")), image=image))
    return Task(
        dataset=[Sample(input="Report the Python version, where you are and the level.",
                        target="/srv/task\neasy")],
        solver=[use_tools(bash(timeout=60)), generate()],
        scorer=python_ran(),
        sandbox=spec,
        model=scripted_model() if scripted else None,
    )


if __name__ == "__main__":
    eval(ringfence_image(), display="none")
