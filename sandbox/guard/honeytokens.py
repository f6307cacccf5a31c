"""Honeytokens: decoy credentials planted in the sandbox HOME, and spotting them again.

`plant(home, section)` writes what the profile's `[honeytokens]` asks for: an OpenSSH
private key at `~/.ssh/id_rsa`, an AWS credentials file at `~/.aws/credentials` (a
well-formed `AKIA...` key id and a 40-character secret) and a token value for an
environment variable. Each gets fresh random bytes, so every value is unique to the
session and nothing real ever matches it.

A hit is either a touch (the planted path named in a command or an exec's argv) or a
value seen where it should never be: a command line, a DNS name, the bytes a connection
sends. `scan` finds values, also lower-cased and split into DNS labels (it matches
24-character pieces with dots and whitespace removed). A value re-encoded before it
leaves (base64 of the key, encryption) is not seen: the touch is what catches that.

The supervisor owns the files (chown to the agent user) and the env var; this module only
makes and recognises them.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jail.profile import HoneytokensSection
from .evidence import CommandText, DnsQuery, Evidence, NetworkAttempt, ProcessExec

_B32 = string.ascii_uppercase + "234567"
_ALNUM = string.ascii_letters + string.digits
_PIECE = 24  # needle length: long enough to be unique, short enough for a DNS label


@dataclass(frozen=True)
class Token:
    """One planted decoy. `values` are the secret strings; `path` is empty for env tokens."""

    kind: str  # ssh_key | aws_credentials | env_token
    marker: str  # short random id, shown in alerts (not secret)
    values: tuple[str, ...]
    path: str = ""  # absolute path of the planted file
    home_path: str = ""  # the same path relative to HOME, e.g. ".ssh/id_rsa"
    env_name: str = ""
    env_value: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.marker}"

    def needles(self) -> list[str]:
        """Lower-case pieces of the values that `scan` looks for."""
        out: list[str] = []
        for value in self.values:
            flat = re.sub(r"[\s.]", "", value).lower()
            if len(flat) <= _PIECE:
                out.append(flat)
            else:
                out.extend(flat[i:i + _PIECE] for i in range(0, len(flat) - _PIECE + 1, _PIECE))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data, to keep the session's tokens in its state row."""
        return {
            "kind": self.kind, "marker": self.marker, "values": list(self.values),
            "path": self.path, "home_path": self.home_path, "env_name": self.env_name,
            "env_value": self.env_value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Token:
        return cls(
            kind=str(data["kind"]), marker=str(data["marker"]),
            values=tuple(str(v) for v in data.get("values", [])),
            path=str(data.get("path", "")), home_path=str(data.get("home_path", "")),
            env_name=str(data.get("env_name", "")), env_value=str(data.get("env_value", "")),
        )


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def make_ssh_key(home: Path) -> tuple[Token, str]:
    """A decoy OpenSSH private key (random bytes behind the real header) and its text."""
    marker = secrets.token_hex(6)
    blob = b"openssh-key-v1\x00" + b"\x00\x00\x00\x04none" * 2 + secrets.token_bytes(380)
    body = base64.b64encode(blob).decode()
    lines = [body[i:i + 70] for i in range(0, len(body), 70)]
    text = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines)
            + "\n-----END OPENSSH PRIVATE KEY-----\n")
    # The first line is the header every OpenSSH key shares; the rest is ours alone.
    values = tuple(line for line in lines[1:] if len(line) >= _PIECE)
    rel = ".ssh/id_rsa"
    return Token("ssh_key", marker, values, str(home / rel), rel), text


def make_aws_credentials(home: Path) -> tuple[Token, str]:
    """A decoy ~/.aws/credentials: a well-formed AKIA key id and a 40-character secret."""
    key_id = "AKIA" + _rand(_B32, 16)
    secret = _rand(_ALNUM + "+/", 40)
    text = (f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
            "region = us-east-1\n")
    rel = ".aws/credentials"
    return Token("aws_credentials", key_id[4:12].lower(), (key_id, secret),
                 str(home / rel), rel), text


