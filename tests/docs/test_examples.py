"""Every example in README.md and docs/*.md is checked by the suite, so none can go stale.

Each fenced block is one test, named by its page and line:
- ```python runs as a script (the venv's Python, a fresh root-owned directory as the cwd,
  so `Sandbox()` gets a fresh workspace as the docs say, a store of the test's own, a
  bounded time), unless an HTML comment right above it says why it cannot run here:
  `<!-- example: calls a real model -->`. The marker must give a reason; such a block
  must still compile and its imports from `sandbox` must exist.
- ```toml is a profile fragment: the project's profile loader must accept it as a file.
- ```sh lines that run `sandbox` (or `scripts/sandbox`, `.venv/bin/sandbox`) are parsed
  by the real CLI parser without running, so a renamed flag or verb fails here; a few
  read-only verbs also run. Paths into the checkout (`examples/...`, `scripts/...`) and
  modules run with `python -m` must exist.
- ```yaml (mini-swe-agent's config) must load, and its `environment:` keys must be
  arguments its `environment_class` takes.
Blocks without a language are sample output (the front door test compares the quick
start's). A fenced block in another language fails until this file learns it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sandbox.cli import build_parser
from sandbox.jail import profile
from tests.helpers import sandbox_cli

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LANGS = {"python", "toml", "sh", "yaml", ""}
# An example runs a few sandboxes at most; a minute each is generous on a loaded 2-core box.
RUN_TIMEOUT_S = 180
MARKER = re.compile(r"<!--\s*example:\s*(.*?)\s*-->\s*$")
# The names the `sandbox` command goes by in the docs.
SANDBOX_COMMANDS = {"sandbox", "scripts/sandbox", ".venv/bin/sandbox"}
# Verbs cheap and harmless enough to run as written (they only read the store/profiles).
RUNNABLE_VERBS = {"ls", "profiles"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str  # the marker's reason, "" when the block must run

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of one page, with the `<!-- example: ... -->` marker above each."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(above.strip())
        found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:end]) + "\n",
                           marker.group(1) if marker else ""))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]


def _of(lang: str) -> list[object]:
    return [pytest.param(b, id=b.name) for b in ALL if b.lang == lang]


def test_every_block_has_a_known_language() -> None:
    """A block this file does not know how to check would go stale unnoticed."""
    unknown = [(b.name, b.lang) for b in ALL if b.lang not in LANGS]
    assert not unknown, f"fenced blocks in a language tests/docs cannot check: {unknown}"


def test_markers_give_a_reason_and_are_few() -> None:
    """A block is excused from running only with a reason, and only a few are."""
    marked = [b for b in ALL if b.skip]
    assert all(len(b.skip) > 10 for b in marked), [(b.name, b.skip) for b in marked]
    assert all(b.lang == "python" for b in marked), [b.name for b in marked]
    assert len(marked) <= 6, [b.name for b in marked]


@pytest.mark.slow
@pytest.mark.parametrize("block", _of("python"))
def test_python_example_runs(block: Block, test_dir: Path) -> None:
    """A Python example runs to the end, as pasted, in a root-owned directory."""
    if block.skip:
        _check_imports(block)
        pytest.skip(block.skip)
    cwd = test_dir / f"example-{uuid.uuid4().hex[:6]}"
    cwd.mkdir()
    try:
        r = subprocess.run([sys.executable, "-c", block.code], cwd=cwd, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{block.name} ran past {RUN_TIMEOUT_S} s:\n{block.code}\n{e.stderr!r}")
    assert r.returncode == 0, f"{block.name} failed:\n{block.code}\n{r.stdout}\n{r.stderr}"


def _check_imports(block: Block) -> None:
    """What a block excused from running can still be checked: it compiles (top-level
    `await` allowed, as in a notebook) and every name it imports from `sandbox` exists."""
    tree = ast.parse(block.code)
    compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    ours = [f"from {n.module} import {', '.join(a.name for a in n.names)}"
            for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and (n.module or "").split(".")[0] == "sandbox"]
    r = subprocess.run([sys.executable, "-c", "\n".join(ours)], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert r.returncode == 0, f"{block.name}: its imports fail:\n{r.stderr}"


@pytest.mark.parametrize("block", _of("toml"))
def test_toml_example_is_a_valid_profile(block: Block, test_dir: Path) -> None:
    """A profile fragment loads with the project's own loader (unknown keys, wrong types
    and bad values are errors there)."""
    path = test_dir / "example.toml"
    path.write_text(block.code)
    loaded = profile.load(str(path))
    assert loaded.sources == [str(path.resolve())]


def _commands(code: str) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments dropped,
    split at pipes, `;`, `&&`, `||` and `&`, redirections removed."""
    text = code.replace("\\\n", " ")
    out: list[list[str]] = []
    for line in text.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        current: list[str] = []
        tokens = iter(list(lex))
        for tok in tokens:
            if tok in ("|", "||", "&&", ";", "&", "(", ")"):
                out.append(current)
                current = []
            elif set(tok) <= set("<>&") and tok:
                next(tokens, None)  # the redirection's target
                if current and current[-1].isdigit():
                    current.pop()  # the fd of `2>&1`
            else:
                current.append(tok)
        out.append(current)
    return [c for c in out if c]


