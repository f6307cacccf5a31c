"""The core never imports Textual; the public API is explicit."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import sandbox


def test_core_modules_do_not_import_textual() -> None:
    # The adapters import their frameworks (inspect-ai brings Textual): optional extras,
    # never imported by the core itself.
    names = [m.name for m in pkgutil.walk_packages(sandbox.__path__, "sandbox.")
             if not m.name.endswith("__main__") and not m.name.startswith("sandbox.adapters")]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]\n"
        "print(len(sys.modules)); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr or "textual was imported by the core"
    assert len(names) > 10


def test_public_api() -> None:
    assert "Sandbox" in sandbox.__all__ and "SandboxError" in sandbox.__all__
    for name in sandbox.__all__:
        assert hasattr(sandbox, name)
    assert issubclass(sandbox.CommandTimeout, TimeoutError)
    assert issubclass(sandbox.ProfileError, ValueError)
