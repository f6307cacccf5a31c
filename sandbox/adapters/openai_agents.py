"""OpenAI Agents SDK backend: a `BaseSandboxClient` whose sessions run in a firejail jail.

    from agents import Runner, RunConfig
    from agents.sandbox import SandboxAgent, SandboxRunConfig
    from sandbox.adapters.openai_agents import FirejailSandboxClient, FirejailSandboxClientOptions

    agent = SandboxAgent(name="dev", instructions="...", model="gpt-5.4")
    result = await Runner.run(agent, "fix the tests", run_config=RunConfig(sandbox=SandboxRunConfig(
        client=FirejailSandboxClient(),
        options=FirejailSandboxClientOptions(profile="default", network="none"))))
    # in a stored image (`sandbox image ls`): FirejailSandboxClientOptions(image="python:3.12-slim")

Why this backend: on Linux the SDK's own `UnixLocalSandboxClient` adds no confinement
at all (its docstring says so; openai-agents-python issue #5064): the model's shell
commands run as you, on your filesystem, with your network. Here every command, every
file read and write, the SDK's own plumbing (path probes, `ls`, `mkdir`, `mv`, archive
extraction) and every PTY session is a process in one jail: a per-session agent user
(never root), a private workspace (created for the session, destroyed with it), `/`
read-only, a private /tmp, the profile's network policy, limits and guard rules, and
each of them is in the store's record (`sandbox.Store().commands(sandbox_id)`).

Mapping onto the SDK's contract (mirroring `UnixLocalSandboxSession` method by method):

- `create()` starts the jail at once, as UnixLocal creates its temp root there, and sets
  `manifest.root` to the jail's workspace (the same path inside the jail and on the
  host). A non-default `manifest.root` is used as the workspace directory itself (it must
  exist and belong to a non-root user; it is then kept at close, like UnixLocal's
  caller-chosen roots). In an image the root is a path inside it (see Images below).
- `exec()` runs argv (or `sh -c` for `shell=True`, as UnixLocal) in the jail with the
  manifest's environment; HOME is the workspace. `user` may only be the jail's own agent
  user: there is no root or sudo inside, so manifest users/groups are refused, as
  UnixLocal refuses them. Exit status is the shell's convention: signal N is 128+N
  (UnixLocal reports -N).
- `read`/`write` are `cat` in the jail (`AsyncSandbox.read_file`/`write_file`);
  `persist_workspace`/`hydrate_workspace` are `AsyncSandbox.export_tar`/`import_tar`
  with the SDK's own skip paths and tar validation.
- `shutdown()` ends the jail (its whole process tree; a session-owned workspace goes
  with it, after `stop()` persisted it to the snapshot); `resume()` re-attaches to a jail
  still alive in this process, or starts a fresh one that the SDK hydrates from the
  snapshot.
- PTY: `exec_command` gets long-running sessions that `write_stdin` polls. `tty=false`
  is plain pipes (stdin closed), exactly as UnixLocal. `tty=true` is a real terminal,
  allocated inside the jail from its private devpts by util-linux `script`: the line
  discipline is genuine (Ctrl-C is SIGINT to the foreground job, echo, isatty), so the
  capability is declared honestly. It needs `script` in the jail (Debian: bsdutils).

Images: `FirejailSandboxClientOptions(image=NAME)` runs the jail in a stored image
(`sudo sandbox image pull docker://python:3.12-slim python:3.12-slim` first; `sandbox
image ls` lists them) instead of the host's filesystem, as the SDK's `DockerSandboxClient`
takes `image`; without one (the default, or the profile's `[image] ref`) the jail sees the
host's filesystem read-only. As in the Docker client, `manifest.root` is then a path inside
the image: the SDK's default (`/workspace`) means the image's working directory (the
profile's `[image] workdir`, else the image's WorkingDir, else /workspace), another
absolute path is where the workspace goes (`[image] workdir`). The workspace is always a
fresh one, seeded with what the image holds there, and `manifest.root` is set to its path
inside (`AsyncSandbox.inside_workdir`).

Not supported: exposed ports, manifest users/groups, host_path path grants, and cloud
mounts (they need FUSE/rclone, which the jail does not grant).

This module is the client, the entry point; the session is `openai_session`, over
`openai_options` (options and state), `openai_workspace` (manifest checks and the
workspace archive) and `openai_pty` (PTY processes).
"""


from __future__ import annotations

import uuid

from agents.sandbox.manifest import Manifest
from agents.sandbox.session.dependencies import Dependencies
from agents.sandbox.session.manager import Instrumentation
from agents.sandbox.session.sandbox_client import BaseSandboxClient
from agents.sandbox.session.sandbox_session import SandboxSession
from agents.sandbox.session.sandbox_session_state import SandboxSessionState
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot

from ..record import Store
from .openai_options import (
    BACKEND_ID,
    DEFAULT_MANIFEST_ROOT,
    FirejailSandboxClientOptions,
    FirejailSandboxSessionState,
)
from .openai_session import FirejailSandboxSession
from .openai_workspace import refuse_unsupported

__all__ = [
    "FirejailSandboxClient",
    "FirejailSandboxClientOptions",
    "FirejailSandboxSession",
    "FirejailSandboxSessionState",
]


class FirejailSandboxClient(BaseSandboxClient[FirejailSandboxClientOptions | None]):
    """Sessions confined in a firejail jail (see the module docstring): the confined
    counterpart of the SDK's `UnixLocalSandboxClient`, which on Linux adds none."""

    backend_id = BACKEND_ID
    supports_default_options = True

    def __init__(
        self,
        *,
        instrumentation: Instrumentation | None = None,
        dependencies: Dependencies | None = None,
        store: Store | None = None,
    ) -> None:
        self._instrumentation = instrumentation if instrumentation is not None else (
            Instrumentation())
        self._dependencies = dependencies
        self._store = store
        self.sandbox_ids: list[str] = []
        """The ids of the jails this client started, in order: each one's record is
        `sandbox.Store().commands(id)`."""

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: FirejailSandboxClientOptions | None = None,
    ) -> SandboxSession:
        resolved = options if options is not None else FirejailSandboxClientOptions()
        manifest = manifest if manifest is not None else Manifest()
        refuse_unsupported(manifest)
        self._validate_manifest_for_create(manifest)
        # In an image the workspace is always a fresh one (the root is a path inside).
        owned = manifest.root == DEFAULT_MANIFEST_ROOT or resolved.image is not None
        manifest = manifest.model_copy(deep=True)
        session_id = uuid.uuid4()
        state = FirejailSandboxSessionState(
            session_id=session_id,
            manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            workspace_root_owned=owned,
            options=resolved,
        )
        inner = FirejailSandboxSession(state=state, store=self._store, started=self.sandbox_ids)
        await inner._start_jail()  # as UnixLocal makes its root here: the path is known now
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """End the jail (idempotent): its processes die, an owned workspace is removed."""
        inner = session._inner
        if not isinstance(inner, FirejailSandboxSession):
            raise TypeError("FirejailSandboxClient.delete expects a FirejailSandboxSession")
        await inner.pty_terminate_all()
        await inner._shutdown_backend()
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        if not isinstance(state, FirejailSandboxSessionState):
            raise TypeError("FirejailSandboxClient.resume expects a FirejailSandboxSessionState")
        state.assert_path_grants_rebound()
        refuse_unsupported(state.manifest)
        inner = FirejailSandboxSession.from_state(state, store=self._store,
                                                  started=self.sandbox_ids)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, FirejailSandboxSessionState)