def _sandbox_argv(cmd: list[str]) -> list[str] | None:
    """The arguments after `sandbox` when `cmd` runs the sandbox command, else None."""
    while cmd and re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0]):
        cmd = cmd[1:]  # VAR=value prefixes
    if cmd and cmd[0] in SANDBOX_COMMANDS:
        return cmd[1:]
    return None


def _parse(argv: list[str]) -> str:
    """Parse with the real CLI parser; the parser's complaint, or "" when it accepts."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        return err.getvalue() or f"exit {e.code}"
    return ""


def test_shell_splitting_sees_every_sandbox_command() -> None:
    """The splitter this file relies on: pipes, lists, continuations and comments."""
    code = ("sandbox kill ID        |  sandbox kill --all    # a comment\n"
            "sandbox show ID; sandbox logs -f ID\n"
            "X=1 sandbox ls --json | python -c 'import sys; print(1)' \\\n"
            "  | xargs -n1 sandbox verify 2>&1\n")
    argvs = [_sandbox_argv(c) for c in _commands(code)]
    assert [a for a in argvs if a is not None] == [
        ["kill", "ID"], ["kill", "--all"], ["show", "ID"], ["logs", "-f", "ID"],
        ["ls", "--json"]]
    assert _parse(["kill", "--no-such-flag", "ID"]) != ""


@pytest.mark.parametrize("block", _of("sh"))
def test_shell_example_parses(block: Block) -> None:
    """Every `sandbox ...` line of a shell example is one the CLI accepts; the paths into
    the checkout and the modules (`python -m M`) it names exist; the read-only ones run."""
    commands = _commands(block.code)
    for cmd in commands:
        for word in cmd:
            m = re.match(r"^(?:\./)?((?:examples|scripts|profiles|bench)/[\w./-]+)", word)
            if m:
                assert (REPO / m.group(1)).exists(), f"{block.name}: no {m.group(1)} in the checkout"
        if Path(cmd[0]).name.startswith("python") and "-m" in cmd[:-1]:
            module = cmd[cmd.index("-m") + 1]
            assert importlib.util.find_spec(module), f"{block.name}: no module {module}"
        argv = _sandbox_argv(cmd)
        if argv is None:
            continue
        problem = _parse(argv)
        assert not problem, f"{block.name}: `{shlex.join(cmd)}` does not parse:\n{problem}"
        if argv and argv[0] in RUNNABLE_VERBS and not any(w.isupper() for w in argv):
            r = sandbox_cli(*argv, timeout=60)
            assert r.returncode == 0, f"{block.name}: `{shlex.join(cmd)}`: {r.stderr}"


@pytest.mark.parametrize("block", _of("yaml"))
def test_yaml_example_configures_its_environment(block: Block) -> None:
    """A mini-swe-agent config: its environment class imports and takes every key given."""
    data = yaml.safe_load(block.code)
    env = dict(data["environment"])
    module, _, name = env.pop("environment_class").rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    params = inspect.signature(cls).parameters
    # mini-swe-agent's environments take their keys as a pydantic config (`config_class`),
    # which would ignore a misspelt one: check against the config's own fields.
    config = params["config_class"].default if "config_class" in params else None
    known = set(config.model_fields) if config is not None else set(params)
    assert set(env) <= known, f"{block.name}: {cls.__name__} takes no {set(env) - known}"
    if config is not None:
        config(**env)  # and the values are of the types it takes


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [pytest.param(p, id=str(p.relative_to(REPO)))
                                  for p in [*PAGES, REPO / "bench" / "README.md"]])
def test_links_lead_somewhere(page: Path) -> None:
    """Every relative link of the docs names a file of the checkout, and an anchor one of
    that page's headings (what moved out of the README must not leave links behind)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.relative_to(REPO)}: link to missing {target}"
        if anchor:
            titles = re.findall(r"^#+ (.*)$", dest.read_text(), re.M)
            assert anchor in {_anchor(t) for t in titles}, f"{page.relative_to(REPO)}: {target}"


REPO_PATH = re.compile(r"(?<![\w/.~$-])((?:sandbox|tui|tests|bench|scripts|examples|profiles)/[\w./-]*\w/?)")
# What bench/run writes (the checkout does not carry it until a run).
GENERATED = {"bench/.peers", "bench/results/latest.json"}


@pytest.mark.parametrize("page", [pytest.param(p, id=str(p.relative_to(REPO))) for p in PAGES])
def test_paths_named_exist(page: Path) -> None:
    """A file of the checkout the docs name (`sandbox/jail/firejail.py`, `tests/guard/benign.py`,
    `examples/...`) is there: a module moved without its docs fails here."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # examples name jail paths
    missing = sorted({p for p in REPO_PATH.findall(prose)
                      if p not in GENERATED and not (REPO / p).exists()})
    assert not missing, f"{page.relative_to(REPO)} names paths the checkout lacks: {missing}"
