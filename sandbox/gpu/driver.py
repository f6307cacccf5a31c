"""The host driver's user-space side that a CUDA image needs, found as
nvidia-container-cli finds it: the NVIDIA libraries `ldconfig -p` lists and the driver's
tools on the trusted PATH. A sandbox in an image with a GPU grant gets each one bound
read-only at the same path (see `images.rootfs.prepare`): CUDA images ship the toolkit,
never the driver, whose libraries must match the host's kernel module.

`parse_ldconfig` is pure (tested on text); `driver_files` asks the host, or a backend that
says what its driver files are (the fake NVML's, in tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from ..jail import launch

LIBRARIES = (
    "libcuda", "libcudadebugger", "libnvidia-ml", "libnvidia-ptxjitcompiler",
    "libnvidia-nvvm", "libnvidia-gpucomp", "libnvidia-allocator", "libnvidia-cfg",
    "libnvidia-compiler", "libnvidia-opencl", "libnvidia-fatbinaryloader",
)
"""The compute set (nvidia-container-cli's "utility" and "compute" capabilities)."""
TOOLS = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
         "nvidia-cuda-mps-server")

_LINE = re.compile(r"^\s*(\S+)\s+\((?P<flags>[^)]*)\)\s+=>\s+(?P<path>/\S+)$")


def parse_ldconfig(text: str, arch: str = "x86-64") -> list[str]:
    """The paths of the driver libraries in `ldconfig -p` output, 64-bit only."""
    out: list[str] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or (arch and arch not in m["flags"]):
            continue
        name = m.group(1)
        if any(name == lib or name.startswith(lib + ".so") for lib in LIBRARIES) \
                and m["path"] not in out:
            out.append(m["path"])
    return out


def driver_files(backend: Any = None) -> list[str]:
    """Host files to bind into an image for a GPU grant (absolute, existing)."""
    own = getattr(backend, "driver_files", None)
    if own is not None:
        return [p for p in own if os.path.isfile(p)]
    try:
        text = subprocess.run([launch.tool("ldconfig"), "-p"], capture_output=True,
                              text=True, timeout=10, check=False,
                              env=launch.supervisor_env()).stdout
    except Exception:  # no ldconfig: no libraries to offer, the tools below still count
        text = ""
    files = parse_ldconfig(text)
    for tool in TOOLS:
        found = shutil.which(tool, path=launch.TRUSTED_PATH)
        if found:
            files.append(found)
    return [p for p in files if os.path.isfile(p)]
