"""The image store: an OCI layout of content-addressed blobs, one unpacked rootfs per image.

    <images>/oci/                  one OCI layout (skopeo and umoci write it; blobs are
                                   shared by every image that has them)
    <images>/rootfs/<hex>/     `umoci unpack` of manifest sha256:<hex>: the read-only
                                   lower layer of every sandbox on that image
    <images>/names.json            name -> manifest digest, source, when

The toolchain is real: skopeo copies from registries, `docker-archive:` tarballs,
`oci:` layouts and `docker-daemon:`, verifying each blob against its digest; umoci
unpacks, applying whiteouts and opaque directories, and keeps every member inside the
rootfs (no `../`, absolute names or links that leave it). Layers are hostile input, so
what umoci may still create is made inert where it runs: the overlay is mounted
nodev,nosuid and the jail has no-new-privs (see `rootfs`).

An unpack goes into a temporary directory renamed into place only when it succeeded:
a corrupt or truncated layer leaves nothing half-unpacked. Every change holds one lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import paths
from ...errors import DependencyMissing, NotFound, SetupError
from ...textsafe import visible
from .. import launch
from .config import ImageConfig, parse

_TRANSPORTS = ("docker://", "docker-archive:", "oci:", "oci-archive:", "docker-daemon:",
               "dir:")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_TOOL_PACKAGES = {"skopeo": "skopeo", "umoci": "umoci"}
TOOL_TIMEOUT_S = 3600.0  # a pull of a multi-GB image over a slow link, not forever


@dataclass(frozen=True)
class Image:
    """One stored image."""

    name: str
    digest: str  # the manifest's, sha256:<hex>
    source: str
    created: float
    rootfs: Path
    config: ImageConfig
    config_json: dict[str, Any]
    size: int

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {"name": self.name, "digest": self.digest, "source": self.source,
                "created": self.created, "size": self.size, "rootfs": str(self.rootfs),
                "env": dict(cfg.env), "workdir": cfg.workdir, "user": cfg.user,
                "entrypoint": list(cfg.entrypoint), "cmd": list(cfg.cmd),
                "labels": cfg.labels}


def _tool(name: str) -> str:
    try:
        return launch.tool(name)
    except DependencyMissing as e:
        raise DependencyMissing(
            f"{name} is needed for images: apt-get install {_TOOL_PACKAGES[name]} "
            f"(scripts/bootstrap.sh installs it)") from e


def source_of(ref: str) -> str:
    """A skopeo source: a transport-qualified ref as is; a bare `name[:tag]` is docker://."""
    if ref.startswith(_TRANSPORTS):
        return ref
    if "://" in ref or ref.startswith("/"):
        raise SetupError(f"image source {ref!r}: name a transport, e.g. docker://{ref}, "
                         "docker-archive:/path/img.tar or oci:/path/layout:tag")
    return "docker://" + ref


def default_name(ref: str) -> str:
    """The name a pulled image is stored under when none is given."""
    src = source_of(ref)
    if src.startswith("docker://"):
        name = src.removeprefix("docker://")
        return name if ":" in name.rsplit("/", 1)[-1] or "@" in name else name + ":latest"
    # A file source: its file name, without the extension.
    tail = src.split(":", 1)[1].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\.(tar|tgz|tar\.gz)$", "", tail.split(":", 1)[0]) or "image"


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise SetupError(f"image name {visible(name)!r}: use letters, digits and . _ / : @ + -"
                         " (at most 255), e.g. python:3.12 or swe/django-1234")
    return name


def _tag(name: str) -> str:
    """The layout's ref name for an image name (OCI ref names are a narrower alphabet)."""
    return "n" + hashlib.sha256(name.encode()).hexdigest()[:32]


