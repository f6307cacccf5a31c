#!/usr/bin/env python3
"""GPU smoke test for a machine with a real NVIDIA GPU (the test suite uses FakeNvml).

    python scripts/gpu_smoke.py              # NVML part, then real sandboxes (needs root)
    python scripts/gpu_smoke.py --nvml-only  # NVML + GpuMonitor on a host process only
    python scripts/gpu_smoke.py --image deb --image-tar rootfs.tar  # and in an image

NVML part: list devices through the real backend; run a real CUDA workload (PyTorch if
importable, else cuMemAlloc through libcuda with ctypes) under a shell; check that the
monitor attributes it to a session rooted at that shell and kills it when it goes over
a memory quota.
Sandbox part: a sandbox granted GPU 0 with a memory quota runs the same workload; NVML
must show its process inside the jail's tree, going over the quota must end the session,
and the session's events must hold gpu.sample and gpu.breach. A sandbox without [gpu]
must see no /dev/nvidia* node, an empty CUDA_VISIBLE_DEVICES and no CUDA device.

Every check prints one PASS/FAIL/SKIP line; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUOTA_MIB = 2048  # above a CUDA context (~300-600 MiB) plus the first allocation
FIRST_MIB = 256
THEN_MIB = 4096  # pushes the process well over QUOTA_MIB

# The workload: allocate FIRST_MIB, say READY, wait for the go file, allocate THEN_MIB,
# then hold until killed. `--probe` only reports whether CUDA sees a device.
WORKER = r'''
import ctypes, os, sys, time
args = sys.argv[1:]
KEEP = []
probe = args[0] == "--probe"

def with_torch():
    import torch
    if probe:
        print("CUDA_DEVICES", torch.cuda.device_count() if torch.cuda.is_available() else 0)
        return None
    def alloc(mib):
        KEEP.append(torch.ones(mib << 20, dtype=torch.uint8, device="cuda"))
    alloc(FIRST)
    return alloc

def with_ctypes():
    try:
        cu = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        if probe:
            print("CUDA_DEVICES 0 (no libcuda:", e, ")")
            return None
        sys.exit(f"libcuda.so.1 not loadable: {e}")
    rc = cu.cuInit(0)
    n = ctypes.c_int(0)
    if rc == 0:
        rc = cu.cuDeviceGetCount(ctypes.byref(n))
    if probe:
        print("CUDA_DEVICES", n.value if rc == 0 else 0, "rc", rc)
        return None
    if rc != 0 or n.value < 1:
        sys.exit(f"cuInit/cuDeviceGetCount failed: rc={rc} n={n.value}")
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
    def alloc(mib):
        p = ctypes.c_uint64()
        rc = cu.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(mib << 20))
        assert rc == 0, f"cuMemAlloc rc={rc}"
        assert cu.cuMemsetD8_v2(p, 1, ctypes.c_size_t(mib << 20)) == 0
        KEEP.append(p)
    alloc(FIRST)
    return alloc

FIRST = int(args[1]) if not probe else 0
try:
    alloc = with_torch()
    how = "torch"
except Exception as e:  # no torch, or torch without CUDA
    print("torch unusable:", e, flush=True)
    alloc = with_ctypes()
    how = "ctypes"
if probe:
    sys.exit(0)
print("READY", how, flush=True)
go, then = args[2], int(args[3])
deadline = time.time() + 120
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.1)
alloc(then)
print("ALLOCATED", then, flush=True)
time.sleep(120)
'''

failures = 0


def report(ok: bool | None, name: str, detail: str = "") -> bool:
    global failures
    word = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    if ok is False:
        failures += 1
    print(f"{word}  {name}" + (f": {detail}" if detail else ""), flush=True)
    return bool(ok)


def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)} | {pid}
    except psutil.NoSuchProcess:
        return set()


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- NVML only ------------------------------------------------------------------------


def nvml_part(work: Path) -> None:
    os.environ.pop("SANDBOX_FAKE_NVML", None)
    from sandbox.events import ListEmit
    from sandbox.gpu import GpuMonitor, SessionGpu, get_backend
    from sandbox.jail.profile import GpuSection

    try:
        backend = get_backend()
        devices = backend.devices()
    except Exception as e:
        report(False, "nvml: devices", str(e))
        return
    report(bool(devices), "nvml: devices", "; ".join(
        f"{d.index}: {d.name} {d.uuid} {d.memory_total >> 20} MiB /dev/nvidia{d.minor_number}"
        for d in devices))
    try:
        procs = backend.processes(0)
        report(True, "nvml: processes/utilization calls",
               f"{len(procs)} process(es) on GPU 0, util {backend.utilization(0)}, "
               f"per-process {backend.process_utilization(0, 0)}")
    except Exception as e:
        report(False, "nvml: processes/utilization calls", repr(e))
        return

    go = work / "go-host"
    worker = work / "worker.py"
    cmd = f"{sys.executable} {worker} --run {FIRST_MIB} {go} {THEN_MIB}; :"
    proc = subprocess.Popen(["sh", "-c", cmd], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    emit = ListEmit()
    kills: list[str] = []

    def kill(sid: str, reason: str) -> None:
        kills.append(reason)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    section = GpuSection(devices=["0"], memory_limit_mib=QUOTA_MIB, on_breach="kill")
    sessions = {"smoke": SessionGpu(proc.pid, section, (0,))}
    mon = GpuMonitor(backend, 0.25, lambda sid: emit, kill, lambda: sessions)
    try:
        with mon:
            ready = wait_for(lambda: any(ln.startswith("READY") for ln in lines), 90)
            if not report(bool(ready), "host workload: CUDA allocation", "".join(lines)[-400:]):
                return
            sample = wait_for(lambda: emit.of_kind("gpu.sample"), 15)
            tree = descendants(proc.pid)
            ok = bool(sample) and set(sample[-1]["detail"]["pids"]) <= tree
            report(ok, "host workload: NVML pid attributed to its session",
                   str(sample[-1]["detail"]) if sample else "no gpu.sample")
            go.touch()
            gone = wait_for(lambda: kills and proc.poll() is not None, 60)
            breach = emit.of_kind("gpu.breach")
            report(bool(gone and breach), "host workload: over quota -> gpu.breach + kill",
                   f"breach={breach[-1]['detail'] if breach else None} kills={kills}")
            left = wait_for(lambda: not [p for p in backend.processes(0) if p.pid in tree], 15)
            report(bool(left), "host workload: gone from NVML after the kill")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- real sandboxes -------------------------------------------------------------------


# Blacklisted nodes still show in `ls` (as empty unreadable files): count char devices.
LIST_NODES = ('for f in /dev/nvidia*; do [ -c "$f" ] && echo "CHR=$f"; done; '
              'echo "CVD=[$CUDA_VISIBLE_DEVICES]"')


def char_nodes(output: str) -> set[str]:
    return {ln.strip()[4:] for ln in output.splitlines() if ln.strip().startswith("CHR=")}


def workspace(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        from sandbox.jail.users import ensure_agent_user

        agent = ensure_agent_user()
        os.chown(path, agent.uid, agent.gid)
        path.chmod(0o777)
    return path


def sandbox_part(work: Path) -> None:
    try:
        from sandbox import Sandbox
        from sandbox.gpu import get_backend
    except Exception as e:
        report(False, "sandbox: import", repr(e))
        return
    backend = get_backend()
    ws = workspace(work / "ws")
    (ws / "worker.py").write_text(WORKER)
    profile = work / "gpu-smoke.toml"
    profile.write_text(
        'extends = "default"\n[gpu]\ndevices = ["0"]\n'
        f'memory_limit_mib = {QUOTA_MIB}\non_breach = "kill"\nrequire = true\n'
        'poll_interval_s = 0.5\n'
    )
    n_gpus = len(backend.devices())

    # 1. A granted sandbox sees GPU 0 only.
    try:
        sb = Sandbox(profile=str(profile), workdir=ws).start()
    except Exception as e:
        report(False, "sandbox with [gpu]: start", repr(e))
        return
    try:
        r = sb.run(LIST_NODES, timeout=60)
        dev0 = backend.devices()[0]
        want = {n for n in (f"/dev/nvidia{dev0.minor_number}", "/dev/nvidiactl",
                            "/dev/nvidia-uvm", "/dev/nvidia-modeset") if os.path.exists(n)}
        ok = char_nodes(r.output) == want and f"CVD=[{dev0.uuid}]" in r.output
        report(ok, "sandbox with [gpu]: only its GPU's node (+ control nodes), its UUID",
               f"want {sorted(want)}; got " + r.output.strip().replace("\n", " | "))
        r = sb.run("python3 worker.py --probe", timeout=120)
        report("CUDA_DEVICES 1" in r.output, "sandbox with [gpu]: CUDA sees exactly 1 device",
               r.output.strip().replace("\n", " | ") + f" (host has {n_gpus})")

        # 2. The workload is attributed to the session, and over quota kills it.
        go = ws / "go"
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["r"] = sb.run(f"python3 worker.py --run {FIRST_MIB} go {THEN_MIB}",
                                  timeout=240)
            except Exception as e:  # SessionClosed once the monitor kills it
                out["e"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        jail = getattr(getattr(sb, "_session", None), "jail_pid", None)

        def mine() -> list[Any]:
            tree = descendants(jail) if jail else set()
            return [p for p in backend.processes(0) if p.pid in tree]

        found = wait_for(mine, 90)
        report(bool(found), "sandbox with [gpu]: NVML process inside the jail's tree",
               f"jail pid {jail}, NVML {[(p.pid, p.used_memory >> 20) for p in found]}")
        store = getattr(getattr(sb, "_session", None), "store", None)

        def events(kind: str) -> list[dict[str, Any]]:
            return store.events(sb.id, kinds=(kind,)) if store is not None else []

        sample = wait_for(lambda: events("gpu.sample"), 15)
        report(bool(sample), "sandbox with [gpu]: gpu.sample recorded for the session",
               str(sample[-1].get("detail")) if sample else "none (is GpuPart wired in?)")
        go.touch()
        t.join(60)
        ended = wait_for(lambda: sb.state != "running", 30)
        breach = events("gpu.breach")
        pids = [p.pid for p in found]
        # A killed CUDA process can take a moment to be reaped while the driver frees it.
        gone = wait_for(lambda: not any(alive(p) for p in pids), 20)
        report(bool(ended and breach and gone),
               "sandbox with [gpu]: over quota -> gpu.breach, session killed",
               f"state={sb.state} breach={bool(breach)} gone={bool(gone)} run={out}")
    finally:
        sb.close()

    # 3. No [gpu]: nothing to see, nothing to use.
    try:
        with Sandbox(profile="default", workdir=ws) as plain:
            r = plain.run(LIST_NODES, timeout=60)
            ok = not char_nodes(r.output) and "CVD=[]" in r.output
            report(ok, "sandbox without [gpu]: no usable /dev/nvidia*, empty CUDA_VISIBLE_DEVICES",
                   r.output.strip().replace("\n", " | "))
            r = plain.run("CUDA_VISIBLE_DEVICES=0 python3 worker.py --probe 2>&1", timeout=120)
            report("CUDA_DEVICES 0" in r.output,
                   "sandbox without [gpu]: CUDA finds no device even when asked for GPU 0",
                   r.output.strip().replace("\n", " | "))
    except Exception as e:
        report(False, "sandbox without [gpu]", repr(e))


def image_part(work: Path, image: str, tarball: str | None) -> None:
    """A sandbox in an image with GPU 0: its node only, the host driver's libraries bound
    in read-only (the image brings no driver), and CUDA sees one device through them."""
    try:
        from sandbox import Sandbox
        from sandbox.gpu import get_backend
        from sandbox.jail.images import ImageStore

        if tarball:
            ImageStore().import_rootfs(Path(tarball), image)
        ImageStore().resolve(image)
    except Exception as e:
        report(False, f"image {image}: ready", repr(e))
        return
    backend = get_backend()
    profile = work / "gpu-image.toml"
    profile.write_text('extends = "default"\n[gpu]\ndevices = ["0"]\nrequire = true\n')
    try:
        with Sandbox(profile=str(profile), image=image) as sb:
            sb.write_file("worker.py", WORKER)
            r = sb.exec(["sh", "-c", LIST_NODES], timeout=60)
            dev0 = backend.devices()[0]
            report(f"CVD=[{dev0.uuid}]" in r.stdout, "image with [gpu]: its GPU's UUID only",
                   r.stdout.strip().replace("\n", " | "))
            r = sb.exec("ls /usr/lib/x86_64-linux-gnu/libcuda.so* && echo x > "
                        "$(ls /usr/lib/x86_64-linux-gnu/libcuda.so* | head -1) 2>&1; true")
            report("Read-only" in r.stdout + r.stderr,
                   "image with [gpu]: host driver libraries bound read-only",
                   (r.stdout + r.stderr).strip().replace("\n", " | "))
            r = sb.exec(["python3", "worker.py", "--probe"], timeout=120)
            report("CUDA_DEVICES 1" in r.stdout, "image with [gpu]: CUDA sees exactly 1 device",
                   (r.stdout + r.stderr).strip().replace("\n", " | "))
    except Exception as e:
        report(False, "image with [gpu]", repr(e))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nvml-only", action="store_true",
                    help="skip the sandbox part (no sandbox API or root needed)")
    ap.add_argument("--image", metavar="NAME",
                    help="also run the image part in this stored image (python3 with ctypes)")
    ap.add_argument("--image-tar", metavar="ROOTFS.tar",
                    help="import this rootfs tarball as --image first")
    args = ap.parse_args()
    base = Path("/srv/sandbox-tests") if os.geteuid() == 0 else None  # /var is noexec in jails
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-", dir=base) as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        (work / "worker.py").write_text(WORKER)
        nvml_part(work)
        if args.nvml_only:
            report(None, "sandbox part", "--nvml-only")
        else:
            sandbox_part(work)
            if args.image:
                image_part(work, args.image, args.image_tar)
            else:
                report(None, "image part", "give --image NAME [--image-tar ROOTFS.tar]")
    print(f"{'FAILED' if failures else 'OK'}: {failures} check(s) failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
