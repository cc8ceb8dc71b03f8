"""Fixtures for driver tests: QEMU itself, the dev guest image, short run dirs."""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxvm.errors import MxvmError

from .initramfs import find_busybox

QEMU = "qemu-system-x86_64"


class DevImage:
    def __init__(self, kernel: Path, initrd: Path, bzimage: Path | None = None) -> None:
        self.kernel = kernel
        self.initrd = initrd
        self.bzimage = bzimage


@functools.cache
def _build_dev_image() -> DevImage | str:
    """The dev guest image (built once and cached by mxvm.image), or why there is none."""
    try:
        image = importlib.import_module("mxvm.image")
    except ImportError as exc:
        return f"the dev image builder mxvm.image is not importable: {exc}"
    try:
        paths = image.build_dev_image(image.default_image_dir())
    except MxvmError as exc:
        return f"the dev guest image cannot be built here: {exc.detail}"
    bzimage = Path(paths.bzimage) if paths.bzimage is not None else None
    return DevImage(Path(paths.kernel), Path(paths.initrd), bzimage)


@pytest.fixture(scope="session")
async def dev_image(qemu_binary: str) -> DevImage:
    built = await asyncio.to_thread(_build_dev_image)
    if isinstance(built, str):
        pytest.skip(built)
    return built


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    return QEMU


@pytest.fixture(scope="session")
async def guest_kernel(qemu_binary: str) -> Path:
    """$MXVM_TEST_KERNEL, else the dev guest image's kernel."""
    env = os.environ.get("MXVM_TEST_KERNEL")
    if env:
        return Path(env)  # must be absolute, as VmSpec requires
    built = await asyncio.to_thread(_build_dev_image)
    if isinstance(built, str):
        pytest.skip(f"no guest kernel (set MXVM_TEST_KERNEL): {built}")
    return built.kernel


@pytest.fixture(scope="session")
async def compressed_kernel(qemu_binary: str) -> Path:
    """A compressed (bzImage) kernel, whose decompressor a damaged payload trips: the dev
    image boots an uncompressed vmlinux but keeps its bzImage too."""
    env = os.environ.get("MXVM_TEST_BZIMAGE")
    if env:
        return Path(env)
    built = await asyncio.to_thread(_build_dev_image)
    if isinstance(built, str) or built.bzimage is None:
        pytest.skip(f"no compressed guest kernel (set MXVM_TEST_BZIMAGE): {built}")
    return built.bzimage


@pytest.fixture(scope="session")
def busybox() -> Path:
    path = find_busybox()
    if path is None:
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    return path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Short enough for unix socket paths (< 108 bytes), unlike pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="mxq-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
