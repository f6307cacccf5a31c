"""Guard rules over command text, process execs, network attempts, samples and tamper.

Command text is checked before it is sent: `block` refuses it (the agent gets a result
with the reason), `kill` refuses it and ends the session. Every other event the session
records (proc.exec from the monitor, net.* and dns.* from the gateway, resource.* and
gpu.* samples, shell marker signals) is turned into evidence and checked as it arrives:
`block` on a process kills that process, `kill` ends the session. Each verdict is an
event with the rule, the evidence and the action.

Honeytokens (profile `[honeytokens]`) are planted in a private HOME for the session, so
decoys never land in the user's workspace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .. import supervisor
from ..guard import Engine, Token, Verdict, block_message, build_engine, plant
from ..guard.evidence import RECORDER_SHELLS
from ..jail.firejail import JailSpec
from ..result import CommandResult
from . import Part, PartSession

_SAMPLES = ("resource.sample", "gpu.sample")  # periodic: judged on transitions
_JAIL_HELPERS = ("/run/firejail/", "/usr/lib/x86_64-linux-gnu/firejail/", "/usr/lib/firejail/")


def _home_root() -> Path:
    if os.geteuid() == 0:
        return Path("/srv/sandbox/homes")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sandbox" / "homes"


class GuardPart(Part):
    name = "guard"

    def __init__(self, session: PartSession) -> None:
        super().__init__(session)
        self.tokens: list[Token] = []
        self.engine: Engine = build_engine(session.profile.guard, network=session.profile.network)
        self.home: Path | None = None
        self._watched: list[str] = []
        self._killing = threading.Event()
        self._recorder_seen = False
        self._holding: dict[str, set[str]] = {}  # sample kind -> rules matching it now

    # -- set-up ---------------------------------------------------------------------------

    def before_jail(self, spec: JailSpec) -> JailSpec:
        ht = self.session.profile.honeytokens
        if ht.ssh_key or ht.aws_credentials or ht.env_token:
            spec = self._plant(spec)
        self.engine = build_engine(self.session.profile.guard, honeytokens=self.tokens,
                                   network=self.session.profile.network)
        procs = self.session.hooks.procs
        if procs is not None:
            procs.on_exec(self._on_exec, urgent=self.engine.process_names())
        return spec

    def _plant(self, spec: JailSpec) -> JailSpec:
        from dataclasses import replace

        home = _home_root() / self.session.id
        home.mkdir(parents=True, mode=0o700)
        self.home = home
        self.session.add_resource("home", str(home))
        self.tokens = plant(home, self.session.profile.honeytokens)
        self.engine = build_engine(self.session.profile.guard, honeytokens=self.tokens,
                                   network=self.session.profile.network)
        agent = spec.agent
        if agent is not None:
            for path in [home, *home.rglob("*")]:
                os.chown(path, agent.uid, agent.gid)
        for t in self.tokens:
            if t.env_name:
                self.session.extra_env.setdefault(t.env_name, t.env_value)
        self._watch_files()
        self.session.emit("honeytoken.planted", {
            "tokens": [{"kind": t.kind, "marker": t.marker, "path": t.home_path or t.env_name}
                       for t in self.tokens]})
        return replace(spec, home=home, extra_writable=(*spec.extra_writable, str(home)))

    def _watch_files(self) -> None:
        from ..guard import HONEYTOKEN_TOUCH
        from ..monitor.honeywatch import watcher

        action = self.engine.rule(HONEYTOKEN_TOUCH).action if self._has(HONEYTOKEN_TOUCH) \
            else "flag"
        for token in self.tokens:
            if not token.path:
                continue

            def touched(path: str, token: Token = token) -> None:
                self.session.emit("honeytoken.touched", {
                    "token": token.label, "kind": token.kind, "path": token.home_path,
                    "where": "file read (inotify)"}, severity="critical", action=action,
                    rule=HONEYTOKEN_TOUCH)
                if action == "kill":
                    self._kill(f"decoy {token.home_path} was read")

            watcher().watch(token.path, touched)
            self._watched.append(token.path)

    def _has(self, rule_id: str) -> bool:
        try:
            self.engine.rule(rule_id)
        except KeyError:
            return False
        return True

    # -- command text -----------------------------------------------------------------------

    def check_command(self, text: str) -> CommandResult | None:
        verdicts = self.engine.check_command(text)
        if not verdicts:
            return None
        top = verdicts[0]
        if not top.stops:
            self._record(verdicts)  # the alerts go to the result(s) open now
            return None
        with self.session.hooks.own_alerts() as alerts:
            self._record(verdicts)
        message = block_message(verdicts)
        row = self.session.store.add_command(
            self.session.id, text=text, output=message, exit_code=None, started=time.time(),
            duration=0.0, source="blocked")
        if top.action == "kill":
            self.session.kill(f"guard rule {top.rule_id}: {top.message}")
        return CommandResult(exit_code=126, output=message, duration=0.0, blocked=True,
                             alerts=alerts, command=text, seq=row["seq"])

    # -- everything else ------------------------------------------------------------------------

    def on_event(self, row: dict[str, Any]) -> None:
        if row["kind"] in ("proc.exec", "guard.verdict", "honeytoken.touched"):
            return  # execs come through _on_exec with the full process info
        if row["kind"] == "proc.lost" and not self.session.profile.recording.lost_events_tamper:
            return  # recorded as a warning; a tamper signal only where the profile says so
        try:
            verdicts = self.engine.evaluate_event(row)
        except Exception as e:  # a rule bug must not break recording
            self.session.emit("session.warning", {"reason": f"guard error: {e}"},
                              severity="warning")
            return
        if row["kind"] in _SAMPLES:
            verdicts = self._sample_transitions(row["kind"], verdicts)
        if verdicts:
            # A recorder signal already carries its rule's flag: the same verdict is not
            # recorded (and counted) twice; a stronger one (strict's kill) is.
            same = {(row.get("rule"), row.get("action"))}
            self._act(verdicts, pid=None,
                      record=[v for v in verdicts if (v.rule_id, v.action) not in same])

    def _sample_transitions(self, kind: str, verdicts: list[Verdict]) -> list[Verdict]:
        """A windowed sample rule matches every sample while the condition holds (a long
        build at 90% CPU would be flagged every 5 s): judge it once when it starts to
        hold, again only after a sample of that kind where it did not."""
        now = {v.rule_id for v in verdicts}
        held = self._holding.get(kind, set())
        self._holding[kind] = now
        return [v for v in verdicts if v.rule_id not in held]

    def _on_exec(self, info: Any) -> None:
        # The jail's own set-up (our direct child: firejail; its helpers) is
        # recorded but not judged: firejail's argv names every hidden secret path.
        if info.ppid == os.getpid() or str(info.exe).startswith(_JAIL_HELPERS):
            return
        detail = info.detail()
        if (not self._recorder_seen and self.session.kind in ("api", "shell")
                and tuple(detail.get("argv") or ()) in RECORDER_SHELLS):
            self._recorder_seen = True  # the session's own shell: started before anything
            detail["recorder"] = True
        event = {"kind": "proc.exec", "detail": detail}
        verdicts = self.engine.evaluate_event(event)
        if verdicts:
            self._act(verdicts, pid=info.pid)

    def _act(self, verdicts: list[Verdict], pid: int | None,
             record: list[Verdict] | None = None) -> None:
        self._record(verdicts if record is None else record)
        top = verdicts[0]
        if top.action == "kill":
            self._kill(f"guard rule {top.rule_id}: {top.message}")
        elif top.action == "block" and pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _kill(self, reason: str) -> None:
        if self._killing.is_set():
            return
        self._killing.set()
        # Off the monitor's thread: teardown unregisters from that same monitor.
        # Not a daemon: the process waits for this teardown before it exits (M6).
        supervisor.spawn(self.session.kill, reason, name="sandbox-guard-kill")

    def _record(self, verdicts: list[Verdict]) -> None:
        for v in verdicts:
            v.emit(self.session.emit)

    def teardown(self) -> None:
        if self._watched:
            from ..monitor.honeywatch import watcher

            for path in self._watched:
                watcher().unwatch(path)
            self._watched = []
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
