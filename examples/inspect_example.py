"""An inspect-ai task whose bash() tool runs in a ringfence (firejail) sandbox.

    inspect eval examples/inspect_example.py --display none
    python examples/inspect_example.py

The model is inspect's `mockllm/model`, scripted: it calls bash() once to write a file
and echo it, then answers. Swap in a real model with `--model` and `scripted=false`
(`-T scripted=false`). Each sample runs in its own sandbox; `sandbox ls` and
`sandbox show ID` list every command the agent ran.
"""

from __future__ import annotations

from inspect_ai import Task, eval, task
from inspect_ai.dataset import Sample
from inspect_ai.model import Model, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer
from inspect_ai.solver import TaskState, generate, use_tools
from inspect_ai.tool import bash
from inspect_ai.util import sandbox

COMMAND = "echo hello from the jail > greeting.txt && cat greeting.txt && id -un"


def scripted_model() -> Model:
    """A mock model that calls bash() once, then gives its answer."""
    call = ModelOutput.for_tool_call("mockllm/model", "bash", {"command": COMMAND})
    answer = ModelOutput.from_content("mockllm/model", "I wrote greeting.txt.")
    for output in (call, answer):  # with usage given, mockllm counts no tokens (tiktoken
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # downloads)
    return get_model("mockllm/model", memoize=False, custom_outputs=[call, answer])


@scorer(metrics=[accuracy()])
def file_written():  # type: ignore[no-untyped-def]
    """Correct when the sandbox's greeting.txt holds the target text."""

    async def score(state: TaskState, target: Target) -> Score:
        try:
            text = await sandbox().read_file("greeting.txt")
        except FileNotFoundError:
            return Score(value=INCORRECT, explanation="greeting.txt was not written")
        return Score(value=CORRECT if target.text in text else INCORRECT, answer=text)

    return score


@task
def ringfence_hello(scripted: bool = True) -> Task:
    return Task(
        dataset=[Sample(input="Write 'hello from the jail' to greeting.txt and show it.",
                        target="hello from the jail")],
        solver=[use_tools(bash(timeout=60)), generate()],
        scorer=file_written(),
        # a profile name ("default", "strict", ...) or a profile file; "firejail" alone
        # is the default profile
        sandbox=("firejail", "inspect/profile.toml"),
        model=scripted_model() if scripted else None,
    )


if __name__ == "__main__":
    eval(ringfence_hello(), display="none")
