"""build_dev_image(): the dev/CI guest image (Debian cloud kernel + busybox/Python
initramfs with the guest agent), cached on its inputs."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mxvm.guest
from mxvm.guest.protocol import PORT_NAME
from mxvm.image import cpio, debs, kernel, kmods, python, rootfs
from mxvm.image.cmdline import BASE
from mxvm.image.errors import ImageBuildError

FORMAT = 1
MIN_MEMORY_MB = 128  # boots with ~26 MiB free; 96 MiB panics
RECOMMENDED_MEMORY_MB = 256
BZIMAGE_NAME = "vmlinuz"
VMLINUX_NAME = "vmlinux"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "manifest.json"
ZSTD_LEVEL = "-9"


@dataclass(frozen=True)
class ImagePaths:
    kernel: Path  # what to boot: the PVH vmlinux when it could be unpacked, else the bzImage
    initrd: Path
    manifest: Path
    bzimage: Path | None = None  # Debian's compressed kernel, for loaders that need one


def default_image_dir() -> Path:
    """$MXVM_IMAGE_DIR, else $XDG_CACHE_HOME/mxvm/images/default (~/.cache by default)."""
    if env := os.environ.get("MXVM_IMAGE_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mxvm" / "images" / "default"


def _silent(_: str) -> None:
    pass


def _hash_py_files(pkg: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(pkg.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# Hashed when the builder's modules are imported, not at build time: a long-running process
# builds with the code it loaded, so its cache key must describe that code, not newer files.
_BUILDER_SHA256 = _hash_py_files(Path(__file__).parent)


def source_hash() -> str:
    """What the image embeds or is shaped by: the guest package (copied from disk at build
    time) and this builder (as loaded)."""
    guest = _hash_py_files(Path(mxvm.guest.__file__).parent)
    return hashlib.sha256(f"{guest}:{_BUILDER_SHA256}".encode()).hexdigest()


def _inputs(versions: dict[str, str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "packages": versions,
        "busybox": debs.installed_version("busybox-static"),
        "sources_sha256": source_hash(),
        "lz4": shutil.which("lz4") is not None,  # decides whether a PVH vmlinux is made
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _paths(dest: Path, kernel_name: str) -> ImagePaths:
    return ImagePaths(
        dest / kernel_name, dest / INITRD_NAME, dest / MANIFEST_NAME, dest / BZIMAGE_NAME
    )


def _cached(dest: Path, inputs: dict[str, Any]) -> ImagePaths | None:
    try:
        manifest = json.loads((dest / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("inputs") != inputs or not isinstance(manifest.get("kernel"), str):
        return None
    paths = _paths(dest, manifest["kernel"])
    sums = manifest.get("sha256", {})
    for path in (paths.kernel, paths.initrd, paths.bzimage):
        if path is None or not path.is_file() or sums.get(path.name) != _sha256(path):
            return None
    return paths


def build_dev_image(
    dest_dir: Path, *, progress: Callable[[str], None] = _silent, force: bool = False
) -> ImagePaths:
    """Build (or reuse) the image in dest_dir; returns the kernel, initrd and manifest.
    Concurrent callers (parallel test sessions) serialise on a lock file in dest_dir."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with (dest / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(dest, progress, force)


def _resolve() -> tuple[str, dict[str, str]]:
    kernel_pkg = debs.kernel_package()
    return kernel_pkg, debs.candidates([kernel_pkg, *python.DEBS, *python.LIB_DEBS])


