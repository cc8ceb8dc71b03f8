"""The QEMU command line for a VmSpec: a pure function, pinned by golden tests.

Shape: `-M microvm` (ACPI on so `system_powerdown` reaches the guest; PCIe on only when
devices are passed through), virtio-mmio devices, everything addressed by absolute paths
inside the allocation's run_dir, and `-daemonize` so QEMU detaches from the agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from mxvm.hypervisors.base import VmSpec

Accel = Literal["kvm", "tcg"]

DEFAULT_GUEST_PORT = "org.mxvm.guest.0"
TCG_CPU = "max"  # every feature TCG emulates; the kernel picks what it needs


def _opt(path: Path | str) -> str:
    """Escape a value for a QEMU option list, where ',' separates options."""
    return str(path).replace(",", ",,")


def kernel_cmdline(spec: VmSpec, *, accel: Accel, host_mhz: int) -> str:
    # earlyprintk: the kernel decompressor's fatal errors reach the console log too.
    # panic=-1 with -no-reboot: a guest panic ends QEMU at once instead of hanging.
    args = ["console=ttyS0", "earlyprintk=ttyS0", "panic=-1"]
    if accel == "tcg":
        # Without it the TCG guest calibrates its TSC against a slow emulated PIT and
        # a large share of boots stall; the host's frequency is the right answer.
        args.append(f"tsc_early_khz={host_mhz * 1000}")
    return " ".join([*args, *spec.kernel_args])


def _machine(spec: VmSpec, accel: Accel) -> list[str]:
    machine = "microvm,acpi=on,pcie=on" if spec.pci_devices else "microvm,acpi=on"
    cpu = "host" if accel == "kvm" else TCG_CPU
    return [
        "-M", machine, "-accel", accel, "-cpu", cpu,
        "-smp", str(spec.vcpus), "-m", f"{spec.memory_mb}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    ]  # fmt: skip


def _boot(spec: VmSpec, accel: Accel, host_mhz: int) -> list[str]:
    argv = ["-kernel", str(spec.kernel)]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    return [*argv, "-append", kernel_cmdline(spec, accel=accel, host_mhz=host_mhz)]


def _control(spec: VmSpec, guest_port: str) -> list[str]:
    return [
        # append: the agent trims a long console log (mxvm.agent.alloclog.trim_console), and
        # QEMU's writes must then go on at the file's new end, not at its old offset.
        "-chardev", f"file,id=console,path={_opt(spec.console_log)},append=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{_opt(spec.qmp_socket)},server=on,wait=off",
        "-chardev", f"socket,id=guest,path={_opt(spec.guest_socket)},server=on,wait=off",
        "-device", "virtio-serial-device",
        "-device", f"virtserialport,chardev=guest,name={_opt(guest_port)}",
    ]  # fmt: skip


def _devices(spec: VmSpec) -> list[str]:
    argv: list[str] = []
    if spec.root_disk is not None:
        argv += [
            "-drive", f"id=disk0,file={_opt(spec.root_disk)},if=none,format=raw",
            "-device", "virtio-blk-device,drive=disk0",
        ]  # fmt: skip
    if spec.tap is not None:
        nic = "virtio-net-device,netdev=net0"
        if spec.mac is not None:
            nic += f",mac={spec.mac}"
        argv += [
            "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
            "-device", nic,
        ]  # fmt: skip
    for address in spec.pci_devices:
        argv += ["-device", f"vfio-pci,host={address}"]
    return argv


def build_argv(
    spec: VmSpec,
    *,
    accel: Accel,
    host_mhz: int,
    qemu_binary: str = "qemu-system-x86_64",
    guest_port: str = DEFAULT_GUEST_PORT,
) -> list[str]:
    """The full argv (binary first) that starts `spec` as a detached QEMU microvm."""
    return [
        qemu_binary,
        "-name", f"mxvm-{spec.alloc_id}",
        *_machine(spec, accel),
        *_boot(spec, accel, host_mhz),
        *_control(spec, guest_port),
        *_devices(spec),
        "-daemonize", "-pidfile", str(spec.pidfile),
    ]  # fmt: skip
