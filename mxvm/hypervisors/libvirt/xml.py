"""The libvirt domain XML for a VmSpec: typed models, rendered with ElementTree, pinned by
golden tests. Pure: no libvirt, no I/O.

Shape (verified against libvirt 9.0 + QEMU 7.2): the QEMU `microvm` machine with every
virtio device on virtio-mmio (`<address type="virtio-mmio"/>`; libvirt would otherwise
look for a PCI bus microvm does not have, and fail with "No PCI buses available"), no USB
controller and no balloon for the same reason, ACPI on so `virDomainShutdown` presses the
power button, and `on_reboot`/`on_crash` = destroy, the libvirt spelling of QEMU's
`-no-reboot` (the guest's `panic=-1` then ends the domain instead of rebooting it).

PCI passthrough is the exception: libvirt 9.0 has no way to turn on microvm's PCIe host
bridge (`pcie=on`), so a spec with `pci_devices` gets the `q35` machine and libvirt places
the virtio devices on PCI itself; the guest kernel then needs virtio_pci.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mxvm.hypervisors.base import VmSpec
from mxvm.hypervisors.qemu.argv import DEFAULT_GUEST_PORT, Accel, kernel_cmdline

DomainType = Literal["kvm", "qemu"]
Machine = Literal["microvm", "q35"]

METADATA_NS = "https://mxvm.dev/xmlns/libvirt/vm/1"
DOMAIN_PREFIX = "mxvm-"
ROOT_DAC_LABEL = "+0:+0"  # QEMU as root:root, the same privileges as the qemu driver's VMs

ET.register_namespace("mxvm", METADATA_NS)


def domain_name(alloc_id: str) -> str:
    return f"{DOMAIN_PREFIX}{alloc_id}"


# -- models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    kernel: Path
    initrd: Path | None
    cmdline: str
    machine: Machine = "microvm"


@dataclass(frozen=True)
class Disk:
    path: Path
    target: str  # vda, vdb, ...


@dataclass(frozen=True)
class Interface:
    tap: str  # created by mxvm.net; libvirt must not create or delete it
    mac: str | None = None


@dataclass(frozen=True)
class HostDev:
    address: str  # dddd:bb:dd.f; mxvm binds vfio-pci itself, so managed="no"

    def parts(self) -> dict[str, str]:
        domain, bus, rest = self.address.split(":")
        slot, function = rest.split(".")
        return {
            "domain": f"0x{domain}",
            "bus": f"0x{bus}",
            "slot": f"0x{slot}",
            "function": f"0x{function}",
        }


@dataclass(frozen=True)
class Domain:
    """The parts of a libvirt domain mxvm sets; libvirt fills in the rest."""

    name: str
    title: str
    domain_type: DomainType
    memory_mib: int
    vcpus: int
    boot: Boot
    emulator: str
    console_log: Path
    guest_socket: Path
    guest_port: str
    alloc_id: str
    run_dir: Path
    disks: list[Disk] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    hostdevs: list[HostDev] = field(default_factory=list)
    dac_label: str | None = ROOT_DAC_LABEL

    @property
    def mmio(self) -> bool:
        return self.boot.machine == "microvm"

    @property
    def cpu_mode(self) -> str:
        # TCG: every feature it emulates (QEMU's -cpu max); KVM: the host CPU as is.
        return "host-passthrough" if self.domain_type == "kvm" else "maximum"


def domain_from_spec(
    spec: VmSpec,
    *,
    domain_type: DomainType,
    emulator: str,
    host_mhz: int,
    guest_port: str = DEFAULT_GUEST_PORT,
    dac_label: str | None = ROOT_DAC_LABEL,
) -> Domain:
    accel: Accel = "kvm" if domain_type == "kvm" else "tcg"
    boot = Boot(
        kernel=spec.kernel,
        initrd=spec.initrd,
        cmdline=kernel_cmdline(spec, accel=accel, host_mhz=host_mhz),
        machine="q35" if spec.pci_devices else "microvm",
    )
    disks = [Disk(spec.root_disk, "vda")] if spec.root_disk is not None else []
    nics = [Interface(spec.tap, spec.mac)] if spec.tap is not None else []
    return Domain(
        name=domain_name(spec.alloc_id),
        title=spec.name,
        domain_type=domain_type,
        memory_mib=spec.memory_mb,
        vcpus=spec.vcpus,
        boot=boot,
        emulator=emulator,
        console_log=spec.console_log,
        guest_socket=spec.guest_socket,
        guest_port=guest_port,
        alloc_id=spec.alloc_id,
        run_dir=spec.run_dir,
        disks=disks,
        interfaces=nics,
        hostdevs=[HostDev(a) for a in spec.pci_devices],
        dac_label=dac_label,
    )


# -- rendering ---------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _mmio(parent: ET.Element, domain: Domain) -> None:
    if domain.mmio:
        _sub(parent, "address", type="virtio-mmio")


def _os(root: ET.Element, boot: Boot) -> None:
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=boot.machine)
    _sub(os_el, "kernel", str(boot.kernel))
    if boot.initrd is not None:
        _sub(os_el, "initrd", str(boot.initrd))
    _sub(os_el, "cmdline", boot.cmdline)


def _control_devices(devices: ET.Element, domain: Domain) -> None:
    _sub(devices, "emulator", domain.emulator)
    _sub(devices, "controller", type="usb", model="none")
    controller = _sub(devices, "controller", type="virtio-serial", index="0")
    _mmio(controller, domain)
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(domain.console_log))
    _sub(serial, "target", port="0")
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "source", mode="bind", path=str(domain.guest_socket))
    _sub(channel, "target", type="virtio", name=domain.guest_port)


def _disk(devices: ET.Element, domain: Domain, disk: Disk) -> None:
    element = _sub(devices, "disk", type="file", device="disk")
    _sub(element, "driver", name="qemu", type="raw")
    _sub(element, "source", file=str(disk.path))
    _sub(element, "target", dev=disk.target, bus="virtio")
    _mmio(element, domain)


def _interface(devices: ET.Element, domain: Domain, nic: Interface) -> None:
    element = _sub(devices, "interface", type="ethernet")
    if nic.mac is not None:
        _sub(element, "mac", address=nic.mac)
    _sub(element, "target", dev=nic.tap, managed="no")
    _sub(element, "model", type="virtio")
    _mmio(element, domain)


def _hostdev(devices: ET.Element, dev: HostDev) -> None:
    element = _sub(devices, "hostdev", mode="subsystem", type="pci", managed="no")
    source = _sub(element, "source")
    _sub(source, "address", **dev.parts())


def _devices(root: ET.Element, domain: Domain) -> None:
    devices = _sub(root, "devices")
    _control_devices(devices, domain)
    for disk in domain.disks:
        _disk(devices, domain, disk)
    for nic in domain.interfaces:
        _interface(devices, domain, nic)
    for dev in domain.hostdevs:
        _hostdev(devices, dev)
    _sub(devices, "memballoon", model="none")


def _metadata(root: ET.Element, domain: Domain) -> None:
    # Marks the domain as mxvm's and says where its run state lives.
    metadata = _sub(root, "metadata")
    _sub(
        metadata,
        f"{{{METADATA_NS}}}vm",
        alloc_id=domain.alloc_id,
        run_dir=str(domain.run_dir),
    )


def _seclabel(root: ET.Element, domain: Domain) -> None:
    if domain.dac_label is None:
        return  # libvirt's own default: qemu.conf's user, with relabelling
    seclabel = _sub(root, "seclabel", type="static", model="dac", relabel="no")
    _sub(seclabel, "label", domain.dac_label)


def render(domain: Domain) -> str:
    root = ET.Element("domain", type=domain.domain_type)
    _sub(root, "name", domain.name)
    _sub(root, "title", domain.title)
    _metadata(root, domain)
    _sub(root, "memory", str(domain.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(domain.vcpus))
    _os(root, domain.boot)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(root, "cpu", mode=domain.cpu_mode)
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _sub(root, event, "destroy")
    _devices(root, domain)
    _seclabel(root, domain)
    return ET.tostring(root, encoding="unicode")


def domain_xml(
    spec: VmSpec,
    *,
    domain_type: DomainType,
    emulator: str,
    host_mhz: int,
    guest_port: str = DEFAULT_GUEST_PORT,
    dac_label: str | None = ROOT_DAC_LABEL,
) -> str:
    """The domain XML that starts `spec` as a libvirt-managed QEMU microVM."""
    return render(
        domain_from_spec(
            spec,
            domain_type=domain_type,
            emulator=emulator,
            host_mhz=host_mhz,
            guest_port=guest_port,
            dac_label=dac_label,
        )
    )
