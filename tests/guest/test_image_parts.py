"""The image builder's pure parts: cpio writer, ELF reader, module ordering, cmdline."""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from mxvm.image import cpio, kernel, kmods
from mxvm.image.cmdline import guest_cmdline, host_tsc_khz
from mxvm.image.elf import read_elf
from mxvm.image.errors import ImageBuildError


def read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """An independent newc reader: (name, mode, data, rdev) per entry, alignment checked."""
    out: list[tuple[str, int, bytes, tuple[int, int]]] = []
    off = 0
    while True:
        assert off % 4 == 0 and data[off : off + 6] == b"070701"
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = off + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out.append((name, fields[1], data[body : body + filesize], (fields[9], fields[10])))
        off = body + filesize + (-filesize % 4)


def test_cpio_archive_round_trips(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_bytes(b"#!/bin/sh\necho x\n")
    (tmp_path / "bin" / "tool").chmod(0o755)
    (tmp_path / "odd").write_bytes(b"abcde")  # 5 bytes: exercises padding
    (tmp_path / "sh").symlink_to("/bin/busybox")
    buf = io.BytesIO()
    entries = [cpio.Entry("dev", stat.S_IFDIR | 0o755)]
    entries.append(cpio.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    cpio.write_archive(buf, [*entries, *cpio.tree_entries(tmp_path)])
    parsed = {name: (mode, data, rdev) for name, mode, data, rdev in read_newc(buf.getvalue())}
    assert list(parsed) == ["dev", "dev/console", "bin", "odd", "sh", "bin/tool"]
    assert parsed["bin/tool"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\necho x\n", (0, 0))
    assert parsed["odd"][1] == b"abcde"
    assert parsed["sh"] == (stat.S_IFLNK | 0o777, b"/bin/busybox", (0, 0))
    assert parsed["dev/console"] == (stat.S_IFCHR | 0o600, b"", (5, 1))


def test_cpio_archive_is_readable_by_busybox(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("hi")
    archive = tmp_path.parent / f"{tmp_path.name}.cpio"
    with archive.open("wb") as f:
        cpio.write_archive(f, cpio.tree_entries(tmp_path))
    listing = subprocess.run(
        [busybox, "cpio", "-t"], stdin=archive.open("rb"), capture_output=True, check=True
    )
    assert listing.stdout.split() == [b"a", b"a/f"]


def test_elf_reader_finds_interpreter_and_needed() -> None:
    dynamic = read_elf(Path("/bin/ls"))
    assert dynamic.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in dynamic.needed
    busybox = Path("/bin/busybox")
    if busybox.exists():
        assert read_elf(busybox).interpreter is None  # busybox-static


def test_elf_reader_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="not a little-endian ELF64"):
        read_elf(tmp_path / "x")


def _fake_ko(path: Path, depends: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0name=x\0")
    return path


def test_modules_load_in_dependency_order(tmp_path: Path) -> None:
    _fake_ko(tmp_path / "a" / "virtio_ring.ko", "")
    _fake_ko(tmp_path / "a" / "virtio.ko", "virtio_ring")
    _fake_ko(tmp_path / "b" / "virtio_mmio.ko", "virtio,virtio_ring")
    _fake_ko(tmp_path / "b" / "virtio-rng.ko", "virtio")
    mods = kmods.index(tmp_path)
    assert kmods.load_order(("virtio_mmio", "virtio-rng"), mods) == [
        "virtio_ring", "virtio", "virtio_mmio", "virtio_rng",
    ]  # fmt: skip
    root = tmp_path / "root"
    paths = kmods.install(tmp_path, root, wanted=("virtio-rng",))
    assert paths == [f"/lib/modules/mxvm/{n}.ko" for n in ("virtio_ring", "virtio", "virtio_rng")]
    assert all((root / p.lstrip("/")).is_file() for p in paths)


def test_module_errors(tmp_path: Path) -> None:
    _fake_ko(tmp_path / "a.ko", "b")
    _fake_ko(tmp_path / "b.ko", "a")
    with pytest.raises(ImageBuildError, match="cycle"):
        kmods.load_order(("a",), kmods.index(tmp_path))
    with pytest.raises(ImageBuildError, match="not found"):
        kmods.load_order(("nope",), kmods.index(tmp_path))


def test_guest_cmdline_carries_identity() -> None:
    line = guest_cmdline(
        tcg=False, ip="10.87.3.5/24", gateway="10.87.3.1", mac="52:54:00:AB:CD:EF",
        dns=["10.87.3.1"], hostname="alloc-1",
    )  # fmt: skip
    assert line.split() == [
        "console=ttyS0", "panic=-1", "quiet", "mxvm.ip=10.87.3.5/24", "mxvm.gw=10.87.3.1",
        "mxvm.mac=52:54:00:ab:cd:ef", "mxvm.dns=10.87.3.1", "mxvm.hostname=alloc-1",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        guest_cmdline(ip="10.87.3.300/24")


def test_tsc_khz_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2299.998\n")
    assert host_tsc_khz(cpuinfo) == 2299998
    cpuinfo.write_text("processor\t: 0\n")
    assert host_tsc_khz(cpuinfo) is None


def _fake_bzimage(compressed: bytes, setup_sects: int = 2) -> bytes:
    image = bytearray((setup_sects + 1) * 512 + 64)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    struct.pack_into("<II", image, 0x248, 16, len(compressed))
    start = (setup_sects + 1) * 512 + 16
    image[start : start + len(compressed)] = compressed
    return bytes(image) + b"\0" * 64


def test_vmlinux_is_unpacked_from_the_bzimage_payload() -> None:
    elf = b"\x7fELF" + bytes(range(200))
    for compressed in (gzip.compress(elf), lzma.compress(elf)):
        assert kernel.decompress(kernel.payload(_fake_bzimage(compressed))) == elf
    if shutil.which("lz4"):
        lz4 = subprocess.run(["lz4", "-l", "-c"], input=elf, capture_output=True, check=True)
        assert kernel.decompress(kernel.payload(_fake_bzimage(lz4.stdout))) == elf
    with pytest.raises(ImageBuildError, match="not a bzImage"):
        kernel.payload(b"\0" * 4096)
    with pytest.raises(ImageBuildError, match="unknown kernel compression"):
        kernel.decompress(b"\x00\x01\x02\x03")
