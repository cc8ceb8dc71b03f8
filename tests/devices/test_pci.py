"""sysfs PCI scanning and the VFIO group viability rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxvm.devices.pci import ADDRESS_RE, iommu_enabled, scan_pci
from mxvm.devices.readiness import passthrough_blocker
from tests.devices.fake_sysfs import FakePci, MakeKernel, bridge, gpu, gpu_audio

GPU = "0000:65:00.0"
AUDIO = "0000:65:00.1"


def test_scan_reads_every_attribute(make_kernel: MakeKernel) -> None:
    kernel = make_kernel(
        [
            gpu(GPU, 12),
            gpu_audio(AUDIO, 12),
            FakePci("0000:00:1f.3", vendor="0x8086", klass="0x040300", driver=None, numa=-1),
        ]
    )
    scan = scan_pci(kernel.root)

    assert scan.iommu_enabled
    assert sorted(scan.functions) == ["0000:00:1f.3", GPU, AUDIO]
    g = scan.functions[GPU]
    assert (g.vendor_id, g.device_id, g.class_code) == ("0x10de", "0x2330", "0x030200")
    assert (g.driver, g.driver_override, g.numa_node, g.iommu_group) == ("nvidia", None, 0, 12)
    assert g.group_members == (GPU, AUDIO)
    assert (g.vendor_name, g.vendor_slug, g.class_name) == ("NVIDIA", "nvidia", "3D controller")
    assert g.is_display and g.is_endpoint and not g.is_bridge
    assert g.slot == "0000:65:00"
    unbound = scan.functions["0000:00:1f.3"]
    assert (unbound.driver, unbound.numa_node, unbound.iommu_group) == (None, None, None)
    assert unbound.group_members == ()
    assert unbound.vendor_name == "Intel"
    assert scan.functions[AUDIO].class_name == "Audio device"


def test_bridge_is_not_an_endpoint(make_kernel: MakeKernel) -> None:
    kernel = make_kernel([bridge("0000:00:01.0", 1)])
    function = scan_pci(kernel.root).functions["0000:00:01.0"]
    assert function.is_bridge and not function.is_endpoint
    assert function.class_name == "PCI bridge"


def test_iommu_detection(make_kernel: MakeKernel) -> None:
    off = make_kernel([gpu(GPU, 12)], iommu=False)
    assert not iommu_enabled(off.root)
    # Groups alone (no registered IOMMU unit) also mean an IOMMU is active.
    on = make_kernel([gpu(GPU, 12)])
    (on.root / "class" / "iommu" / "dmar0").rmdir()
    assert iommu_enabled(on.root)
    assert not iommu_enabled(on.root / "nonexistent")


def test_scan_of_missing_tree_is_empty(tmp_path: Path) -> None:
    scan = scan_pci(tmp_path)
    assert scan.functions == {} and not scan.iommu_enabled


def test_scan_of_this_hosts_sysfs() -> None:
    if not Path("/sys/bus/pci/devices").is_dir():
        pytest.skip("this host has no /sys/bus/pci")
    scan = scan_pci(Path("/sys"))
    assert scan.functions, "a host with /sys/bus/pci lists at least one function"
    for address, function in scan.functions.items():
        assert ADDRESS_RE.match(address)
        assert function.class_code.startswith("0x") and len(function.class_code) == 8
        if scan.iommu_enabled and function.iommu_group is not None:
            assert address in function.group_members


# ---- viability ------------------------------------------------------------------------


def test_gpu_with_its_audio_function_is_ready(make_kernel: MakeKernel) -> None:
    scan = scan_pci(make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12)]).root)
    assert passthrough_blocker(scan, GPU) is None
    assert passthrough_blocker(scan, AUDIO) is None


def test_iommu_off_is_not_ready(make_kernel: MakeKernel) -> None:
    scan = scan_pci(make_kernel([gpu(GPU, 12)], iommu=False).root)
    assert passthrough_blocker(scan, GPU) == "iommu disabled"


def test_device_without_group_is_not_ready(make_kernel: MakeKernel) -> None:
    scan = scan_pci(make_kernel([gpu(GPU, 12), gpu("0000:66:00.0", None)]).root)
    assert passthrough_blocker(scan, "0000:66:00.0") == "no iommu group"


def test_group_shared_with_a_busy_device_elsewhere(make_kernel: MakeKernel) -> None:
    busy = FakePci(
        "0000:00:1f.3", vendor="0x8086", klass="0x040300", driver="snd_hda_intel", group=12
    )
    scan = scan_pci(make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12), busy]).root)
    reason = "group 12 shared with 0000:00:1f.3 (in use by snd_hda_intel)"
    assert passthrough_blocker(scan, GPU) == reason


def test_every_busy_member_is_named(make_kernel: MakeKernel) -> None:
    scan = scan_pci(
        make_kernel(
            [
                gpu(GPU, 3),
                gpu("0000:66:00.0", 3),
                FakePci(
                    "0000:00:1f.4", vendor="0x8086", klass="0x0c0500", driver="i801_smbus", group=3
                ),
            ]
        ).root
    )
    assert passthrough_blocker(scan, GPU) == (
        "group 3 shared with 0000:00:1f.4 (in use by i801_smbus), 0000:66:00.0 (in use by nvidia)"
    )


@pytest.mark.parametrize("driver", [None, "vfio-pci", "pci-stub"])
def test_group_shared_with_free_or_held_devices_is_viable(
    make_kernel: MakeKernel, driver: str | None
) -> None:
    scan = scan_pci(make_kernel([gpu(GPU, 12), gpu("0000:66:00.0", 12, driver=driver)]).root)
    assert passthrough_blocker(scan, GPU) is None


def test_bridge_in_the_group_is_ignored(make_kernel: MakeKernel) -> None:
    scan = scan_pci(make_kernel([bridge("0000:64:00.0", 12), gpu(GPU, 12)]).root)
    assert passthrough_blocker(scan, GPU) is None
    assert passthrough_blocker(scan, "0000:64:00.0") == "bridge, not a passthrough target"


def test_unknown_address(make_kernel: MakeKernel) -> None:
    scan = scan_pci(make_kernel([gpu(GPU, 12)]).root)
    assert passthrough_blocker(scan, "0000:99:00.0") == "no PCI device 0000:99:00.0"
