"""Image checks: every bad file is an ImageError that names it, before any VMM runs."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from mxvm.hypervisors import ImageError, VmSpec
from mxvm.hypervisors.images import check_images, check_initrd, check_kernel


def fake_bzimage(path: Path) -> Path:
    data = bytearray(4096)
    data[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(data))
    return path


def test_missing_kernel(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "vmlinuz"
    with pytest.raises(ImageError, match="does not exist") as info:
        check_kernel(missing)
    assert info.value.path == missing
    assert str(missing) in str(info.value)


def test_empty_kernel(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").touch()
    with pytest.raises(ImageError, match="is empty"):
        check_kernel(tmp_path / "vmlinuz")


def test_directory_is_not_a_kernel(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a regular file"):
        check_kernel(tmp_path)


def test_random_bytes_are_not_a_kernel(tmp_path: Path) -> None:
    junk = tmp_path / "vmlinuz"
    junk.write_bytes(os.urandom(65536).replace(b"HdrS", b"xxxx").replace(b"\x7fELF", b"xxxx"))
    with pytest.raises(ImageError, match="not a Linux kernel") as info:
        check_kernel(junk)
    assert info.value.path == junk


def test_bzimage_and_elf_headers_pass(tmp_path: Path) -> None:
    check_kernel(fake_bzimage(tmp_path / "bz"))
    (tmp_path / "elf").write_bytes(b"\x7fELF" + bytes(100))
    check_kernel(tmp_path / "elf")


def test_initrd_formats(tmp_path: Path) -> None:
    (tmp_path / "i.gz").write_bytes(gzip.compress(b"070701"))
    check_initrd(tmp_path / "i.gz")
    (tmp_path / "i.cpio").write_bytes(b"070701" + bytes(100))
    check_initrd(tmp_path / "i.cpio")
    (tmp_path / "bad").write_bytes(b"\x00" * 100)
    with pytest.raises(ImageError, match="not an initramfs"):
        check_initrd(tmp_path / "bad")


def test_disk_must_be_a_file(tmp_path: Path) -> None:
    spec = VmSpec(
        alloc_id="a",
        name="a",
        vcpus=1,
        memory_mb=128,
        kernel=fake_bzimage(tmp_path / "k"),
        root_disk=tmp_path,
        run_dir=tmp_path,
    )
    with pytest.raises(ImageError, match="not a regular file") as info:
        check_images(spec)
    assert info.value.path == tmp_path


def test_check_images_names_the_first_bad_file(tmp_path: Path) -> None:
    spec = VmSpec(
        alloc_id="a",
        name="a",
        vcpus=1,
        memory_mb=128,
        kernel=fake_bzimage(tmp_path / "k"),
        initrd=tmp_path / "initrd.missing",
        run_dir=tmp_path,
    )
    with pytest.raises(ImageError) as info:
        check_images(spec)
    assert info.value.path == tmp_path / "initrd.missing"
