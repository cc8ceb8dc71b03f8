"""Host devices: PCI/IOMMU inventory from sysfs, NVML inventory, VFIO binding of groups.

report = scan_inventory(Path("/sys"), nvml=PynvmlBackend(), state_dir=state_dir)
registration.devices = report.to_devices()
await bind_group(Path("/sys"), "0000:65:00.0", state_dir=state_dir)
await release_group(Path("/sys"), "0000:65:00.0", state_dir=state_dir)
"""

from mxvm.devices.inventory import DeviceReport, InventoryReport, scan_inventory
from mxvm.devices.nvml import NvmlBackend, NvmlGpu, NvmlStatus, PynvmlBackend
from mxvm.devices.pci import PciFunction, PciScan, scan_pci
from mxvm.devices.readiness import passthrough_blocker
from mxvm.devices.vfio import (
    BindResult,
    PassthroughError,
    ReleaseResult,
    bind_group,
    release_group,
)

__all__ = [
    "BindResult",
    "DeviceReport",
    "InventoryReport",
    "NvmlBackend",
    "NvmlGpu",
    "NvmlStatus",
    "PassthroughError",
    "PciFunction",
    "PciScan",
    "PynvmlBackend",
    "ReleaseResult",
    "bind_group",
    "passthrough_blocker",
    "release_group",
    "scan_inventory",
    "scan_pci",
]
