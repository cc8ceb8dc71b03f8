"""The dev/CI guest image: Debian's cloud kernel and a busybox + Python initramfs that
runs the guest agent (mxvm.guest). `build_dev_image(dest)` builds or reuses it."""

from mxvm.image.build import ImagePaths, build_dev_image, default_image_dir
from mxvm.image.cmdline import guest_cmdline, host_tsc_khz, identity_args
from mxvm.image.errors import ImageBuildError

__all__ = [
    "ImageBuildError",
    "ImagePaths",
    "build_dev_image",
    "default_image_dir",
    "guest_cmdline",
    "host_tsc_khz",
    "identity_args",
]
