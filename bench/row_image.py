"""Row 15: task images. Start to ready from a cached image, against the host-filesystem
start (same profile) and `podman run --rm IMAGE true` (the same rootfs, `podman import`ed);
the first import/pull of the ~190 MB Debian rootfs; N live sandboxes on one image: disk
(`du` of each upper layer) and memory per sandbox.

The rootfs is the image tests' cached mmdebstrap tarball (`python -m tests.images.build`
makes it; `--image-tar PATH` names another). Variants run interleaved, one of each per
round after a discarded warm-up round. Every store the row makes lives in the run's dir;
the podman images it imports are removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from sandbox import Sandbox

from .boxes import memory, session_pids, time_until_first_byte
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable

MS = 1000.0
MIB = 1024.0 * 1024.0
KIB = 1024.0
CACHE = Path("/var/cache/sandbox-test-images")
NAME = "bench-debian"
PODMAN_IMAGE = "localhost/sbx-bench-debian"
HOST_READY = "host filesystem: start to ready"
IMAGE_READY = "cached image: start to ready"
HOST_FULL = "host filesystem: start, ready, closed"
IMAGE_FULL = "cached image: start, ready, closed"
PODMAN_TRUE = "`podman run --rm IMAGE true`"
PODMAN_ECHO = "`podman run --rm IMAGE echo r`: first byte"
PODMAN_NONET = "`podman run --rm --network none IMAGE true`"
IMPORT = "first import: `sandbox image import TAR NAME` (CLI)"
PULL = "first pull: `sandbox image pull docker-archive:X NAME` (CLI)"
PODMAN_IMPORT = "`podman import TAR NAME`"
# Where this machine refuses podman's defaults: its rlimits above our hard limits (no
# CAP_SYS_RESOURCE), crun on hybrid cgroups. Tried in order; the first that runs wins.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
PODMAN_TRIES = ([], ULIMITS, ["--runtime", "runc"], ["--runtime", "runc", *ULIMITS])


def find_tar(ctx: Ctx) -> Path | None:
    given = ctx.extra.get("image_tar")
    if given:
        return Path(given)
    found = sorted(CACHE.glob("debian-*.tar"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    return (text[-1] if text else f"exit status {proc.returncode}")[:300]


def du(paths: list[Path]) -> dict[str, int]:
    """Disk used (`du -s -B1`, allocated blocks, one filesystem) of each path, in bytes."""
    if not paths:
        return {}
    proc = _run(["du", "-s", "-x", "-B1", *map(str, paths)])
    out: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        size, _, path = line.partition("\t")
        out[path] = int(size)
    return out


def host_problem() -> str | None:
    """Why a sandbox in an image cannot run here, or None."""
    if os.geteuid() != 0:
        return "images need a root supervisor (run the bench as root)"
    from sandbox.jail.images.attach import chroot_enabled

    if not chroot_enabled():
        return "firejail's chroot is off (scripts/bootstrap.sh --images sets `chroot yes`)"
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {tool})"
    return None


def podman_setup(tar: Path) -> tuple[list[str] | None, str]:
    """(the `podman ... run --rm` prefix that runs here, or None; why not, or what it
    needed beyond its defaults). Imports the rootfs as PODMAN_IMAGE."""
    podman = shutil.which("podman")
    if podman is None:
        return None, "podman not installed (apt-get install podman runc)"
    if os.geteuid() != 0:
        return None, "the comparison is rootful podman: run the bench as root"
    proc = _run([podman, "import", str(tar), PODMAN_IMAGE])
    if proc.returncode != 0:
        return None, f"`podman import` fails: {_tail(proc)}"
    first_error = ""
    for extra in PODMAN_TRIES:
        if "runc" in extra and shutil.which("runc") is None:
            continue
        global_opts = extra[:2] if extra[:1] == ["--runtime"] else []
        run_opts = extra[2:] if global_opts else extra
        prefix = [podman, *global_opts, "run", "--rm", *run_opts]
        proc = _run([*prefix, PODMAN_IMAGE, "true"], timeout=120)
        if proc.returncode == 0:
            needed = "" if not extra else (
                f"podman's defaults fail here ({first_error}); it ran with "
                f"{' '.join(extra)}")
            return prefix, needed
        first_error = first_error or _tail(proc)
    return None, f"podman cannot run a container on this machine: {first_error}"


def docker_problem() -> str:
    """Docker is only measured where it can run; say why it cannot."""
    if shutil.which("docker") is None:
        return "docker not installed"
    proc = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"the docker CLI is installed but no daemon runs: {_tail(proc)}"
    return ""


def _cli(ctx: Ctx, *args: str, image_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOX_IMAGE_DIR": str(image_dir)}
    return _run([ctx.python, "-m", "sandbox", "image", *args], env=env, timeout=900)


def _session(ctx: Ctx, image: str | None) -> tuple[float, float]:
    t0 = time.perf_counter()
    sb = Sandbox(profile="default", workdir=ctx.workspace(), image=image)
    try:
        sb.start()
        sb.run("true")
        ready = time.perf_counter() - t0
    finally:
        sb.close()
    return ready, time.perf_counter() - t0


def run(ctx: Ctx) -> Row:
    row = Row("image", "Task images: cached-image start, first import, N live on one image")
    tar = find_tar(ctx)
    why = host_problem()
    if why is None and (tar is None or not tar.is_file()):
        why = (f"no rootfs tarball: none in {CACHE} (python -m tests.images.build makes "
               "it; or --image-tar PATH)")
    if why is not None:
        row.add(unavailable(IMAGE_READY, "ms", why, goal=Goal("<= 1.2x host", lambda r: True)))
        return row
    assert tar is not None
    old_dir = os.environ.get("SANDBOX_IMAGE_DIR")
    store = ctx.root / "images"  # the cached image every sandbox of the row runs on
    os.environ["SANDBOX_IMAGE_DIR"] = str(store)
    podman_prefix: list[str] | None = None
    try:
        row.notes.append(f"rootfs {tar.name}: {tar.stat().st_size / MIB:.0f} MiB tarball")
        podman_prefix = _imports(ctx, row, tar, store)
        _starts(ctx, row, podman_prefix)
        _live(ctx, row, store)
    finally:
        if old_dir is None:
            os.environ.pop("SANDBOX_IMAGE_DIR", None)
        else:
            os.environ["SANDBOX_IMAGE_DIR"] = old_dir
        if shutil.which("podman"):
            _run(["podman", "rmi", "-f", PODMAN_IMAGE], timeout=120)
    return row


def _imports(ctx: Ctx, row: Row, tar: Path, store: Path) -> list[str] | None:
    """Time the first import and pull into empty stores, beside `podman import`; leave the
    image in `store`; set up podman (returns its run prefix, or None)."""
    work = ctx.root / "image-work"
    work.mkdir(parents=True, exist_ok=True)
    # The first import makes the row's store (timed: it is a first import too).
    t0 = time.perf_counter()
    proc = _cli(ctx, "import", str(tar), NAME, image_dir=store)
    first = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sandbox image import fails: {_tail(proc)}")
    names = json.loads((store / "names.json").read_text())
    tag = names[NAME]["tag"]
    archive = work / "debian-docker-archive.tar"
    made = _run(["skopeo", "--insecure-policy", "copy", "--quiet",
                 f"oci:{store / 'oci'}:{tag}", f"docker-archive:{archive}:{NAME}:latest"])
    pull_why = "" if made.returncode == 0 else f"skopeo cannot make the archive: {_tail(made)}"

    prefix, podman_why = podman_setup(tar)
    samples: dict[str, list[float]] = {IMPORT: [first], PULL: [], PODMAN_IMPORT: []}
    reps = ctx.reps(3, 1)
    dl = Deadline(300 if not ctx.quick else 120)
    for i in range(reps):
        if not dl.left():
            break
        if i > 0:  # the first sample of import is the row's own store, above
            fresh = work / f"import-{i}"
            t0 = time.perf_counter()
            proc = _cli(ctx, "import", str(tar), NAME, image_dir=fresh)
            if proc.returncode == 0:
                samples[IMPORT].append(time.perf_counter() - t0)
            shutil.rmtree(fresh, ignore_errors=True)
        if not pull_why:
            fresh = work / f"pull-{i}"
            t0 = time.perf_counter()
            proc = _cli(ctx, "pull", f"docker-archive:{archive}", NAME, image_dir=fresh)
            took = time.perf_counter() - t0
            if proc.returncode == 0:
                samples[PULL].append(took)
            else:
                pull_why = f"sandbox image pull fails: {_tail(proc)}"
            shutil.rmtree(fresh, ignore_errors=True)
        if prefix is not None:
            t0 = time.perf_counter()
            proc = _run(["podman", "import", str(tar), PODMAN_IMAGE + "-imp"])
            if proc.returncode == 0:
                samples[PODMAN_IMPORT].append(time.perf_counter() - t0)
            _run(["podman", "rmi", "-f", PODMAN_IMAGE + "-imp"], timeout=120)
    with contextlib.suppress(OSError):
        archive.unlink()
    rootfs = du([store / "rootfs"]).get(str(store / "rootfs"), 0)
    blobs = du([store / "oci"]).get(str(store / "oci"), 0)
    row.add(Line(IMPORT, "s", stat(samples[IMPORT]), baseline=PODMAN_IMPORT
                 if samples[PODMAN_IMPORT] else None))
    if samples[PULL]:
        row.add(Line(PULL, "s", stat(samples[PULL]), baseline=PODMAN_IMPORT
                     if samples[PODMAN_IMPORT] else None))
    else:
        row.add(unavailable(PULL, "s", pull_why or "not measured"))
    if samples[PODMAN_IMPORT]:
        row.add(Line(PODMAN_IMPORT, "s", stat(samples[PODMAN_IMPORT])))
    row.notes.append(f"the store holds it as {blobs / MIB:.0f} MiB of blobs + a "
                     f"{rootfs / MIB:.0f} MiB unpacked rootfs (shared by every sandbox); "
                     "imports read a tarball already in the page cache")
    if prefix is None:
        row.notes.append(f"podman not measured: {podman_why}")
    elif podman_why:
        row.notes.append(podman_why)
    return prefix


def _starts(ctx: Ctx, row: Row, podman: list[str] | None) -> None:
    samples: dict[str, list[float]] = {}
    variants: dict[str, Callable[[], None]] = {}
    ws = ctx.workspace("podman")

    def add(name: str, fn: Callable[[], None], *also: str) -> None:
        samples[name] = []
        for other in also:
            samples[other] = []
        variants[name] = fn

    def host() -> None:
        ready, full = _session(ctx, None)
        samples[HOST_READY].append(ready)
        samples[HOST_FULL].append(full)

    def image() -> None:
        ready, full = _session(ctx, NAME)
        samples[IMAGE_READY].append(ready)
        samples[IMAGE_FULL].append(full)

    add(HOST_READY, host, HOST_FULL)
    add(IMAGE_READY, image, IMAGE_FULL)
    if podman is not None:
        def p_true() -> None:
            t0 = time.perf_counter()
            subprocess.run([*podman, PODMAN_IMAGE, "true"], check=False, cwd=ws,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            samples[PODMAN_TRUE].append(time.perf_counter() - t0)

        def p_echo() -> None:
            samples[PODMAN_ECHO].append(
                time_until_first_byte([*podman, PODMAN_IMAGE, "echo", "r"], None, ws)[0])

        def p_nonet() -> None:
            t0 = time.perf_counter()
            subprocess.run([*podman, "--network", "none", PODMAN_IMAGE, "true"], check=False,
                           cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            samples[PODMAN_NONET].append(time.perf_counter() - t0)

        add(PODMAN_TRUE, p_true)
        add(PODMAN_ECHO, p_echo)
        add(PODMAN_NONET, p_nonet)

    reps = ctx.reps(20, 3)
    dl = Deadline(240 if not ctx.quick else 90)
    for fn in variants.values():  # warm-up round
        fn()
    for vals in samples.values():
        vals.clear()
    i = 0
    while i < reps and dl.left():
        for fn in variants.values():
            fn()
        i += 1

    def line(name: str, **kw: object) -> None:
        vals = samples.get(name) or []
        if vals:
            row.add(Line(name, "ms", stat([v * MS for v in vals]), **kw))  # type: ignore[arg-type]

    three = Goal("<= 0.33x podman (3x faster)", lambda r: r <= 1 / 3)
    line(HOST_READY)
    line(IMAGE_READY, baseline=HOST_READY, goal=Goal("<= 1.2x host", lambda r: r <= 1.2))
    line(HOST_FULL)
    if podman is not None:
        line(PODMAN_TRUE)
        line(PODMAN_ECHO, baseline=PODMAN_TRUE)
        line(PODMAN_NONET, baseline=PODMAN_TRUE)
        line(IMAGE_FULL, baseline=PODMAN_TRUE, goal=three)
        img, pod = samples[IMAGE_READY], samples[PODMAN_ECHO]
        if img and pod:
            ratio = stat(img).median / stat(pod).median
            row.notes.append(f"cached image start to ready / podman's first byte: "
                             f"{ratio:.2f}x")
    else:
        line(IMAGE_FULL, baseline=HOST_FULL)
        row.add(unavailable(PODMAN_TRUE, "ms", "podman cannot run here (see the note)",
                            goal=three))
    why = docker_problem()
    row.add(unavailable("`docker run --rm IMAGE true`", "ms", why) if why else
            unavailable("`docker run --rm IMAGE true`", "ms",
                        "a docker daemon runs here, but the row does not drive it yet"))
    if i < reps:
        row.notes.append(f"start rounds: time bound hit, {i} of {reps}")


def _live(ctx: Ctx, row: Row, store: Path) -> None:
    """N sandboxes alive on the image: each upper's disk, memory per sandbox; the same N on
    the host filesystem (same profile), one batch after the other."""
    n = int(ctx.extra.get("image_live", 64))
    me = psutil.Process(os.getpid())
    per: dict[str, tuple[float, float, int]] = {}
    uppers: list[int] = []
    ramp: list[float] = []
    store_growth = 0.0
    live_n = 0
    dl = Deadline(300 if not ctx.quick else 120)
    for image in (None, NAME):
        live: list[Sandbox] = []
        before = du([store]).get(str(store), 0)
        owner_before = me.memory_info().rss
        try:
            while len(live) < n and dl.left():
                t0 = time.perf_counter()
                sb = Sandbox(profile="default", workdir=ctx.workspace(), image=image)
                live.append(sb)
                sb.start()
                sb.run("true")
                if image:
                    ramp.append((time.perf_counter() - t0) * MS)
            if not live:
                continue
            owner_share = (me.memory_info().rss - owner_before) / len(live)
            rss = pss = 0.0
            for sb in live:
                r, p = memory(session_pids(sb))
                rss += r
                pss += p
            per["image" if image else "host"] = (rss / len(live) + owner_share,
                                                 pss / len(live) + owner_share, len(live))
            if image:
                live_n = len(live)
                bases = [sb._session.image.root.base for sb in live]
                sizes = du(bases)
                uppers = [sizes.get(str(b), 0) for b in bases]
                after = du([store]).get(str(store), 0)
                store_growth = (after - before) / len(live)
        finally:
            t0 = time.perf_counter()
            for sb in live:
                with contextlib.suppress(Exception):
                    sb.close()
            if image and live:
                row.notes.append(f"closing all {len(live)} image sandboxes took "
                                 f"{time.perf_counter() - t0:.2f} s")
    if not live_n:
        row.add(unavailable(f"{n} live on one image", "MiB", "no image sandbox started"))
        return
    label = f"{live_n} live"
    row.add(Line(f"start to ready, ramping to {label} on the image", "ms", stat(ramp),
                 baseline=IMAGE_READY))
    row.add(Line(f"disk per sandbox: its upper (`du` of uppers/<id>), {label}", "KiB",
                 stat([u / KIB for u in uppers])))
    row.add(Line("disk per sandbox beyond its upper (image store growth / N)", "KiB",
                 stat([store_growth / KIB]),
                 goal=Goal("upper layer only (store unchanged)", lambda v: v <= 4.0,
                           on="value")))
    for kind, idx in (("RSS", 0), ("PSS", 1)):
        base = None
        if "host" in per:
            base = f"memory per sandbox ({kind}), {per['host'][2]} live on the host filesystem"
            row.add(Line(base, "MiB", stat([per["host"][idx] / MIB])))
        row.add(Line(f"memory per sandbox ({kind}), {label} on the image", "MiB",
                     stat([per["image"][idx] / MIB]), baseline=base))
    row.notes.append("memory: firejail x2 + bash + the owner's RSS growth / N; the overlay "
                     "mounts' kernel memory and the shared page cache are not counted")
    if live_n < n:
        row.notes.append(f"time bound hit: {live_n} of {n} image sandboxes live")
