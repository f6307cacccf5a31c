"""A LangChain Deep Agent whose shell and files live in a ringfence sandbox.

Runs offline as is (as root, like every sandbox): a scripted chat model stands in for
a real one, calls the `execute` and `write_file` tools, then answers from what the
sandbox printed.

    sudo .venv/bin/python examples/deepagents_example.py
    sudo .venv/bin/python examples/deepagents_example.py --image python:3.12-slim

`--image NAME` runs the sandbox in that stored image instead of the host's filesystem
(`SandboxProvider(image=NAME)`; pull it once first: `sudo sandbox image pull
docker://python:3.12-slim python:3.12-slim`).

With a real model, pass it instead of `scripted_model(...)`, e.g.
`model="anthropic:claude-sonnet-4-5"` (needs langchain-anthropic and ANTHROPIC_API_KEY)
or `model="openai:gpt-5"` (langchain-openai, OPENAI_API_KEY); nothing else changes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from deepagents import create_deep_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult

from sandbox import Store
from sandbox.adapters.deepagents import SandboxProvider

Step = Callable[[list[BaseMessage]], AIMessage]


class ScriptedModel(GenericFakeChatModel):
    """A stand-in chat model: each turn is the next step of a script, a function of the
    conversation so far. (The fake models in langchain-core do not bind tools.)"""

    steps: Iterator[Step]

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> ScriptedModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.messages = iter([next(self.steps)(messages)])
        return super()._generate(messages, stop, run_manager, **kwargs)


def scripted_model(workdir: str) -> ScriptedModel:
    def run_uname(_: list[BaseMessage]) -> AIMessage:
        return AIMessage(content="", tool_calls=[{
            "name": "execute", "id": "call-1",
            "args": {"command": "echo hello from $(id -un) in $PWD; python3 --version"}}])

    def write_notes(_: list[BaseMessage]) -> AIMessage:
        return AIMessage(content="", tool_calls=[{
            "name": "write_file", "id": "call-2",
            "args": {"file_path": f"{workdir}/notes.md", "content": "# Notes\nsandbox ok\n"}}])

    def answer(messages: list[BaseMessage]) -> AIMessage:
        said = next(m for m in messages if isinstance(m, ToolMessage)
                    and m.tool_call_id == "call-1")
        first_line = str(said.content).splitlines()[0]
        return AIMessage(content=f"The sandbox says: {first_line}")

    return ScriptedModel(messages=iter(()), steps=iter([run_uname, write_notes, answer]))


def main(image: str | None = None) -> None:
    with SandboxProvider(network="none", image=image) as provider:  # deleted on leaving `with`
        backend = provider.get_or_create()
        agent = create_deep_agent(
            model=scripted_model(backend.workdir),
            backend=backend,
            system_prompt=f"You work in a sandbox. Use absolute paths under "
                          f"{backend.workdir}; nothing else is writable.")
        result = agent.invoke(
            {"messages": [{"role": "user", "content": "Who are you in there? Take notes."}]})
        print("agent:", result["messages"][-1].content)
        print("notes.md:", backend.download_files([f"{backend.workdir}/notes.md"])[0].content)
        print(f"sandbox {backend.id}" + (f" in image {image}" if image else ""))
        for row in Store().commands(backend.id):
            print(f"recorded: [{row['exit_code']}] {row['text'][:100]!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="a stored image (`sandbox image ls`) to run in")
    main(parser.parse_args().image)
