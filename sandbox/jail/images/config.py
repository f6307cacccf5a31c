"""An image's OCI config, read as `docker run` reads it.

The image spec's `config` object carries `Env`, `WorkingDir`, `User`, `Entrypoint` and
`Cmd`. Pure functions: a config dict in, what the sandbox does with it out, tested as
values. The one departure from Docker: `User` never makes the agent root. A root (or
empty) `User` runs as the sandbox's own agent user, a named one too (the image's uids
are not host users); only the image's environment and directories are taken as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import SetupError

DEFAULT_WORKDIR = "/workspace"


@dataclass(frozen=True)
class ImageConfig:
    """What a sandbox takes from an image's config."""

    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SetupError(f"image config: {key} must be a list of strings, not {value!r}")
    return tuple(value)


def parse(blob: dict[str, Any]) -> ImageConfig:
    """The parts of an OCI image config (the whole JSON document) a sandbox uses."""
    cfg = blob.get("config") or {}
    if not isinstance(cfg, dict):
        raise SetupError("image config: `config` is not an object")
    env: list[tuple[str, str]] = []
    for item in _strings(cfg.get("Env"), "Env"):
        key, sep, value = item.partition("=")
        if sep and key:  # "KEY" alone (no value) means nothing outside `docker run -e`
            env.append((key, value))
    workdir = cfg.get("WorkingDir") or ""
    user = cfg.get("User") or ""
    labels = cfg.get("Labels") or {}
    if not isinstance(workdir, str) or not isinstance(user, str) or not isinstance(labels, dict):
        raise SetupError("image config: WorkingDir, User and Labels have the wrong types")
    return ImageConfig(env=tuple(env), workdir=workdir, user=user,
                       entrypoint=_strings(cfg.get("Entrypoint"), "Entrypoint"),
                       cmd=_strings(cfg.get("Cmd"), "Cmd"),
                       labels={str(k): str(v) for k, v in labels.items()})


def jail_workdir(config: ImageConfig, override: str = "") -> str:
    """Where the workspace is mounted and commands start: the profile's `[image] workdir`,
    else the image's WorkingDir, else /workspace (never `/`: the workspace would cover the
    whole image)."""
    wd = override or config.workdir or DEFAULT_WORKDIR
    if not wd.startswith("/"):
        wd = "/" + wd
    parts = [p for p in wd.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any(ord(c) < 32 or c == "\x7f" for c in wd):
        raise SetupError(f"image workdir {wd!r} must be an absolute directory below / "
                         "(set [image] workdir, e.g. \"/workspace\")")
    return "/" + "/".join(parts)


def program(config: ImageConfig, args: list[str]) -> list[str]:
    """`docker run IMAGE [ARGS]`: the Entrypoint, then ARGS (or the image's Cmd)."""
    out = [*config.entrypoint, *(args or config.cmd)]
    if not out:
        raise SetupError("the image has no Entrypoint or Cmd: give a command "
                         "(sandbox run --image REF -- CMD)")
    return out


def environment(config: ImageConfig, base: dict[str, str]) -> dict[str, str]:
    """The image's Env over the sandbox's defaults (PATH, HOME, ...), as `docker run` puts
    the image's Env first; the profile's and the caller's env still go on top."""
    env = dict(base)
    env.update(dict(config.env))
    return env
