"""Honeytokens: planting decoys, and catching them touched or leaving."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from sandbox.events import ListEmit
from sandbox.guard import (
    HONEYTOKEN_EXFIL,
    HONEYTOKEN_TOUCH,
    CommandText,
    DnsQuery,
    NetworkAttempt,
    ProcessExec,
    Token,
    build_engine,
    plant,
    scan,
)
from sandbox.jail.profile import GuardSection, HoneytokensSection

ALL = HoneytokensSection(ssh_key=True, aws_credentials=True, env_token="AWS_SESSION_TOKEN")


def test_plant_writes_well_formed_unique_decoys(tmp_path: Path) -> None:
    tokens = plant(tmp_path, ALL)
    assert [t.kind for t in tokens] == ["ssh_key", "aws_credentials", "env_token"]
    key = (tmp_path / ".ssh/id_rsa").read_text()
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE")
    creds = (tmp_path / ".aws/credentials").read_text()
    assert re.search(r"aws_access_key_id = AKIA[A-Z2-7]{16}\n", creds)
    assert stat.S_IMODE((tmp_path / ".aws/credentials").stat().st_mode) == 0o600
    env = tokens[2]
    assert env.env_name == "AWS_SESSION_TOKEN" and env.env_value in env.values
    other = plant(tmp_path / "other", ALL)
    assert {t.marker for t in tokens}.isdisjoint({t.marker for t in other})


def test_plant_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws/credentials").write_text("real")
    tokens = plant(tmp_path, HoneytokensSection(aws_credentials=True))
    assert tokens == []
    assert (tmp_path / ".aws/credentials").read_text() == "real"


def test_plant_nothing_by_default(tmp_path: Path) -> None:
    assert plant(tmp_path, HoneytokensSection()) == []
    assert list(tmp_path.iterdir()) == []


def test_scan_finds_values_in_text_bytes_and_dns(tmp_path: Path) -> None:
    tokens = plant(tmp_path, ALL)
    ssh, aws, env = tokens
    creds = (tmp_path / ".aws/credentials").read_bytes()
    assert scan(b"POST /x HTTP/1.1\r\n\r\n" + creds, tokens) == [aws]
    assert scan((tmp_path / ".ssh/id_rsa").read_bytes(), tokens) == [ssh]
    key_id = aws.values[0].lower()
    assert scan(f"{key_id}.exfil.203-0-113-9.test", tokens) == [aws]
    assert scan(f"token={env.env_value}", tokens) == [env]
    assert scan("AKIAIOSFODNN7EXAMPLE nothing to see", tokens) == []
    assert Token.from_dict(aws.to_dict()) == aws


def test_reading_decoy_is_flagged_as_honeytoken(tmp_path: Path) -> None:
    tokens = plant(tmp_path, ALL)
    engine = build_engine(GuardSection(), honeytokens=tokens)
    vs = engine.evaluate(CommandText("cat ~/.aws/credentials"))
    hit = [v for v in vs if v.rule_id == HONEYTOKEN_TOUCH]
    assert hit and hit[0].kind == "honeytoken.touched" and hit[0].severity == "critical"
    assert hit[0].extra["token"] == [tokens[1].label]
    emit = ListEmit()
    hit[0].emit(emit)
    ev = emit.of_kind("honeytoken.touched")[0]
    assert ev["rule"] == HONEYTOKEN_TOUCH and ev["detail"]["where"] == "command"
    # a glob over the directory, and the process view after the shell expanded it
    assert HONEYTOKEN_TOUCH in {v.rule_id for v in engine.evaluate(CommandText("base64 ~/.ssh/*"))}
    argv = ("cat", str(tmp_path / ".ssh/id_rsa"))
    assert HONEYTOKEN_TOUCH in {v.rule_id for v in engine.evaluate(ProcessExec(argv, exe="/bin/cat"))}
    # listing is not reading
    assert HONEYTOKEN_TOUCH not in {v.rule_id for v in engine.evaluate(CommandText("ls ~/.ssh"))}
    assert HONEYTOKEN_TOUCH not in {v.rule_id for v in engine.evaluate(CommandText("cat ~/.ssh/id_rsa.pub"))}


def test_decoy_value_leaving_is_killed(tmp_path: Path) -> None:
    tokens = plant(tmp_path, ALL)
    engine = build_engine(GuardSection(), honeytokens=tokens)
    dns = engine.evaluate(DnsQuery(tokens[1].values[0].lower() + ".203-0-113-9.test", "A"))
    assert (dns[0].rule_id, dns[0].action) == (HONEYTOKEN_EXFIL, "kill")
    body = (tmp_path / ".ssh/id_rsa").read_bytes()
    net = engine.evaluate(NetworkAttempt("203.0.113.9", 443, "http", payload=b"key=" + body))
    assert HONEYTOKEN_EXFIL in {v.rule_id for v in net}
    used = engine.evaluate(CommandText(f"aws configure set aws_access_key_id {tokens[1].values[0]}"))
    assert HONEYTOKEN_TOUCH in {v.rule_id for v in used}


def test_honeytoken_action_overridable(tmp_path: Path) -> None:
    tokens = plant(tmp_path, ALL)
    engine = build_engine(GuardSection(actions={HONEYTOKEN_TOUCH: "kill"}), honeytokens=tokens)
    vs = engine.evaluate(CommandText("cat ~/.aws/credentials"))
    assert vs[0].rule_id == HONEYTOKEN_TOUCH and vs[0].action == "kill"
