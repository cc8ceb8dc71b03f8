"""The node's device inventory: sysfs PCI functions merged with what NVML knows.

`scan_inventory` is synchronous (sysfs reads, NVML calls); async callers run it with
`asyncio.to_thread`. Its `InventoryReport` feeds both the node registration
(`to_devices`) and the operator's `mxvm agent inventory` (`render_table`, JSON via pydantic).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mxvm.devices.name_cache import RememberedGpu, load_names, save_names
from mxvm.devices.nvml import NvmlBackend, NvmlGpu, NvmlStatus
from mxvm.devices.pci import PciFunction, PciScan, scan_pci
from mxvm.devices.readiness import passthrough_blocker
from mxvm.models import Device

log = logging.getLogger(__name__)

NVIDIA = "0x10de"


class DeviceReport(BaseModel):
    """Everything known about one PCI function, with the reasons behind each verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    vendor_id: str
    device_id: str
    class_code: str
    class_name: str
    vendor: str = Field(description="lower-case vendor name, e.g. 'nvidia', else the id")
    kind: str = Field(description="'gpu' for display classes, else e.g. '0x0403'")
    driver: str | None
    numa_node: int | None
    iommu_group: int | None
    group_members: list[str]
    is_bridge: bool
    model: str
    model_source: str = Field(description="'nvml', 'cache' (remembered) or 'pci' (ids)")
    uuid: str = ""
    memory_mb: int = 0
    mig_enabled: bool = False
    healthy: bool = True
    health_reason: str = ""
    passthrough_ready: bool
    passthrough_reason: str = ""

    def to_device(self) -> Device:
        """The scheduler's view: a GPU it cannot pass through is reported unhealthy, so
        nothing gets placed on it."""
        healthy = self.healthy and self.passthrough_ready
        reason = self.health_reason
        if self.healthy and not self.passthrough_ready:
            reason = f"not passthrough-ready: {self.passthrough_reason}"
        return Device(
            id=self.address,
            kind=self.kind,
            vendor=self.vendor,
            model=self.model,
            memory_mb=self.memory_mb,
            numa_node=self.numa_node,
            pci_address=self.address,
            iommu_group=self.iommu_group,
            healthy=healthy,
            health_reason=reason,
        )


class InventoryReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    iommu_enabled: bool
    nvml: NvmlStatus
    devices: list[DeviceReport]
    warnings: list[str] = Field(default_factory=list)

    @property
    def gpus(self) -> list[DeviceReport]:
        return [d for d in self.devices if d.kind == "gpu"]

    def to_devices(self, *, all_endpoints: bool = False) -> list[Device]:
        """Devices for the node registration: the GPUs, or with `all_endpoints` every
        non-bridge function. Companion functions (a GPU's audio) are left out by default:
        they travel with their GPU's IOMMU group and are not scheduled on their own."""
        chosen = [d for d in self.devices if d.kind == "gpu" or (all_endpoints and not d.is_bridge)]
        return [d.to_device() for d in chosen]

    def render_table(self) -> str:
        """A human-readable table of every function, with the IOMMU and NVML state on top."""
        lines = [
            f"IOMMU: {'enabled' if self.iommu_enabled else 'disabled'}",
            f"NVML: {self.nvml.summary}",
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        rows = [_TABLE_HEADER, *(_row(d) for d in self.devices)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_TABLE_HEADER) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        return "\n".join(lines)


_TABLE_HEADER = (
    "ADDRESS",
    "KIND",
    "VENDOR",
    "MODEL",
    "MEM",
    "NUMA",
    "GROUP",
    "DRIVER",
    "HEALTH",
    "PASSTHROUGH",
)


def _row(d: DeviceReport) -> tuple[str, ...]:
    health = "ok" if d.healthy else f"UNHEALTHY: {d.health_reason}"
    if d.is_bridge:
        passthrough = "-"
    else:
        passthrough = "ready" if d.passthrough_ready else f"no: {d.passthrough_reason}"
    model = d.model if d.model_source != "cache" else f"{d.model} (remembered)"
    return (
        d.address,
        d.kind if d.class_name == d.kind else f"{d.kind} {d.class_name}",
        d.vendor,
        model,
        f"{d.memory_mb} MiB" if d.memory_mb else "-",
        "-" if d.numa_node is None else str(d.numa_node),
        "-" if d.iommu_group is None else str(d.iommu_group),
        d.driver or "-",
        health,
        passthrough,
    )


def scan_inventory(
    sysfs_root: Path, *, nvml: NvmlBackend | None, state_dir: Path | None
) -> InventoryReport:
    """Scan sysfs under `sysfs_root`, ask `nvml` about NVIDIA GPUs (None: do not ask), and
    remember GPU names in `state_dir` (None: remember nothing)."""
    scan = scan_pci(sysfs_root)
    status = nvml.query() if nvml is not None else NvmlStatus.unavailable("not queried")
    remembered = load_names(state_dir) if state_dir is not None else {}
    if state_dir is not None:
        _remember(state_dir, remembered, status)
    devices = [_report(scan, f, status, remembered) for f in scan.functions.values()]
    warnings = [f"NVML sees {a}, sysfs does not" for a in status.gpus if a not in scan.functions]
    warnings += status.errors
    log.info(
        "inventory.scanned functions=%d gpus=%d nvml=%s",
        len(devices),
        sum(1 for d in devices if d.kind == "gpu"),
        status.summary,
    )
    return InventoryReport(
        iommu_enabled=scan.iommu_enabled, nvml=status, devices=devices, warnings=warnings
    )


def _remember(state_dir: Path, remembered: dict[str, RememberedGpu], status: NvmlStatus) -> None:
    """Add what NVML sees now to `remembered` (in place) and save it when it changed."""
    fresh = {
        address: RememberedGpu(name=gpu.name, uuid=gpu.uuid, memory_mb=gpu.memory_mb)
        for address, gpu in status.gpus.items()
        if gpu.name
    }
    if all(remembered.get(address) == gpu for address, gpu in fresh.items()):
        return
    remembered.update(fresh)
    try:
        save_names(state_dir, remembered)
    except OSError as exc:
        log.warning("gpu_cache.write_failed %s: %s", state_dir, exc)


def _report(
    scan: PciScan,
    function: PciFunction,
    status: NvmlStatus,
    remembered: dict[str, RememberedGpu],
) -> DeviceReport:
    blocker = passthrough_blocker(scan, function.address)
    report = DeviceReport(
        address=function.address,
        vendor_id=function.vendor_id,
        device_id=function.device_id,
        class_code=function.class_code,
        class_name=function.class_name,
        vendor=function.vendor_slug,
        kind="gpu" if function.is_display else function.class_prefix,
        driver=function.driver,
        numa_node=function.numa_node,
        iommu_group=function.iommu_group,
        group_members=list(function.group_members),
        is_bridge=function.is_bridge,
        model=f"{function.vendor_id[2:]}:{function.device_id[2:]}",
        model_source="pci",
        passthrough_ready=blocker is None,
        passthrough_reason=blocker or "",
    )
    if function.vendor_id != NVIDIA or not function.is_display:
        return report
    return _with_nvidia_details(report, status, remembered)


def _with_nvidia_details(
    report: DeviceReport, status: NvmlStatus, remembered: dict[str, RememberedGpu]
) -> DeviceReport:
    gpu: NvmlGpu | None = status.gpus.get(report.address)
    if gpu is not None:
        model = gpu.name or report.model
        return report.model_copy(
            update={
                "model": model,
                "model_source": "nvml" if gpu.name else report.model_source,
                "uuid": gpu.uuid,
                "memory_mb": gpu.memory_mb,
                "mig_enabled": gpu.mig_enabled,
                "healthy": gpu.healthy,
                "health_reason": gpu.health_reason,
            }
        )
    update: dict[str, object] = {}
    known = remembered.get(report.address)
    if known is not None:
        update = {
            "model": known.name,
            "model_source": "cache",
            "uuid": known.uuid,
            "memory_mb": known.memory_mb,
        }
    # The nvidia driver holds it, NVML works, yet NVML cannot see it: fallen off the bus.
    if status.available and report.driver == "nvidia":
        update |= {"healthy": False, "health_reason": "bound to nvidia but not visible to NVML"}
    return report.model_copy(update=update)
