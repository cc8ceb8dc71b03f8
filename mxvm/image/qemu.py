"""QEMU arguments for the dev image: the guest channel's device args (which every QEMU
command line booting this image needs) and a minimal microvm command line used by the
image's own tests and bench/guest_boot.py. The real driver lives in mxvm.hypervisors."""

from __future__ import annotations

from pathlib import Path

from mxvm.guest.protocol import PORT_NAME
from mxvm.image.build import ImagePaths

CHARDEV_ID = "mxvmch"


def channel_args(sock: Path, *, mmio: bool = True) -> list[str]:
    """virtio-serial with one named port, its chardev a unix socket QEMU listens on.
    `mmio` for -M microvm; False for PCI machines (q35)."""
    bus = "virtio-serial-device" if mmio else "virtio-serial-pci"
    return [
        "-device", bus,
        "-chardev", f"socket,id={CHARDEV_ID},path={sock},server=on,wait=off",
        "-device", f"virtserialport,chardev={CHARDEV_ID},name={PORT_NAME}",
    ]  # fmt: skip


def minimal_argv(
    image: ImagePaths,
    sock: Path,
    *,
    cmdline: str,
    console_log: Path,
    memory_mb: int = 256,
    vcpus: int = 1,
    qmp_sock: Path | None = None,
    user_net_mac: str | None = None,
    serial_channel: bool = False,
    qemu: str = "qemu-system-x86_64",
) -> list[str]:
    """microvm + TCG + ACPI (power button), console to a file; no network unless
    `user_net_mac`: then one virtio-net NIC on QEMU's restricted user-mode network
    (guest-only 10.0.2.0/24, no route out), enough to test guest network set-up.
    `serial_channel`: cloud-hypervisor's layout instead — the channel on the UART (ttyS0)
    and the console on virtio-console (hvc0); pair with guest_cmdline(console="hvc0",
    serial_channel="ttyS0")."""
    argv = [
        qemu, "-M", "microvm,acpi=on", "-accel", "tcg", "-cpu", "max",
        "-m", str(memory_mb), "-smp", str(vcpus),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
    ]  # fmt: skip
    if serial_channel:
        argv += [
            "-chardev", f"socket,id={CHARDEV_ID},path={sock},server=on,wait=off",
            "-serial", f"chardev:{CHARDEV_ID}",
            "-device", "virtio-serial-device",
            "-chardev", f"file,id=mxvmcon,path={console_log}",
            "-device", "virtconsole,chardev=mxvmcon",
        ]  # fmt: skip
    else:
        argv += ["-serial", f"file:{console_log}", *channel_args(sock)]
    if qmp_sock is not None:
        argv += ["-qmp", f"unix:{qmp_sock},server=on,wait=off"]
    if user_net_mac is not None:
        argv += [
            "-netdev", "user,id=n0,restrict=on",
            "-device", f"virtio-net-device,netdev=n0,mac={user_net_mac}",
        ]  # fmt: skip
    return argv
