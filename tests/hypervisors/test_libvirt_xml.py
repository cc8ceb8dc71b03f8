"""Golden tests: the exact libvirt domain XML for representative specs (canonicalised)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from mxvm.hypervisors.base import VmSpec
from mxvm.hypervisors.libvirt.xml import (
    METADATA_NS,
    Domain,
    domain_from_spec,
    domain_name,
    domain_xml,
)

RUN = "/run/mxvm/a1"
QEMU = "/usr/bin/qemu-system-x86_64"


def spec(**overrides: Any) -> VmSpec:
    fields: dict[str, Any] = {
        "alloc_id": "a1",
        "name": "job[0]",
        "vcpus": 2,
        "memory_mb": 256,
        "kernel": Path("/img/vmlinuz"),
        "run_dir": Path(RUN),
    }
    fields.update(overrides)
    return VmSpec(**fields)


def canonical(document: str) -> str:
    return ET.canonicalize(xml_data=document, strip_text=True)


def assert_same(actual: str, expected: str) -> None:
    assert canonical(actual) == canonical(expected)


def control_devices(port: str = "org.mxvm.guest.0", *, mmio: bool = True) -> str:
    address = '<address type="virtio-mmio"/>' if mmio else ""
    return f"""
    <emulator>{QEMU}</emulator>
    <controller type="usb" model="none"/>
    <controller type="virtio-serial" index="0">{address}</controller>
    <serial type="file">
      <source path="{RUN}/console.log"/>
      <target port="0"/>
    </serial>
    <channel type="unix">
      <source mode="bind" path="{RUN}/guest.sock"/>
      <target type="virtio" name="{port}"/>
    </channel>"""


METADATA = f"""
  <metadata>
    <mxvm:vm xmlns:mxvm="{METADATA_NS}" alloc_id="a1" run_dir="{RUN}"/>
  </metadata>"""

ROOT_SECLABEL = """
  <seclabel type="static" model="dac" relabel="no"><label>+0:+0</label></seclabel>"""

LIFECYCLE = """
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>"""


def test_tcg_minimal() -> None:
    actual = domain_xml(spec(), domain_type="qemu", emulator=QEMU, host_mhz=2300)
    expected = f"""
<domain type="qemu">
  <name>mxvm-a1</name>
  <title>job[0]</title>{METADATA}
  <memory unit="MiB">256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="microvm">hvm</type>
    <kernel>/img/vmlinuz</kernel>
    <cmdline>console=ttyS0 earlyprintk=ttyS0 panic=-1 tsc_early_khz=2300000</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode="maximum"/>{LIFECYCLE}
  <devices>{control_devices()}
    <memballoon model="none"/>
  </devices>{ROOT_SECLABEL}
</domain>"""
    assert_same(actual, expected)


def test_kvm_with_initrd_disk_and_network() -> None:
    full = spec(
        initrd=Path("/img/initrd.img"),
        root_disk=Path("/var/lib/mxvm/a1.raw"),
        tap="mxt-a1",
        mac="52:54:00:AA:BB:01",
        kernel_args=["quiet", "mxvm.ip=10.0.0.2/24"],
    )
    actual = domain_xml(full, domain_type="kvm", emulator=QEMU, host_mhz=2300)
    expected = f"""
<domain type="kvm">
  <name>mxvm-a1</name>
  <title>job[0]</title>{METADATA}
  <memory unit="MiB">256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="microvm">hvm</type>
    <kernel>/img/vmlinuz</kernel>
    <initrd>/img/initrd.img</initrd>
    <cmdline>console=ttyS0 earlyprintk=ttyS0 panic=-1 quiet mxvm.ip=10.0.0.2/24</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode="host-passthrough"/>{LIFECYCLE}
  <devices>{control_devices()}
    <disk type="file" device="disk">
      <driver name="qemu" type="raw"/>
      <source file="/var/lib/mxvm/a1.raw"/>
      <target dev="vda" bus="virtio"/>
      <address type="virtio-mmio"/>
    </disk>
    <interface type="ethernet">
      <mac address="52:54:00:aa:bb:01"/>
      <target dev="mxt-a1" managed="no"/>
      <model type="virtio"/>
      <address type="virtio-mmio"/>
    </interface>
    <memballoon model="none"/>
  </devices>{ROOT_SECLABEL}
</domain>"""
    assert_same(actual, expected)


def test_pci_passthrough_uses_q35_and_lets_libvirt_place_virtio_on_pci() -> None:
    gpu = spec(pci_devices=["0000:41:00.0", "0000:41:00.1"], tap="mxt-a1")
    actual = domain_xml(gpu, domain_type="kvm", emulator=QEMU, host_mhz=2300)
    expected = f"""
<domain type="kvm">
  <name>mxvm-a1</name>
  <title>job[0]</title>{METADATA}
  <memory unit="MiB">256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <kernel>/img/vmlinuz</kernel>
    <cmdline>console=ttyS0 earlyprintk=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode="host-passthrough"/>{LIFECYCLE}
  <devices>{control_devices(mmio=False)}
    <interface type="ethernet">
      <target dev="mxt-a1" managed="no"/>
      <model type="virtio"/>
    </interface>
    <hostdev mode="subsystem" type="pci" managed="no">
      <source><address domain="0x0000" bus="0x41" slot="0x00" function="0x0"/></source>
    </hostdev>
    <hostdev mode="subsystem" type="pci" managed="no">
      <source><address domain="0x0000" bus="0x41" slot="0x00" function="0x1"/></source>
    </hostdev>
    <memballoon model="none"/>
  </devices>{ROOT_SECLABEL}
</domain>"""
    assert_same(actual, expected)


def test_custom_port_and_libvirts_default_security_label() -> None:
    actual = domain_xml(
        spec(vcpus=1, memory_mb=72),
        domain_type="qemu",
        emulator=QEMU,
        host_mhz=3000,
        guest_port="org.example.agent",
        dac_label=None,
    )
    expected = f"""
<domain type="qemu">
  <name>mxvm-a1</name>
  <title>job[0]</title>{METADATA}
  <memory unit="MiB">72</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64" machine="microvm">hvm</type>
    <kernel>/img/vmlinuz</kernel>
    <cmdline>console=ttyS0 earlyprintk=ttyS0 panic=-1 tsc_early_khz=3000000</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode="maximum"/>{LIFECYCLE}
  <devices>{control_devices("org.example.agent")}
    <memballoon model="none"/>
  </devices>
</domain>"""
    assert_same(actual, expected)


def test_markup_characters_in_paths_are_escaped_not_injected() -> None:
    tricky = spec(kernel=Path("/img/a&b<c>/vmlinuz"), run_dir=Path("/run/x'\"y"))
    document = domain_xml(tricky, domain_type="qemu", emulator=QEMU, host_mhz=2300)
    root = ET.fromstring(document)
    assert root.findtext("os/kernel") == "/img/a&b<c>/vmlinuz"
    serial = root.find("devices/serial/source")
    assert serial is not None
    assert serial.get("path") == "/run/x'\"y/console.log"
    assert len(root.findall("devices/serial")) == 1


def test_model_carries_what_the_driver_needs() -> None:
    model = domain_from_spec(spec(), domain_type="qemu", emulator=QEMU, host_mhz=2300)
    assert isinstance(model, Domain)
    assert model.name == domain_name("a1") == "mxvm-a1"
    assert model.mmio
    assert model.guest_socket == Path(RUN) / "guest.sock"
