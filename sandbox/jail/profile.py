"""Declarative profiles: TOML in, a frozen, validated `Profile` out.

A profile file may say `extends = "default"`; the parent is loaded first and the child's
tables are merged over it key by key (lists replace, they do not append, so a child can
always narrow a parent). Every file is validated on its own before merging, so an error
names the file that holds the bad key, the key, and what is allowed there.

Search order for a name: the shipped profiles, then the user dir (see `paths`), then, for
anything that looks like a path (`./x.toml`, `/etc/x.toml`), that file.

This module is the schema (the section dataclasses, with their docs and defaults) and the
loading (files, search path, `extends`, overrides); checking a table against the schema
and building the dataclasses is `profile_check`.
"""

from __future__ import annotations

import copy
import sys
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from .. import paths
from ..errors import NotFound, ProfileError
from .profile_check import build, validate_table

if sys.version_info >= (3, 11):  # noqa: UP036 - the owner asked for tomli below 3.11
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Action = Literal["record", "flag", "block", "kill"]


def _doc(text: str, default: Any = None, factory: Any = None) -> Any:
    meta = {"doc": text}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FilesystemSection:
    """What the jail can see and write besides the workspace."""

    hide: list[str] = _doc(
        "Extra host paths to hide (on top of the built-in secret list); `~` is the host HOME.",
        factory=list,
    )
    writable: list[str] = _doc(
        "Extra host directories the agent may write (the workspace always is).", factory=list
    )
    exec_var_tmp: bool = _doc(
        "Let programs run from the jail's private /var/tmp (a tmpfs firejail mounts noexec), "
        "as inspect-ai's injected tool helpers need; /tmp is executable already.", False
    )


@dataclass(frozen=True)
class EnvSection:
    """The jail's environment: cleared, then only these (no host tokens leak in)."""

    # Security choice: the allowlist is short; AWS_*, GITHUB_TOKEN & co never pass.
    passthrough: list[str] = _doc(
        "Host variables copied in when set.", factory=lambda: ["TERM", "LANG", "LC_ALL", "TZ"]
    )
    set: dict[str, str] = _doc("Variables set inside the jail.", factory=dict)


@dataclass(frozen=True)
class LimitsSection:
    """Resource limits: rlimits through firejail, cgroup limits through the supervisor."""

    # The smallest value each key accepts (0 means "no limit" where the doc says so); a
    # negative or zero rlimit would only fail later, inside firejail, as a failed command.
    MINIMUM: ClassVar[dict[str, float]] = {
        "processes": 1, "open_files": 1, "file_size_mib": 1, "address_space_mib": 0,
        "memory_mib": 0, "cpu_percent": 1, "pids": 1, "command_timeout_s": 0.001,
        "disk_mib": 0,
    }
    processes: int = _doc("RLIMIT_NPROC for the agent user (fork bombs).", 512)
    open_files: int = _doc("RLIMIT_NOFILE.", 1024)
    file_size_mib: int = _doc("RLIMIT_FSIZE: the largest file a command may write.", 4096)
    address_space_mib: int = _doc("RLIMIT_AS per process; 0 = unlimited.", 0)
    memory_mib: int = _doc("cgroup memory limit for the whole session; 0 = none.", 4096)
    cpu_percent: int = _doc("cgroup CPU quota for the whole session (100 = one core).", 200)
    pids: int = _doc("cgroup pids limit for the whole session.", 1024)
    command_timeout_s: float = _doc("Default per-command timeout in the API.", 600.0)
    disk_mib: int = _doc(
        "Size of a fresh workspace (a tmpfs of this size, charged to the session's memory "
        "cgroup); 0 = no quota. A workspace you pass with --workdir is not resized.", 0)


@dataclass(frozen=True)
class RecordingSection:
    """How much of each command is kept in the store."""

    max_output_bytes: int = _doc(
        "Per-command output kept (head and tail); the rest is cut and marked.", 1_048_576
    )
    head_hash_file: str = _doc(
        "Append each finished session's chain head to this file (off-box copy).", ""
    )
    head_hash_command: str = _doc(
        "Run this command with the head hash as $SANDBOX_HEAD (e.g. logger).", ""
    )
    # Security choice: a budget per session, so an exec loop cannot fill the host's disk
    # through the store nor burn the supervisor's CPU outside the session's cgroup.
    max_events_per_s: float = _doc(
        "proc.exec rows kept per second (1 s bursts pass); beyond, they are counted in "
        "record.dropped events (the rules still see every exec); 0 = no limit.", 100.0
    )
    max_event_bytes_per_s: int = _doc(
        "proc.exec bytes (mostly argv, at most 16 KiB each) kept per second; beyond, "
        "counted like max_events_per_s; 0 = no limit.", 131072
    )
    max_monitor_cpu_percent: float = _doc(
        "Supervisor CPU for recording and judging the session's execs (percent of a core); "
        "beyond, the session's exec events wait; a session whose queue fills is frozen "
        "(its cgroup) until they are judged (record.backpressure), so they are not lost; "
        "without a cgroup they are lost and counted in proc.lost; 0 = no limit.", 25.0
    )
    lost_events_tamper: bool = _doc(
        "Treat lost exec events (proc.lost) as tampering: an alert through the tamper "
        "pack's rule tamper.proc_lost.", False
    )

    def __post_init__(self) -> None:
        for name in ("max_output_bytes", "max_events_per_s", "max_event_bytes_per_s",
                     "max_monitor_cpu_percent"):
            if getattr(self, name) < 0:
                raise ProfileError(f"recording.{name}: must be >= 0 (0 = no limit)")


