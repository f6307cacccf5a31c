"""One session's lifecycle: starting -> running -> exited | killed | failed.

    create row -> gc -> agent user + workspace -> parts: cgroup, exec monitor, netns,
        GPU grant, guard (+ honeytokens) -> jail (pexpect or Popen) -> RUNNING
    run(cmd): guard check on the text -> shell -> record -> result
    close/kill: jail dies (its PID namespace with it) -> final row -> host resources
        removed (cgroup, netns, monitors, fresh workspace)

Every step that makes a host resource records it in the session row *before* relying on
it, so a crash leaves `sandbox gc` a list of what to remove. Any failure while starting
tears down what was made and marks the session failed with the reason (fail closed).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

from . import commands, gc, owners, paths, reap, supervisor
from .control import ControlWatcher
from .errors import CommandBlocked, CommandTimeout, SessionClosed, SetupError
from .gpu.driver import driver_files
from .hooks import Hooks
from .jail import firejail, launch, spawn, users, workspace
from .jail.images.attach import attach, no_bash, wait_joinable
from .jail.profile import Profile, load
from .record import Store, StoreUnavailable, session_store
from .record.ship import ship_head
from .result import CommandResult
from .shell import Shell


def new_id() -> str:
    return secrets.token_hex(5)


log = logging.getLogger("sandbox")
TEARDOWN_WAIT_S = 30.0  # a kill's teardown (cgroup, netns, gateway) takes well under this

class Session:
    """A jailed, recorded session. Used by the API (`Sandbox`) and by the CLI."""

    def __init__(
        self,
        profile: Profile | str = "default",
        *,
        workdir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        kind: str = "api",
        store: Store | None = None,
        argv: list[str] | None = None,
        image: str | None = None,
        keep: bool = False,
    ) -> None:
        self.profile = load(profile) if isinstance(profile, str) else profile
        # The root filesystem: an image (by name or digest) or, when empty, the host's.
        self.image_ref = image if image is not None else self.profile.image.ref
        self.keep = keep  # an image sandbox's upper layer outlives it (`image commit`)
        self.image: Any = None  # images.attach.Attached while the jail lives
        self._holder: subprocess.Popen[bytes] | None = None  # a bash-less image's jail
        self.id = new_id()
        self.kind = kind
        self.store = store or session_store()
        self.requested_workdir = Path(workdir) if workdir is not None else None
        self.workdir = (self.requested_workdir or Path.cwd()).resolve()
        self.placement: users.Placement | None = None
        self.extra_env = dict(env or {})
        self.argv = list(argv or [])
        self.state = "new"
        self.reason: str | None = None
        self.shell: Shell | None = None
        self.jail_pid: int | None = None
        self.resources: dict[str, Any] = {}
        self.gpu_backend: Any = None  # a GpuBackend to use instead of NVML (tests, FakeNvml)
        self.gpu_part_backend: Any = None  # the backend the GPU part resolved (or None)
        self.hooks: Hooks = Hooks(self)
        self._end_lock = threading.Lock()
        self._ended = threading.Event()
        self._released = threading.Event()
        self._ending_thread: int | None = None

    # -- events -----------------------------------------------------------------------

    def emit(self, kind: str, detail: dict[str, Any], *, severity: str = "info",
             action: str = "record", rule: str | None = None) -> None:
        """Record an event (thread-safe); rules see it through the hooks."""
        self.hooks.on_event(self.store.add_event(
            self.id, kind, detail, severity=severity, action=action, rule=rule).to_dict())

    def add_resource(self, name: str, value: Any) -> None:
        """Record a host resource in the store at once, before it is relied on: a crash
        from here on leaves `sandbox gc` its name."""
        self.resources[name] = value
        self.store.update_session(self.id, resources=self.resources)

    # -- start ------------------------------------------------------------------------

    def spec(self) -> firejail.JailSpec:
        return self._spec

    def start(self) -> Session:
        """Set everything up and start the jail; raises SetupError and leaves nothing."""
        pid, token = owners.me()
        supervisor.track(self)
        self.store.create_session(
            self.id, profile=self.profile.name, kind=self.kind, workdir=str(self.workdir),
            argv=self.argv, owner_pid=pid, owner_start=token, host=paths.host_id(),
            user=getpass.getuser(),
        )
        # A store that loses its database kills the session whose record it could not
        # write (fail closed; the loss is recorded locally, see store_pg).
        self.store.on_lost(self.id, self.kill)
        try:
            self._start()
        except BaseException as e:
            self._teardown()
            supervisor.forget(self)
            self.store.on_lost(self.id, None)
            reason = str(e) or type(e).__name__
            self.state = "failed"
            self.reason = reason
            try:
                self.store.finish_session(self.id, "failed", reason)
                self.emit("session.end", {"state": "failed", "reason": reason},
                          severity="warning")
            except Exception as err:  # the row says failed already; the event is extra
                log.warning("sandbox: session %s: recording its end failed: %s", self.id, err)
            raise
        return self

    def _start(self) -> None:
        gc.now_and_then(self.store)
        firejail.check_firejail()
        self.placement = workspace.place(self.requested_workdir, self.id, self.kind,
                                         self.profile.limits.disk_mib, self.add_resource)
        agent = self.placement.agent
        self.workdir = self.placement.workdir
        self.store.update_session(self.id, agent_uid=agent.uid if agent else os.getuid(),
                                  jail_name=firejail.jail_name(self.id), workdir=str(self.workdir))
        self._spec = workspace.spec(self.id, self.placement, self.store.path.parent.resolve())
        self.emit("session.start", {
            "profile": self.profile.name, "sources": self.profile.sources,
            "workdir": str(self.workdir), "kind": self.kind, "argv": self.argv,
            "agent_uid": agent.uid if agent else os.getuid(),
        })
        self._spec = self.hooks.before_jail(self._spec)
        if self.image_ref:
            assert self.placement is not None
            self._spec, self.image = attach(
                self.image_ref, profile=self.profile, spec=self._spec,
                state_dir=self.store.path.parent.resolve(), fresh=self.placement.fresh,
                kind=self.kind, keep=self.keep, add_resource=self.add_resource,
                gpu_files=tuple(driver_files(self.gpu_part_backend))
                if dict(self._spec.gpu_env).get("CUDA_VISIBLE_DEVICES") else (),
                exec_helper=self.profile.exec.fast and self.kind == "api")
            self.emit("session.image", {
                "image": self.image.image.name, "digest": self.image.image.digest,
                "workdir": self._spec.inside_workdir, "keep": self.keep})
        if self.kind == "shell" or (self.kind == "api" and (
                self.image is None or self.image.has_bash)):
            self._start_shell()
        elif self.kind == "api":
            self._start_holder()
        ControlWatcher.watch(self.store, self.id, self.kill)
        self.hooks.jail_ready()  # e.g. the exec helper's join, if the profile asks for it

    def env(self) -> dict[str, str]:
        """The jail's environment: the profile's allowlist plus the caller's `env`."""
        password = getattr(self.store, "password", None)  # PostgreSQL's, when it has one
        return firejail.session_env(self.profile, self._spec, self.extra_env,
                                password if isinstance(password, str) else None)

    def jail_argv(self, program: list[str]) -> list[str]:
        """The firejail argv for `program`, its hide list kept off the jail's view."""
        argv = firejail.build_argv(self.profile, self._spec, program)
        argv, include = firejail.hide_list_in_file(argv, self.id)
        if include is not None and "include" not in self.resources:
            self.add_resource("include", str(include))
        return argv

    def join_flag(self) -> str:
        """`--join=PID` of this running jail (`spawn.join_flag`; the teardown reaps it)."""
        return spawn.join_flag(self.jail_pid if self.state == "running" else None, self.id)

    def launcher(self, ctty_fd: int | None = None) -> launch.Launch:
        """What the jail's child runs before exec: cgroup, own session, netns, TIOCSTI
        filter, privilege drop (see `launch`)."""
        return firejail.launcher(self._spec, join_files=self.hooks.cgroup_files(),
                                 ctty_fd=ctty_fd, limits=firejail.rlimits(self.profile))

    def _start_shell(self) -> None:
        program = ["bash", "--noprofile", "--norc", "-i"]
        if self.kind == "api":
            program.insert(3, "--noediting")
        argv = self.jail_argv(program)
        self.shell = Shell(argv, self.env(), str(self.workdir), mode=self.kind,
                           max_output=self.profile.recording.max_output_bytes,
                           launch=self.launcher())
        self.jail_pid = self.shell.pid
        self.store.update_session(self.id, jail_pid=self.jail_pid)
        self.hooks.jail_started(self.jail_pid)
        self.shell.start()
        if self.profile.filesystem.exec_var_tmp:
            firejail.exec_var_tmp(self.jail_pid)
        self.state = "running"
        self.store.update_session(self.id, state="running")

    def _start_holder(self) -> None:
        """An image without bash: the jail runs a holder, and exec joins it."""
        assert self.image is not None
        self._holder = spawn.popen(
            self.jail_argv(self.image.holder()), self.launcher(), env=self.env(),
            cwd=str(self.workdir), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        self.mark_running(self._holder.pid)
        wait_joinable(self._holder)

    def mark_running(self, jail_pid: int) -> None:
        """For the wrapper: the jail process exists."""
        self.jail_pid = jail_pid
        self.store.update_session(self.id, jail_pid=jail_pid, state="running")
        self.hooks.jail_started(jail_pid)
        self.state = "running"

    # -- commands ---------------------------------------------------------------------

    def run(self, command: str, timeout: float | None = None, *, check: bool = False
            ) -> CommandResult:
        """Run one command in the session's shell and record it."""
        if self.shell is None and self.state == "running" and self.image is not None:
            raise SetupError(no_bash(self.image.image.name))
        if self.shell is None or self.state != "running":
            raise SessionClosed(f"session {self.id} is {self.state}: {self.reason or ''}".strip())
        box = self.hooks.open_alerts()  # this command's alerts (see Hooks.open_alerts)
        try:
            return self._run(command, timeout, check, box)
        finally:
            self.hooks.close_alerts(box)

    def _run(self, command: str, timeout: float | None, check: bool,
             box: list[dict[str, Any]]) -> CommandResult:
        assert self.shell is not None
        timeout = self.profile.limits.command_timeout_s if timeout is None else timeout
        result, raw = commands.run(self, self.shell, command, timeout, box)
        if raw is None:  # blocked by the guard
            if check:
                raise CommandBlocked(result.output)
            return result
        if raw.shell_exited:
            if self.state == "running":
                self._finish("exited", "the shell exited", None)
            if self.state == "killed":
                raise SessionClosed(f"session {self.id} was killed: {self.reason}")
        if check and raw.timed_out:
            raise CommandTimeout(f"{command!r} timed out after {timeout}s")
        return result

    def record_command(self, text: str, output: bytes, exit_code: int | None, started: float,
                       duration: float, source: str, truncated: bool = False,
                       output_bytes: int | None = None, timed_out: bool = False,
                       then: tuple[str, dict[str, Any]] | None = None) -> None:
        """`then`: an info event about the command (kind, detail), in the same write."""
        size = len(output) if output_bytes is None else output_bytes
        cmd: dict[str, Any] = dict(text=text, output=output, timed_out=timed_out, source=source,
                                   exit_code=exit_code, started=started, duration=duration,
                                   truncated=truncated, output_bytes=size)
        if then is None:
            self.store.add_command(self.id, **cmd)
        else:
            self.hooks.on_event(self.store.add_command_and_event(self.id, cmd, *then)[1].to_dict())
        self.limits_finished(text, exit_code, output.decode("utf-8", errors="replace"),
                             truncated, size)

    def limits_finished(self, command: str, exit_code: int | None, output: str,
                         truncated: bool, output_bytes: int) -> None:
        """Limits no cgroup counter sees (file size, output cap), from the result."""
        if self.hooks.limits is not None:
            self.hooks.limits.command_finished(command, exit_code, output, truncated,
                                               output_bytes)

    # -- end --------------------------------------------------------------------------

    def kill(self, reason: str = "killed") -> None:
        """End the session now; its whole process tree dies. Safe from any thread."""
        self._finish("killed", reason, None)

    def close(self, exit_code: int | None = None) -> None:
        """End the session normally."""
        self._finish("exited", "closed", exit_code)

    def _finish(self, state: str, reason: str, exit_code: int | None) -> None:
        with self._end_lock:
            first = not self._ended.is_set()
            if first:
                self._ended.set()
                self._ending_thread = threading.get_ident()
                self.state = state
                self.reason = reason
        if not first and self._ending_thread == threading.get_ident():
            return  # re-entered from our own teardown (a __del__ run by gc): never wait on it
        if not first:
            # Another thread (a guard or operator kill) is ending the session: return
            # only once its teardown is done, so no host resource outlives our caller.
            if not self._released.wait(TEARDOWN_WAIT_S):
                log.warning("sandbox: teardown of %s still running after %ss", self.id,
                            TEARDOWN_WAIT_S)
            return
        try:
            try:
                ControlWatcher.unwatch(self.store.key, self.id)
            except Exception as e:  # the kill path is a convenience here, not the record
                log.warning("sandbox: unregistering %s from the kill watcher: %s", self.id, e)
            # Processes first, then the row says so (the kill is visible as soon as it is
            # true), then the slower host clean-up (cgroup, netns, monitors).
            self._stop_jail()
            try:  # the last records: a store lost mid-way must not skip the clean-up
                disk = self.hooks.disk
                if disk is not None:
                    disk.check()
                limits = self.hooks.limits
                if limits is not None:  # the last reading's breaches, before session.end
                    limits.final_sample()
                if self.store.finish_session(self.id, state, reason, exit_code):
                    self.emit("session.end",
                              {"state": state, "reason": reason, "exit_code": exit_code},
                              severity="warning" if state == "killed" else "info")
                self.store.mark_controls_handled(self.id)
            except StoreUnavailable as e:  # recorded locally by the store; clean up still
                log.error("sandbox: session %s: recording its end failed: %s", self.id, e)
            self.store.on_lost(self.id, None)
            self._release()
            try:
                self._ship_head()
            except StoreUnavailable as e:
                log.error("sandbox: session %s: no head to ship: %s", self.id, e)
        finally:
            self._released.set()
            supervisor.forget(self)

    def _ship_head(self) -> None:
        """Send the chain head off-box, so a rewrite of the whole database is detectable."""
        rec = self.profile.recording
        if rec.head_hash_file or rec.head_hash_command:
            ship_head(rec, self.id, self.store.get_session(self.id)["last_seq"],
                      self.head_hash(), lambda why: self.emit(
                          "session.warning", {"reason": why}, severity="warning"))

    def _teardown(self) -> None:
        self._stop_jail()
        self._release()

    def _stop_jail(self) -> None:
        """SIGKILL firejail's first process: the jail's PID namespace dies with it."""
        procs = self.hooks.procs
        if procs is not None:  # a session held by backpressure must thaw to die
            procs.release()
        if self.shell is not None:
            self.shell.close()
        elif self.jail_pid:
            reap.kill_jail(self.jail_pid, firejail.jail_name(self.id))
        holder = self._holder
        if holder is not None:  # reap it, and close the pipe it was blocked on
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(TEARDOWN_WAIT_S)
            for pipe in (holder.stdin, holder.stderr):
                if pipe is not None:
                    pipe.close()

    def _release(self) -> None:
        """Remove host resources (cgroup, netns, monitors, fresh workspace); then the
        row says so, and gc leaves this session alone."""
        self.hooks.teardown()
        if self.image is not None:  # the upper and mount point (the overlay died with it)
            self.image.release(self.workdir)
        if self.placement is not None:
            users.remove_fresh(self.placement)
        if "include" in self.resources:
            reap.cleanup_resources({"include": self.resources["include"]})
        if self.resources:
            self.resources["released"] = True
            try:
                self.store.update_session(self.id, resources=self.resources)
            except StoreUnavailable as e:  # gc of a lost store finds them released anyway
                log.error("sandbox: session %s: recording its release failed: %s", self.id, e)

    def head_hash(self) -> str:
        return str(self.store.get_session(self.id)["head_hash"])

    def __enter__(self) -> Session:
        return self if self.state == "running" else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
