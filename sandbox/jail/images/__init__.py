"""Task images: OCI images as a sandbox's root filesystem (store, config, per-sandbox root).

`store.ImageStore` pulls and imports images (skopeo, umoci); `rootfs` makes one sandbox's
copy-on-write upper layer; `attach` puts a starting session into it; the launch mounts it
(`launch.ImageMount`) and firejail chroots into it.
"""

from .config import ImageConfig
from .store import Image, ImageStore

__all__ = ["Image", "ImageConfig", "ImageStore"]
