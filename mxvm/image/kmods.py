"""Kernel modules for the initramfs: the closure of the wanted modules over their
`depends=` (read from each .ko's .modinfo strings), in load order, so /init can `insmod`
them one by one with no depmod or modules.dep."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mxvm.image.errors import ImageBuildError

# virtio over mmio (QEMU microvm) and pci (q35, cloud-hypervisor); the console port is the
# host channel; rng feeds the guest's entropy early; button + evdev deliver the ACPI power
# button (QEMU system_powerdown) to the guest agent.
WANTED = (
    "virtio_mmio",
    "virtio_pci",
    "virtio_console",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    "button",
    "evdev",
)
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


def _norm(name: str) -> str:
    return name.replace("-", "_")


def index(modules_dir: Path) -> dict[str, Path]:
    return {_norm(p.name.removesuffix(".ko")): p for p in modules_dir.rglob("*.ko")}


def depends(ko: Path) -> list[str]:
    match = _DEPENDS.search(ko.read_bytes())
    if match is None or not match.group(1):
        return []
    return [_norm(n) for n in match.group(1).decode().split(",") if n]


def load_order(wanted: tuple[str, ...], modules: dict[str, Path]) -> list[str]:
    """Dependencies first (depth-first post-order), each module once."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ImageBuildError(f"module dependency cycle through {name}")
        if name not in modules:
            raise ImageBuildError(f"kernel module {name} not found")
        visiting.add(name)
        for dep in depends(modules[name]):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(_norm(name))
    return order


def install(modules_dir: Path, root: Path, wanted: tuple[str, ...] = WANTED) -> list[str]:
    """Copy the closure under root/lib/modules/mxvm; returns in-guest paths in load order."""
    modules = index(modules_dir)
    if not modules:
        raise ImageBuildError(f"no kernel modules under {modules_dir}")
    dest = root / "lib" / "modules" / "mxvm"
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in load_order(wanted, modules):
        shutil.copyfile(modules[name], dest / f"{name}.ko")
        paths.append(f"/lib/modules/mxvm/{name}.ko")
    return paths
