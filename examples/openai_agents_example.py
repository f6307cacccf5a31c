"""An OpenAI Agents SDK `SandboxAgent` whose shell and file tools run in a firejail jail.

    sudo .venv/bin/python examples/openai_agents_example.py            # offline, scripted model
    sudo OPENAI_API_KEY=sk-... .venv/bin/python examples/openai_agents_example.py --model gpt-5.4
    sudo .venv/bin/python examples/openai_agents_example.py --image python:3.12-slim  # in an image

Offline it drives the agent with the SDK's `ScriptedModel` (canned tool calls, no network,
no API key), so you can watch the jail and the record without spending a token. With
`--model` a real model decides what to run; the model call goes out from this (host)
process, while every command it asks for runs in the jail (`network="none"` here).
With `--image NAME` the jail's root is that stored image instead of the host's filesystem
(pull it once first: `sudo sandbox image pull docker://python:3.12-slim python:3.12-slim`).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from agents import Model, RunConfig, Runner, set_tracing_disabled
from agents.items import ToolCallOutputItem
from agents.sandbox import SandboxAgent, SandboxRunConfig
from agents.sandbox.snapshot import NoopSnapshotSpec
from agents.testing import ScriptedModel, assistant_message, function_call
from openai.types.responses import ResponseCustomToolCall

from sandbox import Store
from sandbox.adapters.openai_agents import FirejailSandboxClient, FirejailSandboxClientOptions

TASK = "Write fizzbuzz.py printing FizzBuzz for 1..15, run it, and tell me line 15."

PATCH = """*** Begin Patch
*** Add File: fizzbuzz.py
+for i in range(1, 16):
+    print("FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else i)
*** End Patch
"""


def scripted_model() -> Model:
    """What a model would do for TASK, as canned responses (one list per model turn)."""
    return ScriptedModel([
        [function_call("exec_command", {"cmd": "id; pwd; head -1 /etc/os-release"},
                       call_id="c1")],
        [ResponseCustomToolCall(type="custom_tool_call", name="apply_patch", input=PATCH,
                                call_id="c2", id="c2")],
        [function_call("exec_command", {"cmd": "python3 fizzbuzz.py | tail -1"},
                       call_id="c3")],
        [function_call("exec_command", {"cmd": "curl -sS -m 5 https://example.test"},
                       call_id="c4")],
        [assistant_message("Line 15 is FizzBuzz.")],
    ])


async def main(model_name: str | None, image: str | None = None) -> None:
    if model_name is None:
        os.environ.setdefault("OPENAI_API_KEY", "sk-offline-not-used")
        set_tracing_disabled(True)
    agent = SandboxAgent(
        name="coder",
        instructions="You are a careful engineer. Work in the sandbox workspace.",
        model=model_name if model_name is not None else scripted_model(),
    )
    client = FirejailSandboxClient()
    result = await Runner.run(agent, TASK, run_config=RunConfig(sandbox=SandboxRunConfig(
        client=client,
        options=FirejailSandboxClientOptions(profile="default", network="none", image=image),
        snapshot=NoopSnapshotSpec(),  # the workspace dies with the jail; see the README
    )))

    for item in result.new_items:
        if isinstance(item, ToolCallOutputItem):
            print("--- tool output\n" + str(item.output).strip())
    print("--- final output:", result.final_output)

    for sandbox_id in client.sandbox_ids:
        where = f" in image {image}" if image else ""
        print(f"--- the record of jail {sandbox_id}{where} (sandbox logs {sandbox_id})")
        for c in Store().commands(sandbox_id):
            print(f"  [{c['exit_code']}] {c['text'][:100]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a real model name (needs OPENAI_API_KEY)")
    parser.add_argument("--image", help="a stored image (`sandbox image ls`) to run in")
    args = parser.parse_args()
    asyncio.run(main(args.model, args.image))
