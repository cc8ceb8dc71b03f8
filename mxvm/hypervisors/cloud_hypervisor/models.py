"""Request and response bodies of cloud-hypervisor's REST API (its OpenAPI spec,
vmm/src/api/openapi/cloud-hypervisor.yaml), limited to the fields mxvm uses.

Field names and enum values are the spec's verbatim. Responses carry many more fields
than modelled here (CH echoes its whole config with defaults filled in), so every model
ignores unknown keys; requests are built from these models and dumped without the
fields left unset, so CH applies its own defaults for everything else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ConsoleMode = Literal["Off", "Pty", "Tty", "File", "Socket", "Null"]
VmStateName = Literal["Created", "Running", "Shutdown", "Paused", "BreakPoint"]


class ApiBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The request body: unset optional fields left out, as CH's serde defaults expect."""
        return self.model_dump(mode="json", exclude_none=True)


class PayloadConfig(ApiBody):
    kernel: str | None = None
    initramfs: str | None = None
    cmdline: str | None = None
    firmware: str | None = None


class CpusConfig(ApiBody):
    boot_vcpus: int = Field(ge=1)
    max_vcpus: int = Field(ge=1)


class MemoryConfig(ApiBody):
    size: int = Field(gt=0, description="bytes")


class DiskConfig(ApiBody):
    path: str
    readonly: bool | None = None
    id: str | None = None


class NetConfig(ApiBody):
    tap: str | None = None
    mac: str | None = None
    id: str | None = None


class SerialConfig(ApiBody):
    mode: ConsoleMode
    file: str | None = None
    socket: str | None = None


class ConsoleConfig(ApiBody):
    """virtio-console. CH refuses mode Socket here (serial only), see argv.build_vm_config."""

    mode: ConsoleMode
    file: str | None = None


class DeviceConfig(ApiBody):
    """A VFIO device: `path` is its sysfs directory, /sys/bus/pci/devices/<address>."""

    path: str
    id: str | None = None
    iommu: bool | None = None


class VmConfig(ApiBody):
    payload: PayloadConfig
    cpus: CpusConfig | None = None
    memory: MemoryConfig | None = None
    disks: list[DiskConfig] | None = None
    net: list[NetConfig] | None = None
    serial: SerialConfig | None = None
    console: ConsoleConfig | None = None
    devices: list[DeviceConfig] | None = None


class VmInfo(ApiBody):
    config: VmConfig
    state: VmStateName
    memory_actual_size: int | None = None


class VmmPingResponse(ApiBody):
    version: str
    build_version: str | None = None
    pid: int | None = None
    features: list[str] | None = None


class PciDeviceInfo(ApiBody):
    id: str
    bdf: str
