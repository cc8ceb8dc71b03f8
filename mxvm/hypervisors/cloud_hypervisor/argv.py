"""The cloud-hypervisor command line and VM config for a VmSpec: pure, pinned by goldens.

The command line only starts the VMM with its API socket and a log file; the VM itself
is described by the VmConfig sent with vm.create, so everything about the guest lives in
one typed document that vm.info echoes back.

Guest I/O layout (CH has no virtio-serial ports, and refuses mode Socket for its
virtio-console, accepting it only for the serial port):
- serial (16550 UART, guest /dev/ttyS0) = the guest channel: mode Socket on
  <run_dir>/guest.sock. CH binds and listens there and serves one host connection at a
  time, like QEMU's `-chardev socket,server=on` (except that a new connection replaces
  the previous one), so the host-side guest client is the same for both drivers.
  `mxvm.channel=ttyS0` on the kernel command line tells the guest agent to serve on
  /dev/ttyS0 (in raw mode) instead of a virtio-serial port.
- virtio-console (guest /dev/hvc0) = the kernel console: mode File on
  <run_dir>/console.log, with `console=hvc0` on the kernel command line.
- `panic=0`: CH has no -no-reboot, so a guest panic with panic=-1 would reboot the VM
  in a loop; the guest halts instead and the driver reads "Kernel panic" off the console.
"""

from __future__ import annotations

from pathlib import Path

from mxvm.hypervisors.base import VmSpec
from mxvm.hypervisors.cloud_hypervisor.models import (
    ConsoleConfig,
    CpusConfig,
    DeviceConfig,
    DiskConfig,
    MemoryConfig,
    NetConfig,
    PayloadConfig,
    SerialConfig,
    VmConfig,
)

CMDLINE_BASE = ("console=hvc0", "panic=0", "mxvm.channel=ttyS0")
# The driver owns where the kernel console goes and what a panic does: a console= word
# naming ttyS0 would write kernel messages into the guest channel.
_DRIVER_OWNED = ("console=", "earlyprintk=", "panic=", "mxvm.channel=")
PCI_SYSFS = Path("/sys/bus/pci/devices")
API_SOCKET = "ch.sock"
VMM_LOG = "vmm.log"


def build_argv(spec: VmSpec, *, binary: str, api_socket: Path | None = None) -> list[str]:
    """The full argv (binary first) that starts an empty VMM serving its API.

    The socket defaults to <run_dir>/ch.sock; CH's log goes to <run_dir>/vmm.log.
    """
    api_socket = api_socket or spec.run_dir / API_SOCKET
    log_file = spec.run_dir / VMM_LOG
    return [
        binary,
        "--api-socket", f"path={api_socket}",
        "--log-file", str(log_file),
        "-v",  # info level: VM lifecycle events land in the log, not just errors
    ]  # fmt: skip


def kernel_cmdline(spec: VmSpec) -> str:
    own = [a for a in spec.kernel_args if not a.startswith(_DRIVER_OWNED)]
    return " ".join([*CMDLINE_BASE, *own])


def _payload(spec: VmSpec) -> PayloadConfig:
    return PayloadConfig(
        kernel=str(spec.kernel),
        initramfs=None if spec.initrd is None else str(spec.initrd),
        cmdline=kernel_cmdline(spec),
    )


def _net(spec: VmSpec) -> list[NetConfig] | None:
    if spec.tap is None:
        return None
    return [NetConfig(tap=spec.tap, mac=spec.mac)]


def _devices(spec: VmSpec) -> list[DeviceConfig] | None:
    if not spec.pci_devices:
        return None
    return [
        DeviceConfig(path=str(PCI_SYSFS / address), id=f"vfio{i}")
        for i, address in enumerate(spec.pci_devices)
    ]


def build_vm_config(spec: VmSpec) -> VmConfig:
    """The body of vm.create for `spec`."""
    disks = None if spec.root_disk is None else [DiskConfig(path=str(spec.root_disk))]
    return VmConfig(
        payload=_payload(spec),
        cpus=CpusConfig(boot_vcpus=spec.vcpus, max_vcpus=spec.vcpus),
        memory=MemoryConfig(size=spec.memory_mb * 1024 * 1024),
        disks=disks,
        net=_net(spec),
        serial=SerialConfig(mode="Socket", socket=str(spec.guest_socket)),
        console=ConsoleConfig(mode="File", file=str(spec.console_log)),
        devices=_devices(spec),
    )
