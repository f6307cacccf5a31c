"""Profiles: strict schema, extends, search path, errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import ProfileError, load_profile
from sandbox.errors import NotFound


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_profiles_load() -> None:
    for name in ("default", "strict", "pypi", "gpu"):
        p = load_profile(name)
        assert p.name == name
    assert load_profile("default").network.mode == "none"
    assert load_profile("default").gpu is None
    assert load_profile("strict").limits.processes < load_profile("default").limits.processes


def test_unknown_key_names_file_and_key(test_dir: Path) -> None:
    f = write(test_dir / "bad.toml", 'extends = "default"\n[limits]\nprocesess = 5\n')
    with pytest.raises(ProfileError) as e:
        load_profile(str(f))
    msg = str(e.value)
    assert str(f) in msg
    assert "'limits.procesess'" in msg and "allowed here" in msg and "processes" in msg


def test_wrong_type_names_what_is_allowed(test_dir: Path) -> None:
    f = write(test_dir / "t.toml", '[network]\nmode = "open"\n')
    with pytest.raises(ProfileError, match=r"t\.toml.*network\.mode.*'none' \| 'allowlist'"):
        load_profile(str(f))
    f = write(test_dir / "u.toml", "[limits]\nprocesses = \"many\"\n")
    with pytest.raises(ProfileError, match=r"limits\.processes: expected int, got str"):
        load_profile(str(f))


def test_unknown_table(test_dir: Path) -> None:
    f = write(test_dir / "v.toml", "[netwrok]\nmode = 'none'\n")
    with pytest.raises(ProfileError, match="unknown key 'netwrok'"):
        load_profile(str(f))


def test_invalid_toml_names_file(test_dir: Path) -> None:
    f = write(test_dir / "w.toml", "[limits\n")
    with pytest.raises(ProfileError, match=r"w\.toml: invalid TOML"):
        load_profile(str(f))


def test_extends_merges_and_child_wins(test_dir: Path) -> None:
    f = write(test_dir / "child.toml",
              'extends = "strict"\n[limits]\nprocesses = 64\n[env.set]\nFOO = "1"\n')
    p = load_profile(str(f))
    assert p.limits.processes == 64
    assert p.limits.open_files == 256  # from strict
    assert p.guard.actions["mining"] == "kill"  # from strict
    assert p.env.set == {"FOO": "1"}
    assert [Path(s).name for s in p.sources] == ["default.toml", "strict.toml", "child.toml"]


def test_extends_loop_is_an_error(test_dir: Path) -> None:
    write(test_dir / "a.toml", 'extends = "./b.toml"\n')
    write(test_dir / "b.toml", 'extends = "./a.toml"\n')
    with pytest.raises(ProfileError, match="loop"):
        load_profile(str(test_dir / "a.toml"))


def test_user_dir_is_searched(test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_PROFILE_DIR", str(test_dir))
    write(test_dir / "mine.toml", 'description = "mine"\nextends = "default"\n')
    assert load_profile("mine").description == "mine"
    with pytest.raises(NotFound, match=r"available: .*default.*mine"):
        load_profile("nosuch")
