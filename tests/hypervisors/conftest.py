"""Fixtures for driver tests: QEMU itself, a guest kernel, short run dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .initramfs import find_busybox

QEMU = "qemu-system-x86_64"
# Where to look for a guest kernel, first hit wins: $MXVM_TEST_KERNEL, then the dev guest
# image's build output, then a Debian cloud kernel installed on the host.
KERNEL_CANDIDATES = (
    Path("build/guest/vmlinuz"),
    Path("/var/cache/mxvm/guest/vmlinuz"),
)


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    return QEMU


def _find_kernel() -> Path | None:
    env = os.environ.get("MXVM_TEST_KERNEL")
    if env:
        return Path(env).resolve()
    for candidate in KERNEL_CANDIDATES:
        if candidate.is_file():
            return candidate.resolve()
    installed = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))
    return installed[-1] if installed else None


@pytest.fixture(scope="session")
def guest_kernel(qemu_binary: str) -> Path:
    kernel = _find_kernel()
    if kernel is None:
        pytest.skip("no guest kernel: set MXVM_TEST_KERNEL or build the dev guest image")
    return kernel


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
