"""The Driver protocol every hypervisor backend implements, and the models it speaks.

A Driver turns a VmSpec into a running microVM and answers for it afterwards, also from a
fresh agent process: `recover()` re-adopts a VM started by an earlier agent (Nomad's
RecoverTask), so VMs must outlive the agent that started them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mxvm.errors import MxvmError
from mxvm.models import MIN_GUEST_MEMORY_MB

UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
IFNAMSIZ_MAX = 15  # IFNAMSIZ is 16 including the NUL
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")


class DriverError(MxvmError):
    """A hypervisor could not do what was asked (start failed, VMM unreachable, ...)."""

    status = 500
    title = "hypervisor driver error"


class ImageError(DriverError):
    """A guest image file (kernel, initrd, disk) is missing, empty, unreadable or corrupt."""

    status = 422
    title = "bad guest image"

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"guest image {path}: {problem}", path=str(path))
        self.path = path
        self.problem = problem


class Capabilities(BaseModel):
    """What a driver can do on this host; the agent reports it, the scheduler filters on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kvm: bool = False
    graceful_stop: bool = False
    recover: bool = False
    device_passthrough: bool = False
    guest_agent: bool = Field(
        default=True, description="runs the guest agent (False: the VM's own exit is the workload)"
    )


class InRunDir:
    """The fixed names inside a VM's run dir, for what starts a VM (VmSpec) and what finds it
    again (VmHandle): a recovering agent finds them from `run_dir` alone."""

    if TYPE_CHECKING:  # the models' own field (here it would be a field of its own, first)
        run_dir: Path

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def guest_socket(self) -> Path:
        return self.run_dir / "guest.sock"

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "vmm.pid"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "vm.json"


class VmSpec(InRunDir, BaseModel):
    """Everything a driver needs to start one allocation's microVM.

    `run_dir` is the allocation's private directory; the sockets, pidfile and console log
    live inside it at fixed names, so a recovering agent finds them from `run_dir` alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alloc_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\[\]-]+$")
    vcpus: int = Field(ge=1, le=255)
    memory_mb: int = Field(ge=MIN_GUEST_MEMORY_MB)
    kernel: Path
    initrd: Path | None = None
    root_disk: Path | None = None
    kernel_args: list[str] = Field(default_factory=list)
    tap: str | None = None
    mac: str | None = None
    pci_devices: list[str] = Field(default_factory=list, description="host PCI addresses")
    run_dir: Path

    @field_validator("run_dir", "kernel", "initrd", "root_disk")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # QEMU's -daemonize does chdir("/"), so a relative path would silently change meaning.
        if v is not None and not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v

    @field_validator("tap")
    @classmethod
    def _tap(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not 0 < len(v.encode()) <= IFNAMSIZ_MAX or "/" in v or any(c.isspace() for c in v):
            raise ValueError(f"interface names are 1..{IFNAMSIZ_MAX} bytes, no '/' or spaces")
        return v

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not MAC_RE.match(v.lower()):
            raise ValueError("must look like 52:54:00:12:34:56")
        return v.lower() if v else v

    @field_validator("pci_devices")
    @classmethod
    def _pci(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not PCI_RE.match(a)]
        if bad:
            raise ValueError(f"not full PCI addresses (dddd:bb:dd.f): {bad}")
        return v

    @field_validator("kernel_args")
    @classmethod
    def _kernel_args(cls, v: list[str]) -> list[str]:
        if any(not a or any(c.isspace() for c in a) for a in v):
            raise ValueError("each kernel argument is one non-empty word without whitespace")
        return v

    @model_validator(mode="after")
    def _socket_paths(self) -> VmSpec:
        for sock in (self.qmp_socket, self.guest_socket):
            if len(str(sock).encode()) > UNIX_PATH_MAX:
                raise ValueError(
                    f"run_dir is too long: socket path {sock} exceeds {UNIX_PATH_MAX} bytes"
                )
        return self


class VmState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # ended on purpose: guest power-off, or stop()
    CRASHED = "crashed"  # ended without being asked to: VMM died, guest panicked
    UNKNOWN = "unknown"  # the process lives but the VMM does not answer


class VmHandle(InRunDir, BaseModel):
    """What the agent keeps to find a VM again; enough to rebuild after a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alloc_id: str
    driver: str
    pid: int = Field(gt=0)
    run_dir: Path


class VmStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: VmState
    pid: int | None = None
    reason: str = ""
    exit_code: int | None = Field(
        default=None, description="only where the driver can know it (fake, parent-owned VMMs)"
    )


@runtime_checkable
class Driver(Protocol):
    """One hypervisor backend. Every method has a bounded duration except `wait`."""

    @property
    def name(self) -> str: ...

    def capabilities(self) -> Capabilities: ...

    async def start(self, spec: VmSpec) -> VmHandle:
        """Start the VM; return once the VMM answers on its control socket."""
        ...

    async def recover(self, alloc_id: str, run_dir: Path) -> VmHandle | None:
        """Re-adopt a VM an earlier agent started: its VMM still runs; None otherwise."""
        ...

    async def inspect(self, handle: VmHandle) -> VmStatus: ...

    async def stop(self, handle: VmHandle, grace_s: float) -> VmStatus:
        """Ask the guest to power off; kill the VMM if it has not after `grace_s`."""
        ...

    async def destroy(self, handle: VmHandle) -> None:
        """Kill the VMM if alive and remove the VM's run state. Idempotent."""
        ...

    async def wait(self, handle: VmHandle) -> VmStatus:
        """Return once the VM has ended, with how it ended."""
        ...
