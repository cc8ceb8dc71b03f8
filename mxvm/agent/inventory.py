"""What this host offers, as a NodeRegistration: psutil for cpu/memory/disk, the usable
drivers (and whether KVM really works), guest images, and PCI/GPU devices."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import platform
from pathlib import Path

import psutil

from mxvm.agent.images import GuestImage, list_images
from mxvm.config import AgentSettings
from mxvm.devices import NvmlBackend, NvmlStatus, PynvmlBackend, scan_inventory
from mxvm.hypervisors.base import Driver
from mxvm.hypervisors.qemu.driver import QemuDriver
from mxvm.models import Device, NodeRegistration, Resources

log = logging.getLogger(__name__)
MIB = 1 << 20
NVML_LIBRARY = "libnvidia-ml.so.1"  # the NVIDIA driver's library, as pynvml loads it


class NoNvmlLibrary:
    """NVML on a host without the NVIDIA driver's library: pynvml's own answer."""

    def query(self) -> NvmlStatus:
        return NvmlStatus.unavailable("NVML Shared Library Not Found")


def host_nvml(library: str = NVML_LIBRARY) -> NvmlBackend:
    """The real NVML. Where the driver's library cannot be loaded, the answer is known
    without importing pynvml, which the agent would otherwise keep (2 MiB) for nothing."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return NoNvmlLibrary()
    return PynvmlBackend()


def scan_devices(settings: AgentSettings, nvml: NvmlBackend | None = None) -> list[Device]:
    """The node's devices with their health now (blocking: sysfs and NVML). `nvml` is the
    seam for tests; None means the real NVML."""
    nvml = nvml if nvml is not None else host_nvml()
    report = scan_inventory(settings.sysfs_root, nvml=nvml, state_dir=settings.state_dir)
    return report.to_devices()


async def _kvm(drivers: dict[str, Driver], images: dict[str, GuestImage]) -> bool | None:
    """Probe KVM by really booting under it (the qemu driver's probe); None if unknown."""
    qemu = drivers.get("qemu")
    if not isinstance(qemu, QemuDriver):
        return None
    kernel = next(iter(images.values())).kernel if images else None
    return await qemu.select_accel(kernel) == "kvm"


async def registration(
    settings: AgentSettings,
    drivers: dict[str, Driver],
    image_dir: Path,
    *,
    agent_url: str,
    agent_secret: str,
    nvml: NvmlBackend | None = None,
) -> NodeRegistration:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    disk = psutil.disk_usage(str(settings.state_dir))
    attrs = {
        "cpu.arch": platform.machine(),
        "kernel.name": platform.system().lower(),
        "kernel.version": platform.release(),
        "os.name": _os_name(),
    }
    images = list_images(image_dir)
    kvm = await _kvm(drivers, images)
    if kvm is not None:
        attrs["kvm"] = str(kvm).lower()
    for name, image in images.items():
        attrs[f"image.{name}.min_memory_mb"] = str(image.min_memory_mb)
    devices = await asyncio.to_thread(scan_devices, settings, nvml)
    return NodeRegistration(
        name=settings.node_name,
        address=settings.address or settings.api_listen.rpartition(":")[0],
        resources=Resources(
            cpu_millicores=int((psutil.cpu_count() or 1) * 1000 * settings.cpu_overcommit),
            memory_mb=psutil.virtual_memory().total // MIB,
            disk_mb=disk.total // MIB,
        ),
        reserved=Resources(
            cpu_millicores=settings.reserved_cpu_millicores,
            memory_mb=settings.reserved_memory_mb,
            disk_mb=settings.reserved_disk_mb,
        ),
        devices=devices,
        attributes=attrs,
        drivers=sorted(drivers),
        host_volumes=settings.host_volumes,
        agent_url=agent_url,
        agent_secret=agent_secret,
    )


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("ID="):
                return line[3:].strip('"')
    except OSError:
        pass
    return os.uname().sysname.lower()
