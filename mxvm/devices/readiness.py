"""Can a PCI function be passed through to a VM? The VFIO group viability rule, explained.

VFIO hands a VM whole IOMMU groups. A group is usable when every endpoint in it is the
device itself, another function of the same physical device (a GPU's audio function),
unbound, or already held by vfio-pci / pci-stub: those are the members `bind_group` takes
over. Bridges are left to pcieport and ignored, as the kernel does.
"""

from __future__ import annotations

from mxvm.devices.pci import PciFunction, PciScan

VFIO_DRIVER = "vfio-pci"
HOLDING_DRIVERS = frozenset({VFIO_DRIVER, "pci-stub"})


def passthrough_blocker(scan: PciScan, address: str) -> str | None:
    """Why `address` cannot be passed through, or None when it can."""
    function = scan.function(address)
    if function is None:
        return f"no PCI device {address}"
    if function.is_bridge:
        return "bridge, not a passthrough target"
    if not scan.iommu_enabled:
        return "iommu disabled"
    if function.iommu_group is None:
        return "no iommu group"
    blockers = [member for member in group_endpoints(scan, function) if _blocks(function, member)]
    if not blockers:
        return None
    shared = ", ".join(f"{m.address} (in use by {m.driver})" for m in blockers)
    return f"group {function.iommu_group} shared with {shared}"


def group_endpoints(scan: PciScan, function: PciFunction) -> list[PciFunction]:
    """Every endpoint in `function`'s IOMMU group, `function` included, by address."""
    members = function.group_members or (function.address,)
    found = [scan.function(address) for address in members]
    return [m for m in found if m is not None and m.is_endpoint]


def _blocks(function: PciFunction, member: PciFunction) -> bool:
    if member.address == function.address or member.slot == function.slot:
        return False
    return member.driver is not None and member.driver not in HOLDING_DRIVERS
