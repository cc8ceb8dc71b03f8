"""Golden tests: the cloud-hypervisor argv and the exact vm.create bodies for VmSpecs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mxvm.hypervisors import VmSpec
from mxvm.hypervisors.cloud_hypervisor.argv import build_argv, build_vm_config, kernel_cmdline
from mxvm.hypervisors.cloud_hypervisor.models import VmConfig, VmInfo

RUN = Path("/run/mxvm/a1")
KERNEL = Path("/img/vmlinuz")
INITRD = Path("/img/initrd.img")
MIB = 1024 * 1024


def make(**kw: Any) -> VmSpec:
    base: dict[str, Any] = {
        "alloc_id": "a1",
        "name": "web",
        "vcpus": 1,
        "memory_mb": 128,
        "kernel": KERNEL,
        "run_dir": RUN,
    }
    return VmSpec(**{**base, **kw})


def test_argv_starts_only_the_vmm_with_its_api_socket_and_log() -> None:
    assert build_argv(make(), binary="/usr/bin/cloud-hypervisor") == [
        "/usr/bin/cloud-hypervisor",
        "--api-socket", "path=/run/mxvm/a1/ch.sock",
        "--log-file", "/run/mxvm/a1/vmm.log",
        "-v",
    ]  # fmt: skip


def test_argv_takes_an_explicit_socket() -> None:
    argv = build_argv(make(), binary="ch", api_socket=Path("/s/api.sock"))
    assert argv[:3] == ["ch", "--api-socket", "path=/s/api.sock"]


def test_minimal_config_kernel_only() -> None:
    assert build_vm_config(make()).to_json() == {
        "payload": {"kernel": "/img/vmlinuz", "cmdline": "console=hvc0 panic=0 mxvm.channel=ttyS0"},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 128 * MIB},
        "serial": {"mode": "Socket", "socket": "/run/mxvm/a1/guest.sock"},
        "console": {"mode": "File", "file": "/run/mxvm/a1/console.log"},
    }


def test_config_with_initrd_disk_and_tap() -> None:
    spec = make(
        vcpus=4,
        memory_mb=2048,
        initrd=INITRD,
        root_disk=Path("/img/root.raw"),
        kernel_args=["quiet", "mxvm.ip=10.0.0.2/24"],
        tap="mxt-a1",
        mac="52:54:00:AB:CD:EF",
    )
    assert build_vm_config(spec).to_json() == {
        "payload": {
            "kernel": "/img/vmlinuz",
            "initramfs": "/img/initrd.img",
            "cmdline": "console=hvc0 panic=0 mxvm.channel=ttyS0 quiet mxvm.ip=10.0.0.2/24",
        },
        "cpus": {"boot_vcpus": 4, "max_vcpus": 4},
        "memory": {"size": 2048 * MIB},
        "disks": [{"path": "/img/root.raw"}],
        "net": [{"tap": "mxt-a1", "mac": "52:54:00:ab:cd:ef"}],
        "serial": {"mode": "Socket", "socket": "/run/mxvm/a1/guest.sock"},
        "console": {"mode": "File", "file": "/run/mxvm/a1/console.log"},
    }


def test_tap_without_mac_lets_ch_pick_one() -> None:
    assert build_vm_config(make(tap="mxt-a1")).to_json()["net"] == [{"tap": "mxt-a1"}]


def test_vfio_devices_by_sysfs_path() -> None:
    spec = make(pci_devices=["0000:65:00.0", "0000:b3:00.1"])
    assert build_vm_config(spec).to_json()["devices"] == [
        {"path": "/sys/bus/pci/devices/0000:65:00.0", "id": "vfio0"},
        {"path": "/sys/bus/pci/devices/0000:b3:00.1", "id": "vfio1"},
    ]


def test_driver_owns_console_and_panic_words() -> None:
    # ttyS0 is the guest channel under CH: a console there would corrupt it.
    spec = make(
        kernel_args=["console=ttyS0", "earlyprintk=ttyS0", "panic=-1", "mxvm.channel=x", "ro"]
    )
    assert kernel_cmdline(spec) == "console=hvc0 panic=0 mxvm.channel=ttyS0 ro"


def test_vm_info_echo_parses_back_to_the_same_config() -> None:
    # vm.info returns the config with CH's defaults filled in; extra keys are ignored.
    config = build_vm_config(make(initrd=INITRD, tap="mxt-a1"))
    echoed = config.to_json()
    echoed["cpus"]["kvm_hyperv"] = False
    echoed["iommu"] = False
    info = VmInfo.model_validate({"config": echoed, "state": "Running"})
    assert info.config == config
    assert VmConfig.model_validate(config.to_json()) == config
