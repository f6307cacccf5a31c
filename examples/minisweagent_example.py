"""mini-swe-agent with every action run in a ringfence sandbox.

    python examples/minisweagent_example.py                  # scripted model: no API key
    python examples/minisweagent_example.py --model anthropic/claude-sonnet-4-5 \\
        --task "Write fizzbuzz.py and test it"               # a real model (litellm)
    python examples/minisweagent_example.py --image python:3.12-slim   # in a stored image

`--image NAME` runs every action in that image instead of the host's filesystem (the
environment's `image`, as mini-swe-agent's DockerEnvironment takes it); pull it once
first: `sudo sandbox image pull docker://python:3.12-slim python:3.12-slim`.

The scripted run uses mini-swe-agent's own `DeterministicModel`: it writes a buggy file,
fixes it, tests it and submits. With `--model`, the agent and model settings come from
mini-swe-agent's built-in `mini.yaml` and the environment from examples/minisweagent.yaml.
Afterwards the sandbox's record (every action, as the store holds it) is printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")

import yaml
from minisweagent.agents.default import DefaultAgent
from minisweagent.config import builtin_config_dir
from minisweagent.environments import get_environment
from minisweagent.models import get_model
from minisweagent.models.test_models import DeterministicModel, make_output

from sandbox import Store

HERE = Path(__file__).resolve().parent

SCRIPT = [
    "head -1 /etc/os-release; python3 --version",
    "printf 'def add(a, b):\\n    return a - b\\n' > calc.py",
    "python3 -c 'import calc; assert calc.add(2, 3) == 5' || echo 'add is wrong'",
    "sed -i 's/a - b/a + b/' calc.py && python3 -c 'import calc; print(calc.add(2, 3))'",
    "curl -sS --max-time 3 https://example.test || echo 'no network, as configured'",
    "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && cat calc.py",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a litellm model name; default: the scripted model")
    parser.add_argument("--task", default="Fix add() in calc.py so that add(2, 3) == 5.")
    parser.add_argument("--image", help="a stored image (`sandbox image ls`) to run in")
    args = parser.parse_args()

    env_config = yaml.safe_load((HERE / "minisweagent.yaml").read_text())["environment"]
    if args.image:
        env_config["image"] = args.image
    if args.model:
        mini = yaml.safe_load((builtin_config_dir / "mini.yaml").read_text())
        model = get_model(args.model, mini["model"])
        agent_config: dict[str, Any] = mini["agent"]
    else:
        default = yaml.safe_load((builtin_config_dir / "default.yaml").read_text())
        model = DeterministicModel(outputs=[
            make_output(f"THOUGHT: step {i}\n\n```mswea_bash_command\n{cmd}\n```",
                        [{"command": cmd}], cost=0.0)
            for i, cmd in enumerate(SCRIPT)])
        agent_config = default["agent"]

    env = get_environment(env_config)  # sandbox.adapters.minisweagent.SandboxEnvironment
    try:
        agent = DefaultAgent(model, env, **{**agent_config, "step_limit": 30})
        result = agent.run(args.task)
        sandbox_id = env.sandbox.id  # type: ignore[attr-defined]
        print(f"exit status: {result['exit_status']}")
        print(f"submission:\n{result['submission']}")
        where = f" in image {args.image}" if args.image else ""
        print(f"record of sandbox {sandbox_id}{where}:")
        for row in Store().commands(sandbox_id):
            print(f"  [{row['source']}] exit={row['exit_code']} {row['text']}")
    finally:
        env.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
