"""PCI functions and IOMMU groups as sysfs describes them.

Everything is read from a configurable sysfs root ("/sys" in production, a temporary tree
in tests). Reading is cheap and synchronous; the agent calls it from a worker thread.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

ADDRESS_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

VENDOR_NAMES: dict[str, str] = {
    "0x10de": "NVIDIA",
    "0x1002": "AMD",
    "0x1022": "AMD",
    "0x8086": "Intel",
    "0x15b3": "Mellanox",
}

CLASS_NAMES: dict[str, str] = {
    "0x0100": "SCSI storage controller",
    "0x0106": "SATA controller",
    "0x0108": "NVMe controller",
    "0x0200": "Ethernet controller",
    "0x0207": "InfiniBand controller",
    "0x0300": "VGA compatible controller",
    "0x0302": "3D controller",
    "0x0380": "Display controller",
    "0x0403": "Audio device",
    "0x0600": "Host bridge",
    "0x0601": "ISA bridge",
    "0x0604": "PCI bridge",
    "0x0680": "Bridge",
    "0x0c03": "USB controller",
    "0x0c05": "SMBus",
    "0x1200": "Processing accelerator",
}

# PCI-to-PCI bridges (normal and subtractive/semi-transparent) carry no workload and are
# handled by pcieport; the kernel's VFIO viability check tolerates them in a group.
BRIDGE_CLASSES = frozenset({"0x0604", "0x0609"})


class PciFunction(BaseModel):
    """One PCI function (`/sys/bus/pci/devices/<address>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    vendor_id: str
    device_id: str
    class_code: str
    driver: str | None = None
    driver_override: str | None = None
    numa_node: int | None = None
    iommu_group: int | None = None
    group_members: tuple[str, ...] = ()

    @property
    def class_prefix(self) -> str:
        """Base class + subclass without the programming interface: "0x030200" -> "0x0302"."""
        return self.class_code[:6]

    @property
    def is_bridge(self) -> bool:
        return self.class_prefix in BRIDGE_CLASSES

    @property
    def is_endpoint(self) -> bool:
        return not self.is_bridge

    @property
    def is_display(self) -> bool:
        return self.class_prefix.startswith("0x03")

    @property
    def slot(self) -> str:
        """Domain:bus:device without the function: the physical device this function is on."""
        return slot_of(self.address)

    @property
    def vendor_name(self) -> str:
        return VENDOR_NAMES.get(self.vendor_id, self.vendor_id)

    @property
    def vendor_slug(self) -> str:
        """Lower-case vendor name as the scheduler matches it ("nvidia"), else the id."""
        return self.vendor_name.lower()

    @property
    def class_name(self) -> str:
        return CLASS_NAMES.get(self.class_prefix, self.class_prefix)


class PciScan(BaseModel):
    """Every PCI function under one sysfs root, plus whether an IOMMU is active."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iommu_enabled: bool
    functions: dict[str, PciFunction]

    def function(self, address: str) -> PciFunction | None:
        return self.functions.get(address)

    def group(self, group: int) -> list[PciFunction]:
        return [f for f in self.functions.values() if f.iommu_group == group]


def slot_of(address: str) -> str:
    return address.rsplit(".", 1)[0]


def iommu_enabled(sysfs_root: Path) -> bool:
    """An IOMMU is active when the kernel made groups or registered an IOMMU unit."""
    return _has_entries(sysfs_root / "kernel" / "iommu_groups") or _has_entries(
        sysfs_root / "class" / "iommu"
    )


def scan_pci(sysfs_root: Path) -> PciScan:
    """Read every function under `<sysfs_root>/bus/pci/devices`."""
    devices_dir = sysfs_root / "bus" / "pci" / "devices"
    functions: dict[str, PciFunction] = {}
    if devices_dir.is_dir():
        for entry in sorted(devices_dir.iterdir()):
            function = read_function(sysfs_root, entry.name)
            if function is not None:
                functions[function.address] = function
    return PciScan(iommu_enabled=iommu_enabled(sysfs_root), functions=functions)


def read_function(sysfs_root: Path, address: str) -> PciFunction | None:
    """One function, or None when it vanished or is unreadable (hot-unplug races a scan)."""
    path = sysfs_root / "bus" / "pci" / "devices" / address
    try:
        group = _link_int(path / "iommu_group")
        return PciFunction(
            address=address,
            vendor_id=_read(path / "vendor").lower(),
            device_id=_read(path / "device").lower(),
            class_code=_read(path / "class").lower(),
            driver=_link_name(path / "driver"),
            driver_override=_override(path / "driver_override"),
            numa_node=_numa(path / "numa_node"),
            iommu_group=group,
            group_members=_group_members(sysfs_root, group),
        )
    except (OSError, ValueError) as exc:
        log.warning("pci.unreadable %s: %s", address, exc, extra={"pci_address": address})
        return None


def _read(path: Path) -> str:
    return path.read_text().strip()


def _override(path: Path) -> str | None:
    try:
        value = _read(path)
    except FileNotFoundError:
        return None
    # The kernel prints "(null)" when no override is set.
    return None if value in ("", "(null)") else value


def _numa(path: Path) -> int | None:
    try:
        value = int(_read(path))
    except FileNotFoundError:
        return None
    return None if value < 0 else value


def _link_name(path: Path) -> str | None:
    try:
        return path.readlink().name
    except FileNotFoundError:
        return None


def _link_int(path: Path) -> int | None:
    name = _link_name(path)
    return None if name is None else int(name)


def _group_members(sysfs_root: Path, group: int | None) -> tuple[str, ...]:
    if group is None:
        return ()
    members = sysfs_root / "kernel" / "iommu_groups" / str(group) / "devices"
    try:
        return tuple(sorted(p.name for p in members.iterdir()))
    except FileNotFoundError:
        return ()


def _has_entries(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False
