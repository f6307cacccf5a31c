"""The `config` of the inspect-ai `firejail` sandbox (`inspect_ai`): the config model,
a compose file's default service read into it (as docker's provider picks it), the
profile a config names, and the sandbox it makes.

Below `inspect_ai` (the provider); needs inspect's compose parser, nothing of the
provider itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inspect_ai.util import SandboxEnvironmentConfigType
from inspect_ai.util._sandbox.compose import (
    ComposeConfig,
    ComposeService,
    is_compose_yaml,
    is_dockerfile,
    parse_compose_yaml,
)
from pydantic import BaseModel, ConfigDict

from ..doors.aio import AsyncSandbox
from ..doors.options import spec_of
from ..errors import NotFound, SetupError
from ..jail.profile import Profile, available, load, override

log = logging.getLogger("sandbox.inspect_ai")


class FirejailSandboxConfig(BaseModel):
    """The `config` of a `firejail` sandbox, as a model (a plain string is the same as
    `FirejailSandboxConfig(profile=that_string)`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str = "default"
    """A profile name (`sandbox profiles`) or a path to a profile TOML; a relative path
    is relative to the task's directory."""
    network: str | list[str] | dict[str, Any] | None = None
    """None: the profile's; "none", "guarded", a list of allowed `host:port`, or a
    [network] table."""
    limits: dict[str, Any] | None = None
    """A [limits] table over the profile's (memory_mib, pids, disk_mib, ...)."""
    gpu: int | dict[str, Any] | None = None
    """A GPU count or a [gpu] table (see the profile docs)."""
    env: dict[str, str] | None = None
    """Variables set in the jail for every exec (on top of the jail's clean environment)."""
    image: str | None = None
    """A stored image's name or digest (`sandbox image ls`) as the root filesystem; None:
    the compose file's, else the profile's `[image] ref`, else the host's filesystem."""
    workdir: str | None = None
    """Where the workspace is mounted in an image and commands start (the profile's
    `[image] workdir`); None: the compose file's `working_dir`, else the profile's, else
    the image's WorkingDir, else /workspace."""
    compose: str | None = None
    """A compose file whose default service gives `image`, `workdir`, `env` and `network`
    where these are not set here (a relative path is relative to the task's directory)."""


# Profile paths resolved by task_init, which inspect runs in the task's directory
# (sample_init runs wherever the eval was started): ref -> absolute path.
resolved_paths: dict[str, str] = {}


def looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".toml")


def remember_paths(config: SandboxEnvironmentConfigType | None) -> FirejailSandboxConfig:
    """The parsed config, its relative compose and profile paths resolved here, in the
    task's directory (task_init runs there), for the samples to find them wherever the
    eval was started."""
    if isinstance(config, str) and is_compose_yaml(config):
        resolved_paths[config] = str(Path(config).expanduser().resolve())
    elif isinstance(config, FirejailSandboxConfig) and config.compose:
        resolved_paths[config.compose] = str(Path(config.compose).expanduser().resolve())
    cfg = parse_config(config)
    if looks_like_path(cfg.profile):
        resolved_paths[cfg.profile] = str(Path(cfg.profile).expanduser().resolve())
    return cfg


def parse_config(config: SandboxEnvironmentConfigType | None) -> FirejailSandboxConfig:
    """The config as a FirejailSandboxConfig, with a compose file's settings filled in."""
    if config is None:
        return FirejailSandboxConfig()
    if isinstance(config, str):
        if is_compose_yaml(config):
            return _with_compose(FirejailSandboxConfig(compose=config))
        if is_dockerfile(config):
            raise SetupError(
                f"firejail sandbox: {config} is a Dockerfile, and this provider builds "
                "nothing. Build it and store the result (docker build -t NAME . && sudo "
                "sandbox image pull docker-daemon:NAME NAME), then name it in a compose.yaml "
                "(`image: NAME`) or as FirejailSandboxConfig(image=\"NAME\")")
        return FirejailSandboxConfig(profile=config)
    if isinstance(config, ComposeConfig):
        return _merge(FirejailSandboxConfig(), _from_compose(config, "the compose config"))
    if isinstance(config, FirejailSandboxConfig):
        return _with_compose(config)
    if isinstance(config, BaseModel):
        return _with_compose(FirejailSandboxConfig.model_validate(config.model_dump()))
    raise TypeError(f"firejail sandbox: config must be a profile name or path, a compose "
                    f"file, or a FirejailSandboxConfig; got {type(config).__name__}")


def _with_compose(cfg: FirejailSandboxConfig) -> FirejailSandboxConfig:
    if cfg.compose is None:
        return cfg
    path = resolved_paths.get(cfg.compose, cfg.compose)
    try:
        compose = parse_compose_yaml(path)
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise SetupError(f"firejail sandbox: compose file {path}: {e}") from e
    return _merge(cfg, _from_compose(compose, path))


def _merge(cfg: FirejailSandboxConfig, found: dict[str, Any]) -> FirejailSandboxConfig:
    """The compose file's settings under the config's own (which win, env key by key)."""
    env = {**found.pop("env", {}), **(cfg.env or {})}
    fill = {k: v for k, v in found.items() if getattr(cfg, k) is None}
    return cfg.model_copy(update={**fill, "env": env or None})