def make_env_token(name: str) -> Token:
    """A decoy value for an environment variable, shaped like what the name suggests."""
    upper = name.upper()
    if "GITHUB" in upper or upper.startswith("GH_"):
        value = "ghp_" + _rand(_ALNUM, 36)
    elif "AWS_SECRET" in upper:
        value = _rand(_ALNUM + "+/", 40)
    elif upper.startswith("AWS_"):
        value = "IQoJb3JpZ2luX2Vj" + _rand(_ALNUM, 160)
    elif "OPENAI" in upper:
        value = "sk-proj-" + _rand(_ALNUM, 48)
    else:
        value = _rand(_ALNUM, 40)
    return Token("env_token", secrets.token_hex(6), (value,), env_name=name, env_value=value)


def _write(path: Path, text: str) -> bool:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite a file that is already there (it may be real).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return True


def plant(home_dir: Path, section: HoneytokensSection) -> list[Token]:
    """Write the decoys the section asks for under `home_dir`; return what was planted.

    An existing file is never overwritten (that decoy is skipped). The env token is only
    returned: the caller puts `token.env_name=token.env_value` in the jail's environment.
    """
    home = Path(home_dir)
    tokens: list[Token] = []
    if section.ssh_key:
        token, text = make_ssh_key(home)
        if _write(Path(token.path), text):
            tokens.append(token)
    if section.aws_credentials:
        token, text = make_aws_credentials(home)
        if _write(Path(token.path), text):
            tokens.append(token)
    if section.env_token:
        tokens.append(make_env_token(section.env_token))
    return tokens


def scan(data: str | bytes, tokens: Iterable[Token]) -> list[Token]:
    """The tokens whose values appear in `data` (case-insensitive, dots/whitespace ignored)."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    flat = re.sub(r"[\s.]", "", text).lower()
    if not flat:
        return []
    return [t for t in tokens if any(n and n in flat for n in t.needles())]


def touched(text: str, tokens: Iterable[Token]) -> list[Token]:
    """The file tokens whose path (or a glob over its directory) the text names."""
    hits = []
    for token in tokens:
        if not token.home_path:
            continue
        rel = re.escape(token.home_path)
        parent = re.escape(os.path.dirname(token.home_path))
        anchor = r"(?:^|[\s'\"=:<>;&|(]|~/|\$HOME/|\$\{HOME\}/|/)"
        pattern = (anchor + r"(?:" + rel + r"(?![\w.-])" + r"|" + parent
                   + r"/(?:\*|id_\*|\w*\*)" + r")")
        if re.search(pattern, text) or (token.path and token.path in text):
            hits.append(token)
    return hits


def _argv_paths(argv: Sequence[str], tokens: Iterable[Token]) -> list[Token]:
    hits = []
    for token in tokens:
        if token.path and any(
            a == token.path or a.endswith("/" + token.home_path) or a == token.home_path
            for a in argv
        ):
            hits.append(token)
    return hits


@dataclass(frozen=True)
class HoneytokenMatch:
    """A rule matcher over planted tokens: mode "touch" (paths, values in commands) or
    "exfil" (values in DNS names and outbound bytes)."""

    tokens: tuple[Token, ...]
    mode: str = "touch"

    def hits(self, evidence: Evidence, texts: Sequence[str]) -> list[tuple[Token, str]]:
        """(token, how) pairs for this evidence."""
        out: list[tuple[Token, str]] = []
        if self.mode == "touch":
            if isinstance(evidence, CommandText):
                joined = "\n".join(texts)
                out += [(t, "path in command") for t in touched(joined, self.tokens)]
                out += [(t, "value in command") for t in scan(joined, self.tokens)]
            elif isinstance(evidence, ProcessExec):
                out += [(t, "path in argv") for t in _argv_paths(evidence.argv, self.tokens)]
                out += [(t, "value in argv") for t in scan(" ".join(evidence.argv), self.tokens)]
        elif isinstance(evidence, DnsQuery):
            out += [(t, "value in DNS name") for t in scan(evidence.name, self.tokens)]
        elif isinstance(evidence, NetworkAttempt):
            out += [(t, "value in outbound bytes") for t in scan(evidence.payload, self.tokens)]
            out += [(t, "value in host name") for t in scan(evidence.name, self.tokens)]
        seen: set[str] = set()
        unique = []
        for token, how in out:
            if token.label not in seen:
                seen.add(token.label)
                unique.append((token, how))
        return unique

    def match(self, evidence: Evidence, texts: Sequence[str]) -> str | None:
        found = self.hits(evidence, texts)
        if not found:
            return None
        return "; ".join(f"{t.label} ({how})" for t, how in found)