def _build_locked(dest: Path, progress: Callable[[str], None], force: bool) -> ImagePaths:
    progress("checking package versions")
    kernel_pkg, versions = _resolve()
    if not force and (paths := _cached(dest, _inputs(versions))) is not None:
        progress(f"image in {dest} is up to date")
        return paths
    started = time.monotonic()
    progress(f"downloading {kernel_pkg} and the Python packages")
    try:
        fetched = debs.download(versions, dest / "debs")
    except ImageBuildError:
        # Stale package lists name versions the mirror no longer has: update, resolve again.
        if not debs.refresh_lists():
            raise
        progress("apt lists were stale: updated them")
        kernel_pkg, versions = _resolve()
        fetched = debs.download(versions, dest / "debs")
    inputs = _inputs(versions)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=dest) as tmp:
        work = Path(tmp)
        for deb in fetched:
            progress(f"unpacking {deb.path.name}")
            debs.extract(deb, work / "x")
        info = _assemble(work, kernel_pkg, progress)
        progress("packing the initramfs")
        _pack(work / "root", work / "initrd.cpio", dest / INITRD_NAME)
        kernel_name = _install_kernels(
            work, info.pop("vmlinuz"), info.pop("config"), dest, progress
        )
    manifest = _manifest(dest, inputs, info, kernel_name)
    tmp_manifest = dest / (MANIFEST_NAME + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp_manifest.replace(dest / MANIFEST_NAME)
    progress(
        f"built {dest} in {time.monotonic() - started:.1f}s: "
        f"initrd {manifest['initrd_bytes'] / 1e6:.1f} MB"
    )
    return _paths(dest, kernel_name)


def _install_kernels(
    work: Path, vmlinuz: Path, config: Path, dest: Path, progress: Callable[[str], None]
) -> str:
    """Install the bzImage and, when the kernel has a PVH entry, the unpacked vmlinux;
    returns the file name to boot."""
    shutil.copyfile(vmlinuz, work / BZIMAGE_NAME)
    (work / BZIMAGE_NAME).replace(dest / BZIMAGE_NAME)
    if not kernel.has_pvh_entry(config):
        progress("the kernel has no PVH entry: booting the bzImage")
        return BZIMAGE_NAME
    progress("unpacking the kernel to a PVH vmlinux (skips the decompressor at every boot)")
    try:
        kernel.extract_vmlinux(vmlinuz, work / VMLINUX_NAME)
    except ImageBuildError as exc:
        progress(f"booting the bzImage: {exc.detail}")
        (dest / VMLINUX_NAME).unlink(missing_ok=True)
        return BZIMAGE_NAME
    (work / VMLINUX_NAME).replace(dest / VMLINUX_NAME)
    return VMLINUX_NAME


def _assemble(work: Path, kernel_pkg: str, progress: Callable[[str], None]) -> dict[str, Any]:
    extracted, root = work / "x", work / "root"
    release = kernel_pkg.removeprefix("linux-image-")
    vmlinuz = extracted / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.is_file():
        raise ImageBuildError(f"{kernel_pkg} has no /boot/vmlinuz-{release}")
    progress("adding kernel modules")
    module_paths = kmods.install(extracted / "lib" / "modules" / release, root)
    progress("adding busybox")
    applets = rootfs.install_busybox(rootfs.busybox_path(), root)
    progress("adding Python (trimmed stdlib, byte-compiled)")
    stdlib_files = python.install(extracted, root)
    progress("adding the guest agent and /init")
    rootfs.install_layout(root, module_paths)
    rootfs.install_guest_agent(Path(mxvm.guest.__file__).parent, root)
    python.compile_tree(root / rootfs.GUEST_PKG_DIR)
    return {
        "vmlinuz": vmlinuz,
        "config": extracted / "boot" / f"config-{release}",
        "kernel_release": release,
        "modules": [Path(p).stem for p in module_paths],
        "busybox_applets": applets,
        "stdlib_files": stdlib_files,
    }


def _pack(root: Path, cpio_path: Path, out: Path) -> None:
    with cpio_path.open("wb") as f:
        cpio.write_archive(f, [*rootfs.device_entries(), *cpio.tree_entries(root)])
    tmp = out.with_name(out.name + ".tmp")
    if shutil.which("zstd") is None:
        raise ImageBuildError("zstd is missing: install the zstd package")
    subprocess.run(
        ["zstd", "-q", "-f", ZSTD_LEVEL, "-T0", str(cpio_path), "-o", str(tmp)], check=True
    )
    tmp.replace(out)


def _manifest(
    dest: Path, inputs: dict[str, Any], info: dict[str, Any], kernel_name: str
) -> dict[str, Any]:
    files = {kernel_name, BZIMAGE_NAME, INITRD_NAME}
    return {
        "format": FORMAT,
        "inputs": inputs,
        "kernel": kernel_name,
        "kernel_format": "pvh-elf" if kernel_name == VMLINUX_NAME else "bzimage",
        "bzimage": BZIMAGE_NAME,
        "initrd": INITRD_NAME,
        "initrd_compression": "zstd",
        "initrd_bytes": (dest / INITRD_NAME).stat().st_size,
        **info,
        "min_memory_mb": MIN_MEMORY_MB,
        "recommended_memory_mb": RECOMMENDED_MEMORY_MB,
        "cmdline": " ".join(BASE),
        "cmdline_hints": {
            "tcg": "add tsc_early_khz=<host cpu MHz x 1000> (mxvm.image.cmdline.guest_cmdline)",
            "network": "mxvm.ip=A.B.C.D/N mxvm.gw=A.B.C.D mxvm.mac=MAC mxvm.dns=IP[,IP]",
            "hostname": "mxvm.hostname=NAME",
        },
        "channel": {"kind": "virtio-serial", "port_name": PORT_NAME},
        "machine_hints": "-M microvm,acpi=on (power button for system_powerdown)",
        "sha256": {name: _sha256(dest / name) for name in sorted(files)},
    }