@dataclass(frozen=True)
class NetworkSection:
    """Egress. `none` = no interfaces at all; `allowlist` = transparent gateway (root)
    relaying only what `allow` names; `guarded` = the same gateway (root) relaying TLS and
    HTTP anywhere except the built-in denies and `deny`, SSH only where `allow` lifts it,
    mining and unrecognised protocols never, every connection recorded."""

    # Security choice: default deny; `none` needs no root and has no attack surface.
    mode: Literal["none", "allowlist", "guarded"] = _doc(
        "`none`, `allowlist` or `guarded` (the last two need root).", "none")
    allow: list[str] = _doc(
        'Allowed `host:port[,port]` patterns, e.g. "pypi.org:443", "*.github.com:443,22". '
        "In guarded mode: exceptions to the protocol rules, e.g. \"github.com:22\" lets "
        "SSH reach github.com on port 22 (TLS and HTTP need no entry there).",
        factory=list,
    )
    protocols: dict[str, list[str]] = _doc(
        "Per allow pattern, the protocols allowed (tls, http, ssh); default from the port.",
        factory=dict,
    )
    deny: list[str] = _doc(
        "Patterns or CIDRs always denied (metadata, link-local, LAN are denied anyway).",
        factory=list,
    )
    dns: bool = _doc("Answer DNS for allowed names (guarded: for any name not denied).", True)
    upstream_dns: str = _doc("Upstream resolver; empty = the host's (/etc/resolv.conf).", "")
    address_pool: str = _doc("IPv4 pool for the per-session veth /30s.", "100.96.0.0/16")


@dataclass(frozen=True)
class GuardSection:
    """Guard rules: which packs run, action overrides, and profile-defined rules."""

    packs: list[str] = _doc(
        "Built-in rule packs to enable.",
        factory=lambda: ["tunnels", "recon", "mining", "secrets", "tamper", "escape"],
    )
    actions: dict[str, str] = _doc(
        "Override the action of a rule id or a whole pack: record, flag, block or kill.",
        factory=dict,
    )
    rules: list[dict[str, Any]] = _doc("Extra rules (see the guard docs).", factory=list)


@dataclass(frozen=True)
class GpuSection:
    """GPU grant; its absence means no GPU at all."""

    devices: list[str] = _doc("Granted GPUs by index or UUID.", factory=list)
    count: int = _doc("Or: grant this many GPUs (the first free ones).", 0)
    memory_limit_mib: int = _doc("Per-device memory quota; 0 = none.", 0)
    utilization_limit_percent: int = _doc("Sustained utilisation quota; 0 = none.", 0)
    utilization_window_s: float = _doc("How long utilisation may stay over quota.", 10.0)
    on_breach: Literal["flag", "kill"] = _doc("What a breach does.", "kill")
    require: bool = _doc("Refuse to start when NVML or the devices are missing.", True)
    poll_interval_s: float = _doc("NVML poll interval (the enforcement window).", 1.0)


@dataclass(frozen=True)
class HoneytokensSection:
    """Decoy credentials planted in the workspace HOME; touching them raises an alert."""

    ssh_key: bool = _doc("Plant ~/.ssh/id_rsa.", False)
    aws_credentials: bool = _doc("Plant ~/.aws/credentials.", False)
    env_token: str = _doc("Name of an env var that holds a decoy token; empty = none.", "")


@dataclass(frozen=True)
class ImageSection:
    """The root filesystem: the host's (read-only), or a stored OCI image's."""

    ref: str = _doc("Image name or digest from `sandbox image ls`; empty = the host's "
                    "filesystem. Pull or import it first.", "")
    workdir: str = _doc("Where the workspace is mounted and commands start; empty = the "
                        "image's WorkingDir, else /workspace.", "")
    seed: bool = _doc("Copy what the image holds at that directory into a fresh workspace "
                      "(a task's repository stays visible and is the agent's to edit).", True)