def _warned() -> set[tuple[str, str]]:
    """(compose file, service) warned about already: once per process (the supervisor's)."""
    from .. import supervisor

    return supervisor.current().shared("inspect compose warnings", set)


def _default_service(compose: ComposeConfig, where: str) -> tuple[str, ComposeService]:
    """The service the sample runs in, as docker's provider picks it (`x-default: true`,
    else `default`), or the only one."""
    services = compose.services
    marked = [name for name, svc in services.items() if svc.x_default]
    name = marked[0] if marked else "default" if "default" in services else (
        next(iter(services)) if len(services) == 1 else "")
    if not name:
        raise SetupError(f"firejail sandbox: {where} has services {sorted(services)} and "
                         "none is the default: name one `default` or give it "
                         "`x-default: true`")
    others = sorted(set(services) - {name})
    warned = _warned()
    if others and (where, name) not in warned:  # once per file, not once per sample
        warned.add((where, name))
        log.warning("firejail sandbox: %s: only service %r runs (as the sample's sandbox); "
                    "%s not started (this provider runs one jail per sample)", where, name,
                    ", ".join(others))
    return name, services[name]


def _from_compose(compose: ComposeConfig, where: str) -> dict[str, Any]:
    """The default service's image, working_dir, environment and network_mode, as
    FirejailSandboxConfig fields (only those it sets)."""
    name, svc = _default_service(compose, where)
    if not svc.image:
        raise SetupError(
            f"firejail sandbox: service {name!r} of {where} has no `image:`, and this "
            "provider builds nothing. Build it and store the result (docker compose build; "
            "sudo sandbox image pull docker-daemon:NAME NAME), then set `image: NAME`")
    found: dict[str, Any] = {"image": svc.image, "env": _compose_env(svc.environment)}
    if svc.working_dir:
        found["workdir"] = svc.working_dir
    if svc.network_mode == "none":
        found["network"] = "none"
    return found


def _compose_env(environment: list[str] | Mapping[str, str | None] | None
                 ) -> dict[str, str]:
    """compose's `environment` (a list of KEY=VALUE or a mapping); a bare KEY (or a null
    value) is the host's value when it has one, as `docker compose` does."""
    pairs: list[tuple[str, str | None]] = []
    if isinstance(environment, list):
        for item in environment:
            key, sep, value = item.partition("=")
            pairs.append((key, value if sep else None))
    elif environment is not None:
        pairs = [(k, None if v is None else str(v)) for k, v in environment.items()]
    out: dict[str, str] = {}
    for key, given in pairs:
        found = os.environ.get(key) if given is None else given
        if key and found is not None:
            out[key] = found
    return out


def check_image(cfg: FirejailSandboxConfig, profile: Profile) -> None:
    """The image the samples will run in is in the store (else the eval fails at startup,
    with the command that adds it)."""
    ref = cfg.image or profile.image.ref
    if not ref:
        return
    from ..jail.images import ImageStore

    store = ImageStore()
    try:
        store.resolve(ref)
    except NotFound as e:
        raise NotFound(
            f"firejail sandbox: image {ref!r} is not in the sandbox image store "
            f"({store.root}), and nothing is pulled during an eval. Add it first: "
            f"`sudo sandbox image pull docker://{ref} {ref}` (a registry), "
            f"`sudo sandbox image pull docker-daemon:{ref} {ref}` (where Docker has it), or "
            f"`sudo sandbox image pull docker-archive:/path/image.tar {ref}`; "
            "`sandbox image ls` lists what is there") from e


def _profile_ref(cfg: FirejailSandboxConfig) -> str:
    """A profile name, or the path of a profile file. inspect makes every relative
    string config absolute under the task's directory before a provider sees it (as
    for a compose file): `("firejail", "strict")` arrives as `/task/dir/strict`. Such a
    path that is not a file, ends in a bare name and names a profile is that profile."""
    ref = cfg.profile
    if not looks_like_path(ref):
        return ref
    path = Path(resolved_paths.get(ref, ref)).expanduser().resolve()
    if not path.is_file() and not path.suffix and path.name in available():
        return path.name
    return str(path)


def profile_for(cfg: FirejailSandboxConfig) -> Profile:
    """The profile the sandbox runs under: the config's, with an executable /var/tmp (and
    the config's image workdir)."""
    changes: dict[str, Any] = {"filesystem": {"exec_var_tmp": True}}
    if cfg.workdir:
        changes["image"] = {"workdir": cfg.workdir}
    return override(load(_profile_ref(cfg)), changes, "inspect_ai firejail sandbox")


def new_sandbox(cfg: FirejailSandboxConfig) -> AsyncSandbox:
    """One sample's (unstarted) sandbox. `cfg.workdir` is the image's `[image] workdir`,
    already on the profile, not the sandbox's host workspace: a fresh one each time."""
    return AsyncSandbox(profile_for(cfg), **spec_of(cfg, workdir=None))
