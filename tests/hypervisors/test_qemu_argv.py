"""Golden tests: the exact QEMU command line for representative specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mxvm.hypervisors.base import VmSpec
from mxvm.hypervisors.qemu.argv import build_argv, kernel_cmdline

RUN = "/run/mxvm/a1"


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


def control(port: str = "org.mxvm.guest.0") -> list[str]:
    return [
        "-chardev", f"file,id=console,path={RUN}/console.log,append=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{RUN}/qmp.sock,server=on,wait=off",
        "-chardev", f"socket,id=guest,path={RUN}/guest.sock,server=on,wait=off",
        "-device", "virtio-serial-device",
        "-device", f"virtserialport,chardev=guest,name={port}",
    ]  # fmt: skip


TAIL = ["-daemonize", "-pidfile", f"{RUN}/vmm.pid"]


def test_tcg_minimal() -> None:
    assert build_argv(spec(), accel="tcg", host_mhz=2300) == [
        "qemu-system-x86_64",
        "-name", "mxvm-a1",
        "-M", "microvm,acpi=on", "-accel", "tcg", "-cpu", "max",
        "-smp", "2", "-m", "256M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", "/img/vmlinuz",
        "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 tsc_early_khz=2300000",
        *control(),
        *TAIL,
    ]  # fmt: skip


def test_kvm_with_initrd_disk_tap_and_args() -> None:
    s = spec(
        initrd=Path("/img/initrd.cpio.zst"),
        root_disk=Path("/var/lib/mxvm/a1/root.img"),
        kernel_args=["quiet", "mxvm.guest=1"],
        tap="mxt-a1",
        mac="52:54:00:AB:cd:01",
        vcpus=4,
        memory_mb=1024,
    )
    argv = build_argv(s, accel="kvm", host_mhz=2300, qemu_binary="/nix/bin/qemu-kvm")
    assert argv == [
        "/nix/bin/qemu-kvm",
        "-name", "mxvm-a1",
        "-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host",
        "-smp", "4", "-m", "1024M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", "/img/vmlinuz",
        "-initrd", "/img/initrd.cpio.zst",
        "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 quiet mxvm.guest=1",
        *control(),
        "-drive", "id=disk0,file=/var/lib/mxvm/a1/root.img,if=none,format=raw",
        "-device", "virtio-blk-device,drive=disk0",
        "-netdev", "tap,id=net0,ifname=mxt-a1,script=no,downscript=no",
        "-device", "virtio-net-device,netdev=net0,mac=52:54:00:ab:cd:01",
        *TAIL,
    ]  # fmt: skip


def test_tap_without_mac_lets_qemu_pick() -> None:
    argv = build_argv(spec(tap="t0"), accel="kvm", host_mhz=1)
    assert argv[argv.index("-netdev") : argv.index("-netdev") + 4] == [
        "-netdev", "tap,id=net0,ifname=t0,script=no,downscript=no",
        "-device", "virtio-net-device,netdev=net0",
    ]  # fmt: skip


def test_vfio_turns_on_pcie_and_adds_each_function() -> None:
    s = spec(pci_devices=["0000:3b:00.0", "0000:3b:00.1"])
    argv = build_argv(s, accel="kvm", host_mhz=2300, guest_port="org.example.port")
    assert argv == [
        "qemu-system-x86_64",
        "-name", "mxvm-a1",
        "-M", "microvm,acpi=on,pcie=on", "-accel", "kvm", "-cpu", "host",
        "-smp", "2", "-m", "256M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", "/img/vmlinuz",
        "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
        *control("org.example.port"),
        "-device", "vfio-pci,host=0000:3b:00.0",
        "-device", "vfio-pci,host=0000:3b:00.1",
        *TAIL,
    ]  # fmt: skip


def test_commas_in_paths_are_escaped_in_option_lists_only() -> None:
    s = spec(run_dir=Path("/run/a,b"), root_disk=Path("/img/d,1.img"))
    argv = build_argv(s, accel="tcg", host_mhz=1000)
    assert "file,id=console,path=/run/a,,b/console.log,append=on" in argv
    assert "unix:/run/a,,b/qmp.sock,server=on,wait=off" in argv
    assert "id=disk0,file=/img/d,,1.img,if=none,format=raw" in argv
    assert argv[-1] == "/run/a,b/vmm.pid"  # -pidfile takes a plain path


def test_kernel_cmdline_tsc_only_under_tcg() -> None:
    assert "tsc_early_khz=3000000" in kernel_cmdline(spec(), accel="tcg", host_mhz=3000)
    assert "tsc_early_khz" not in kernel_cmdline(spec(), accel="kvm", host_mhz=3000)
