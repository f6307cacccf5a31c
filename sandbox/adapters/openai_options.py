"""The serialisable half of the OpenAI Agents backend (`openai_agents`): the client's
options, the session's state (both JSON round-trip through the SDK's snapshots), and the
jail that a session's options make.

Below `openai_session` and `openai_agents`; imports the SDK's models only.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from agents.sandbox.manifest import Manifest
from agents.sandbox.session.sandbox_client import BaseSandboxClientOptions
from agents.sandbox.session.sandbox_session_state import SandboxSessionState
from pydantic import Field

from ..doors.aio import AsyncSandbox
from ..doors.options import spec_of
from ..jail.profile import Profile, load, override
from ..record import Store

BACKEND_ID = "firejail"
DEFAULT_MANIFEST_ROOT = cast(str, Manifest.model_fields["root"].default)


class FirejailSandboxClientOptions(BaseSandboxClientOptions):
    """How to build the jail (JSON round-trips with the session state).

    `profile`: a profile name ("default", "strict", "pypi", ...); `profile_overrides`:
    tables merged over it as in a profile file (`{"filesystem": {...}}`); `network`:
    "none" | "guarded" | a list of allowed "host:port" | a [network] table; `gpu`: a
    count or a [gpu] table; `limits`: a [limits] table; `env`: extra environment;
    `image`: a stored image's name or digest (`sandbox image ls`) as the root filesystem,
    as `DockerSandboxClientOptions.image` (None: the profile's `[image] ref`, else the
    host's filesystem, read-only). Each field named as a `sandbox.doors.options.SandboxSpec`
    field is passed on to the sandbox as is."""

    type: Literal["firejail"] = "firejail"
    profile: str = "default"
    profile_overrides: dict[str, Any] | None = None
    network: str | list[str] | dict[str, Any] | None = None
    gpu: int | dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    image: str | None = None

    def resolved_profile(self) -> Profile | str:
        if not self.profile_overrides:
            return self.profile
        return override(load(self.profile), self.profile_overrides, where="client options")


class FirejailSandboxSessionState(SandboxSessionState):
    type: Literal["firejail"] = "firejail"
    sandbox_id: str | None = None
    """The jail's id: its record is `sandbox.Store().commands(sandbox_id)`."""
    workspace_root_owned: bool = True
    """The workspace was created for the jail (and dies with it)."""
    options: FirejailSandboxClientOptions = Field(default_factory=FirejailSandboxClientOptions)


def new_jail(state: FirejailSandboxSessionState, store: Store | None) -> AsyncSandbox:
    """The (unstarted) jail for a session in this state: its options' profile and
    settings, and where its workspace goes (`manifest.root`)."""
    opts = state.options
    root = state.manifest.root
    profile = opts.resolved_profile()
    workdir = None
    if opts.image is not None:
        # In an image the root is a path inside it, as in the Docker client: the
        # default is the image's working directory, another one is `[image] workdir`
        # (also what a resumed session's root, set at start, says).
        if root != DEFAULT_MANIFEST_ROOT:
            base = load(profile) if isinstance(profile, str) else profile
            profile = override(base, {"image": {"workdir": root}},
                               where="client options (manifest.root in an image)")
    elif not state.workspace_root_owned:
        # A caller-chosen root is used as is: it must exist, owned by a non-root user.
        workdir = root
    return AsyncSandbox(profile, **spec_of(opts, workdir=workdir, store=store))
