"""The guest kernel as an uncompressed PVH ELF (vmlinux), unpacked from Debian's bzImage.

Under TCG the bzImage's own decompressor and real-mode entry cost seconds per boot; QEMU
(microvm, q35) and cloud-hypervisor load a vmlinux with a PVH entry note directly. The
payload is located through the x86 boot protocol header (payload_offset/length, >= 2.08)
and decompressed by format: lz4 (Debian's choice; needs the lz4 CLI), zstd, xz, gzip.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

from mxvm.image.errors import ImageBuildError

ELF_MAGIC = b"\x7fELF"


def payload(bzimage: bytes) -> bytes:
    """The compressed kernel inside a bzImage."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise ImageBuildError("not a bzImage (no HdrS boot header)")
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise ImageBuildError(f"boot protocol {version:#x} has no payload fields")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start : start + length]


def decompress(data: bytes) -> bytes:
    if data.startswith(b"\x02\x21\x4c\x18"):  # lz4 legacy frame
        return _cli(["lz4", "-d", "-c"], data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return _cli(["zstd", "-d", "-c"], data)
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    raise ImageBuildError(f"unknown kernel compression (magic {data[:4].hex()})")


def _cli(argv: list[str], data: bytes) -> bytes:
    if shutil.which(argv[0]) is None:
        raise ImageBuildError(f"{argv[0]} is not installed (apt-get install {argv[0]})")
    proc = subprocess.run(argv, input=data, capture_output=True, check=False)
    # The kernel appends its size after the lz4 stream; lz4 warns about it but succeeds.
    if not proc.stdout.startswith(ELF_MAGIC):
        raise ImageBuildError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def has_pvh_entry(config: Path) -> bool:
    try:
        return "CONFIG_PVH=y" in config.read_text().splitlines()
    except OSError:
        return False


def extract_vmlinux(bzimage: Path, dest: Path) -> None:
    elf = decompress(payload(bzimage.read_bytes()))
    if not elf.startswith(ELF_MAGIC):
        raise ImageBuildError(f"{bzimage}: the payload is not an ELF kernel")
    dest.write_bytes(elf)
