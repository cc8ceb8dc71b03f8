"""Checks on guest image files before a VMM is started, so a bad path or a corrupt file is
an ImageError naming the file instead of a VM that never boots."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mxvm.hypervisors.base import ImageError, VmSpec

_BZIMAGE_MAGIC = (0x202, b"HdrS")  # Linux x86 boot protocol header signature
_ELF_MAGIC = (0, b"\x7fELF")  # vmlinux / PVH kernels
_INITRD_MAGICS = (
    b"\x1f\x8b",  # gzip
    b"\x28\xb5\x2f\xfd",  # zstd
    b"\xfd7zXZ\x00",  # xz
    b"\x02\x21\x4c\x18",  # lz4 legacy
    b"BZh",  # bzip2
    b"\x5d\x00\x00",  # lzma
    b"070701",  # cpio newc, uncompressed
    b"070702",  # cpio newc with crc
)


def _head(path: Path, size: int, *, writable: bool = False) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageError(path, "does not exist") from exc
    except OSError as exc:
        raise ImageError(path, f"cannot stat: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "is not a regular file")
    if st.st_size == 0:
        raise ImageError(path, "is empty")
    if writable and not os.access(path, os.R_OK | os.W_OK):
        raise ImageError(path, "is not readable and writable")
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError as exc:
        raise ImageError(path, f"cannot read: {exc.strerror}") from exc


def check_kernel(path: Path) -> None:
    head = _head(path, 0x210)
    for offset, magic in (_BZIMAGE_MAGIC, _ELF_MAGIC):
        if head[offset : offset + len(magic)] == magic:
            return
    raise ImageError(path, "is not a Linux kernel (no bzImage 'HdrS' header, not ELF)")


def check_initrd(path: Path) -> None:
    head = _head(path, 8)
    if not head.startswith(_INITRD_MAGICS):
        raise ImageError(path, "is not an initramfs (neither cpio nor a known compression)")


def check_disk(path: Path) -> None:
    _head(path, 1, writable=True)


def check_images(spec: VmSpec) -> None:
    """Raise ImageError for the first unusable file the spec names."""
    check_kernel(spec.kernel)
    if spec.initrd is not None:
        check_initrd(spec.initrd)
    if spec.root_disk is not None:
        check_disk(spec.root_disk)