class ImageStore:
    """The host's images (root: the lower layers are mounted by the supervisor)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.image_dir()
        self.layout = self.root / "oci"
        self.rootfs_dir = self.root / "rootfs"
        self.names_file = self.root / "names.json"

    # -- bookkeeping ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _names(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.names_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SetupError(f"image index {self.names_file} is unreadable: {e}; "
                             "`sandbox image prune` rebuilds nothing, remove the file and "
                             "pull again") from e
        return data if isinstance(data, dict) else {}

    def _save(self, names: dict[str, dict[str, Any]]) -> None:
        tmp = self.names_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(names, indent=1, sort_keys=True))
        os.replace(tmp, self.names_file)

    def _run(self, argv: list[str], what: str, progress: bool = False) -> str:
        """A tool's stdout; its stderr (shown harmlessly) in the error when it fails."""
        try:
            proc = subprocess.run(
                argv, env=launch.supervisor_env(), timeout=TOOL_TIMEOUT_S, check=False,
                stdout=subprocess.PIPE,
                stderr=None if progress and sys.stderr.isatty() else subprocess.PIPE,
                text=True)
        except subprocess.TimeoutExpired as e:
            raise SetupError(f"{what}: timed out after {TOOL_TIMEOUT_S:.0f}s") from e
        if proc.returncode != 0:
            err = visible((proc.stderr or "").strip()[-2000:])
            raise SetupError(f"{what} failed: {err or f'exit status {proc.returncode}'}")
        return proc.stdout

    def _blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
            raise SetupError(f"unsupported digest {visible(digest)!r}")
        data = (self.layout / "blobs" / "sha256" / hexd).read_bytes()
        if hashlib.sha256(data).hexdigest() != hexd:
            raise SetupError(f"blob {digest} does not match its digest: the store is "
                             f"corrupt; `sandbox image rm` the image and pull it again")
        return data

    def _manifest_digest(self, tag: str) -> str:
        index = json.loads((self.layout / "index.json").read_text())
        for m in index.get("manifests", []):
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
                return str(m["digest"])
        raise SetupError(f"the layout has no manifest for {tag} after the copy")

    def _config_of(self, digest: str) -> dict[str, Any]:
        manifest = json.loads(self._blob(digest))
        if "config" not in manifest:
            raise SetupError(f"manifest {digest} has no config (an index? pull one platform)")
        cfg = json.loads(self._blob(manifest["config"]["digest"]))
        return cfg if isinstance(cfg, dict) else {}

    def _unpack(self, tag: str, digest: str) -> Path:
        """The rootfs of manifest `digest`, unpacked once (atomically)."""
        hexd = digest.split(":", 1)[1]
        final = self.rootfs_dir / hexd
        if (final / "rootfs").is_dir():
            return final
        self.rootfs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.rootfs_dir / f".unpack-{hexd[:16]}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._run([_tool("umoci"), "unpack", "--image", f"{self.layout}:{tag}", str(tmp)],
                      f"unpacking {digest}")
            # The rootfs root is what the jail's / will be: root-owned, not writable by
            # others (firejail refuses a chroot that is not owned by root).
            root = tmp / "rootfs"
            st = root.lstat()
            if st.st_uid != 0 or st.st_mode & 0o022:
                os.chown(root, 0, 0, follow_symlinks=False)
                os.chmod(root, 0o755)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _ensure_layout(self) -> None:
        if not (self.layout / "index.json").is_file():
            self._run([_tool("umoci"), "init", "--layout", str(self.layout)],
                      "creating the image layout")

    def _record(self, name: str, tag: str, source: str) -> Image:
        digest = self._manifest_digest(tag)
        self._config_of(digest)  # reads and verifies the manifest and config blobs
        self._unpack(tag, digest)
        names = self._names()
        names[name] = {"digest": digest, "source": source, "created": time.time(),
                       "tag": tag}
        self._save(names)
        return self.get(name)

    # -- the verbs --------------------------------------------------------------------

    def pull(self, ref: str, name: str | None = None, *, progress: bool = False) -> Image:
        """Copy an image in with skopeo (verifying every blob), then unpack it once."""
        src = source_of(ref)
        name = check_name(name or default_name(ref))
        tag = _tag(name)
        with self._locked():
            self._ensure_layout()
            argv = [_tool("skopeo"), "--insecure-policy", "copy"]
            if not progress:
                argv.append("--quiet")
            argv += [src, f"oci:{self.layout}:{tag}"]
            self._run(argv, f"pulling {visible(src)}", progress=progress)
            return self._record(name, tag, src)

    def import_rootfs(self, tarball: Path, name: str, *, workdir: str = "",
                      env: list[str] | None = None, cmd: list[str] | None = None) -> Image:
        """A plain rootfs tarball as a one-layer image (umoci applies it as a layer: the
        same member checks as any pulled layer)."""
        name = check_name(name)
        if not tarball.is_file():
            raise NotFound(f"{tarball}: no such file (a tar of a root filesystem)")
        tag = _tag(name)
        layout = f"{self.layout}:{tag}"
        umoci = _tool("umoci")
        with self._locked():
            self._ensure_layout()
            with contextlib.suppress(SetupError):  # a re-import replaces the name's tag
                self._run([umoci, "rm", "--image", layout], "untagging")
            self._run([umoci, "new", "--image", layout], "creating the image")
            self._run([umoci, "raw", "add-layer", "--image", layout, str(tarball)],
                      f"adding {tarball} as a layer")
            cfg = [umoci, "config", "--image", layout]
            if workdir:
                cfg += ["--config.workingdir", workdir]
            for item in env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                "/sbin:/bin"]:
                cfg += ["--config.env", item]
            for item in cmd or []:
                cfg += ["--config.cmd", item]
            self._run(cfg, "writing the image config")
            return self._record(name, tag, f"import:{tarball}")

    def derive(self, base: Image, layer: Path, name: str, source: str) -> Image:
        """`base` plus one layer tarball, stored as `name` (`image commit`)."""
        name = check_name(name)
        umoci = _tool("umoci")
        tag = _tag(name)
        with self._locked():
            base_tag = str(self._names()[base.name].get("tag", _tag(base.name)))
            with contextlib.suppress(SetupError):
                self._run([umoci, "rm", "--image", f"{self.layout}:{tag}"], "untagging")
            self._run([umoci, "tag", "--image", f"{self.layout}:{base_tag}", tag],
                      f"tagging {base.name}")
            self._run([umoci, "raw", "add-layer", "--image", f"{self.layout}:{tag}",
                       str(layer)], "adding the sandbox's layer")
            return self._record(name, tag, source)

    def get(self, name: str) -> Image:
        entry = self._names().get(name)
        if entry is None:
            raise NotFound(f"no image {visible(name)!r}: `sandbox image ls` lists them; "
                           f"`sandbox image pull REF` or `sandbox image import TAR NAME` "
                           "adds one")
        digest = str(entry["digest"])
        bundle = self.rootfs_dir / digest.split(":", 1)[1]
        if not (bundle / "rootfs").is_dir():
            raise SetupError(f"image {name!r}: its rootfs is missing from {self.rootfs_dir}; "
                             "pull it again")
        blob = self._config_of(digest)
        manifest = json.loads(self._blob(digest))
        size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
        return Image(name=name, digest=digest, source=str(entry.get("source", "")),
                     created=float(entry.get("created", 0)), rootfs=bundle / "rootfs",
                     config=parse(blob), config_json=blob, size=size)

    def resolve(self, ref: str) -> Image:
        """A stored image by name, by its default name, or by digest (prefix)."""
        names = self._names()
        if ref in names:
            return self.get(ref)
        with contextlib.suppress(SetupError):
            alt = default_name(ref)
            if alt in names:
                return self.get(alt)
        hits = [n for n, e in names.items()
                if len(ref) >= 12 and str(e["digest"]).removeprefix("sha256:").startswith(
                    ref.removeprefix("sha256:"))]
        if len(hits) == 1:
            return self.get(hits[0])
        return self.get(ref)  # raises NotFound with the fix

    def images(self) -> list[Image]:
        return [self.get(n) for n in sorted(self._names())]

    def in_use(self, digest: str) -> bool:
        """Whether a live sandbox holds this rootfs (a shared lock, dropped by the kernel
        when its holder dies, so a crashed owner never pins an image)."""
        lock = self.rootfs_dir / (digest.split(":", 1)[1] + ".lock")
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
        finally:
            os.close(fd)

    def hold(self, image: Image) -> int:
        """A shared lock on the image's rootfs for one live sandbox; close the fd to drop."""
        lock = self.rootfs_dir / (image.digest.split(":", 1)[1] + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def remove(self, name: str) -> Image:
        with self._locked():
            image = self.get(name)
            names = self._names()
            others = [n for n, e in names.items() if n != name and e["digest"] == image.digest]
            if not others and self.in_use(image.digest):
                raise SetupError(f"image {name!r} is in use by a live sandbox: close it first "
                                 "(`sandbox ls`)")
            tag = str(names[name].get("tag", _tag(name)))
            del names[name]
            self._save(names)
            with contextlib.suppress(SetupError):
                self._run([_tool("umoci"), "rm", "--image", f"{self.layout}:{tag}"],
                          "untagging")
            if not others:
                shutil.rmtree(image.rootfs.parent, ignore_errors=True)
            return image

    def prune(self) -> list[str]:
        """Remove unpacked rootfs no name refers to and blobs no manifest needs."""
        removed = []
        with self._locked():
            wanted = {str(e["digest"]).split(":", 1)[1] for e in self._names().values()}
            if self.rootfs_dir.is_dir():
                for entry in self.rootfs_dir.iterdir():
                    hexd = entry.name.removesuffix(".lock")
                    if entry.name.startswith(".unpack-") or (
                            hexd not in wanted and not self.in_use("sha256:" + hexd)):
                        if entry.is_dir():
                            shutil.rmtree(entry, ignore_errors=True)
                            removed.append(entry.name)
                        else:
                            entry.unlink(missing_ok=True)
            if (self.layout / "index.json").is_file():
                self._run([_tool("umoci"), "gc", "--layout", str(self.layout)],
                          "collecting unused blobs")
        return removed