@dataclass(frozen=True)
class ExecSection:
    """How `exec` enters the running jail."""

    fast: bool = _doc("Fork each command from a helper started inside the jail with it "
                      "(no firejail join per command); its exit status is the kernel's, "
                      "and a broken helper is an alert and a fall back to the join.", True)


@dataclass(frozen=True)
class Profile:
    """A resolved profile: every section filled, every value checked."""

    NOT_IN_FILES: ClassVar[frozenset[str]] = frozenset({"name", "sources"})
    """Set by `load` (the name asked for, the files read), never by a file."""
    name: str = _doc("The profile's name (its file name without .toml).", "default")
    description: str = _doc("One line shown by `sandbox profiles`.", "")
    extends: str = _doc("Parent profile name or path.", "")
    sources: list[str] = _doc("Files merged to make this profile, parent first.", factory=list)
    filesystem: FilesystemSection = field(default_factory=FilesystemSection)
    env: EnvSection = field(default_factory=EnvSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    recording: RecordingSection = field(default_factory=RecordingSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    guard: GuardSection = field(default_factory=GuardSection)
    # Security choice: no [gpu] table = no GPU (device nodes hidden, CUDA_VISIBLE_DEVICES="").
    gpu: GpuSection | None = None
    honeytokens: HoneytokensSection = field(default_factory=HoneytokensSection)
    image: ImageSection = field(default_factory=ImageSection)
    exec: ExecSection = field(default_factory=ExecSection)


MAX_PROFILE_BYTES = 1 << 20  # a profile is a page of TOML; anything bigger is a mistake


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in (
            "set", "actions", "protocols"
        ):
            merged[key] = _merge(merged[key], value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_file(path: Path) -> dict[str, Any]:
    """Parse and validate one profile file (no merging); cached by path, mtime and size,
    since RL runs start thousands of sessions from the same few files."""
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise NotFound(f"profile file not found: {path}") from e
    if st.st_size > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: {st.st_size} bytes is too big for a profile (the most "
                           f"is {MAX_PROFILE_BYTES >> 20} MiB); is it the right file?")
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        _CACHE[key] = _read_file(path)
    return copy.deepcopy(_CACHE[key])


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as e:
        raise NotFound(f"profile file not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: invalid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path}: not UTF-8: {e}") from e
    return validate_table(raw, Profile, "", str(path))


def search_path() -> list[Path]:
    """Directories searched for profile names, in order."""
    return [paths.builtin_profile_dir(), paths.user_profile_dir()]


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".toml")


def find(ref: str) -> Path:
    """Resolve a profile name or path to a file."""
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise NotFound(f"profile file not found: {path}")
        return path.resolve()
    for directory in search_path():
        candidate = directory / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(available())) or "none"
    raise NotFound(f"unknown profile {ref!r}; available: {names} (or pass ./file.toml)")


def available() -> dict[str, Path]:
    """Every profile name on the search path (later directories win)."""
    found: dict[str, Path] = {}
    for directory in search_path():
        if directory.is_dir():
            for p in sorted(directory.glob("*.toml")):
                found[p.stem] = p
    return found


def load(ref: str = "default") -> Profile:
    """Load a profile by name or path, following `extends`, and validate it."""
    chain: list[Path] = []
    data: dict[str, Any] = {}
    current: str | None = ref
    while current:
        try:
            path = find(current)
        except NotFound as e:
            if not chain:
                raise
            raise ProfileError(f"{chain[-1]}: extends = {current!r}, which is not a "
                               f"profile: {e}") from None
        if path in chain:
            loop = " -> ".join(str(p) for p in [*chain, path])
            raise ProfileError(f"profile extends loop: {loop}")
        chain.append(path)
        raw = read_file(path)
        data = _merge(raw, data)
        parent = raw.get("extends", "")
        if parent and _looks_like_path(parent) and not Path(parent).is_absolute():
            parent = str((path.parent / parent).resolve())
        current = parent or None
    data["name"] = Path(ref).stem if _looks_like_path(ref) else ref
    data["sources"] = [str(p) for p in reversed(chain)]
    data["extends"] = data.get("extends", "") if len(chain) > 1 else ""
    return typing.cast(Profile, build(Profile, data))


def to_dict(obj: Any) -> Any:
    """A profile (or section) as plain data, for `profiles show` and the store."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def override(profile: Profile, changes: dict[str, Any], where: str = "code") -> Profile:
    """`profile` with `changes` (tables as in a profile file, e.g. {"network": {"mode":
    "guarded"}}) merged over it and checked like a file: the per-sandbox settings of the
    API. `where` names the source in error messages."""
    checked = validate_table(changes, Profile, "", where)
    data = _merge({k: v for k, v in to_dict(profile).items() if v is not None}, checked)
    return typing.cast(Profile, build(Profile, data))
