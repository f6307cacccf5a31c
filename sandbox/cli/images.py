"""`sandbox image pull | import | ls | inspect | rm | prune | commit`: the image store."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..textsafe import visible

DESCRIPTION = """\
Images are a sandbox's root filesystem instead of the host's: each sandbox gets a private
copy-on-write layer over the image's shared, read-only one (`sandbox run --image NAME`).

examples:
  sandbox image pull docker-archive:/tmp/py.tar py      a `docker save` tarball
  sandbox image pull oci:/srv/layouts/app:1.0           an OCI layout
  sandbox image pull docker://registry.example/app:1.0  a registry (skopeo)
  sandbox image import rootfs.tar deb --workdir /app    a plain rootfs tarball
  sandbox image ls | inspect NAME | rm NAME | prune
  sandbox run --image py --keep -- pip install -e .     then:
  sandbox image commit SESSION py-ready                 its layer as a new image
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("image", help="pull, import, list and remove images (--image)",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="image_verb", metavar="VERB", required=True)

    v = verbs.add_parser("pull", help="copy an image in (skopeo): docker://, docker-archive:, "
                         "oci:, docker-daemon:")
    v.add_argument("ref", help="the source, e.g. docker-archive:/tmp/img.tar")
    v.add_argument("name", nargs="?", help="store it under this name (default: from REF)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_pull)

    v = verbs.add_parser("import", help="a plain rootfs tarball as a one-layer image")
    v.add_argument("tarball", type=Path)
    v.add_argument("name")
    v.add_argument("--workdir", default="", help="the image's WorkingDir")
    v.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="the image's Env (default: a usual PATH)")
    v.add_argument("--cmd", action="append", default=[], metavar="ARG",
                   help="the image's Cmd, one argument per --cmd")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_import)

    v = verbs.add_parser("ls", help="stored images")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_ls)

    v = verbs.add_parser("inspect", help="one image: digest, config, rootfs")
    v.add_argument("name")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_inspect)

    v = verbs.add_parser("rm", help="remove an image (refused while a sandbox uses it)")
    v.add_argument("name", nargs="+")
    v.set_defaults(func=cmd_rm)

    v = verbs.add_parser("prune", help="remove unpacked layers and blobs no image needs")
    v.set_defaults(func=cmd_prune)

    v = verbs.add_parser("commit", help="a kept sandbox's layer (run --keep) as a new image")
    v.add_argument("session", help="the session id (`sandbox ls`)")
    v.add_argument("name")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_commit)


def _store() -> Any:
    from ..jail.images import ImageStore

    return ImageStore()


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return str(n)


def _print(image: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(image.to_dict()))
    else:
        print(f"{visible(image.name)}  {image.digest[:19]}  {_size(image.size)}")


def cmd_pull(args: argparse.Namespace) -> int:
    image = _store().pull(args.ref, args.name, progress=not args.json)
    _print(image, args.json)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    image = _store().import_rootfs(args.tarball, args.name, workdir=args.workdir,
                                   env=args.env or None, cmd=args.cmd or None)
    _print(image, args.json)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    images = _store().images()
    if args.json:
        print(json.dumps([i.to_dict() for i in images]))
        return 0
    if not images:
        print("no images: `sandbox image pull REF` or `sandbox image import TAR NAME`",
              file=sys.stderr)
        return 0
    print(f"{'NAME':<32} {'DIGEST':<19} {'SIZE':>9}  CREATED")
    for i in images:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.created))
        print(f"{visible(i.name):<32} {i.digest[:19]:<19} {_size(i.size):>9}  {when}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    image = _store().resolve(args.name)
    data = image.to_dict()
    if args.json:
        print(json.dumps(data))
        return 0
    for key, value in data.items():
        print(f"{key:<11} {visible(json.dumps(value) if not isinstance(value, str) else value)}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store()
    for name in args.name:
        image = store.remove(name)
        print(f"removed {visible(image.name)} ({image.digest[:19]})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    removed = _store().prune()
    print(f"pruned {len(removed)} unpacked image(s); unused blobs collected")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    from ..errors import NotFound
    from ..jail.images.commit import commit
    from ..record import FINAL_STATES, Store

    try:
        row = Store().get_session(args.session)
    except Exception as e:
        raise NotFound(f"no session {visible(args.session)!r} (`sandbox ls`)") from e
    image = commit(row, row["state"] in FINAL_STATES, _store(), args.name)
    _print(image, args.json)
    return 0
