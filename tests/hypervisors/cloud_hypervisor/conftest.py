"""Fixtures for the cloud-hypervisor driver: a fake `cloud-hypervisor` on PATH and tiny
image files that pass the driver's image checks (the fake boots nothing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mxvm.hypervisors import VmSpec

FAKE_SERVER = Path(__file__).with_name("fake_chv.py")


@pytest.fixture
def fake_chv(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `cloud-hypervisor` executable, first on PATH, serving fake_chv's API."""
    bindir = short_dir / "bin"
    bindir.mkdir()
    exe = bindir / "cloud-hypervisor"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(FAKE_SERVER.parent)!r})\n"
        "from fake_chv import main\n"
        "main()\n"
    )
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return exe


@pytest.fixture
def images(short_dir: Path) -> tuple[Path, Path]:
    """A 'kernel' with the bzImage header magic and a 'cpio' initramfs."""
    kernel = short_dir / "vmlinuz"
    kernel.write_bytes(b"\0" * 0x202 + b"HdrS" + b"\0" * 64)
    initrd = short_dir / "initrd.img"
    initrd.write_bytes(b"070701" + b"0" * 128)
    return kernel, initrd


@pytest.fixture
def spec(short_dir: Path, images: tuple[Path, Path]) -> VmSpec:
    kernel, initrd = images
    return VmSpec(
        alloc_id="a1",
        name="chv-test",
        vcpus=2,
        memory_mb=256,
        kernel=kernel,
        initrd=initrd,
        kernel_args=["quiet"],
        run_dir=short_dir / "run",
    )
