"""The merged inventory: sysfs functions + a fake NVML, the node's Devices, the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mxvm.devices.inventory import InventoryReport, scan_inventory
from mxvm.devices.name_cache import CACHE_FILE
from mxvm.devices.nvml import NvmlGpu, NvmlStatus
from mxvm.models import Device
from tests.devices.fake_sysfs import FakeKernel, FakePci, MakeKernel, gpu, gpu_audio

GPU = "0000:65:00.0"
AUDIO = "0000:65:00.1"
GPU2 = "0000:b3:00.0"
H100 = NvmlGpu(
    pci_address=GPU, index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-aaaa", memory_mb=81559
)


@dataclass
class FakeNvml:
    """The NvmlBackend seam: answers whatever status the test sets."""

    status: NvmlStatus

    def query(self) -> NvmlStatus:
        return self.status


def nvml_of(*gpus: NvmlGpu) -> FakeNvml:
    return FakeNvml(
        NvmlStatus(
            available=True, driver_version="550.54.15", gpus={g.pci_address: g for g in gpus}
        )
    )


def host(make_kernel: MakeKernel, **options: object) -> FakeKernel:
    return make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12), gpu(GPU2, 40)], **options)


def test_nvml_details_merge_by_address(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = host(make_kernel)
    report = scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=state_dir)

    by_address = {d.address: d for d in report.devices}
    h100 = by_address[GPU]
    assert (h100.model, h100.model_source, h100.uuid, h100.memory_mb) == (
        "NVIDIA H100 80GB HBM3",
        "nvml",
        "GPU-aaaa",
        81559,
    )
    assert h100.passthrough_ready and h100.healthy
    assert (h100.kind, h100.vendor, h100.iommu_group, h100.driver) == (
        "gpu",
        "nvidia",
        12,
        "nvidia",
    )
    assert h100.group_members == [GPU, AUDIO]
    assert by_address[AUDIO].kind == "0x0403" and by_address[AUDIO].model == "10de:22a3"
    assert report.nvml.available and report.iommu_enabled


def test_to_devices_lists_gpus_for_registration(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = host(make_kernel)
    report = scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=state_dir)

    devices = report.to_devices()

    assert [d.id for d in devices] == [GPU, GPU2]
    assert devices[0] == Device(
        id=GPU,
        kind="gpu",
        vendor="nvidia",
        model="NVIDIA H100 80GB HBM3",
        memory_mb=81559,
        numa_node=0,
        pci_address=GPU,
        iommu_group=12,
        healthy=True,
        health_reason="",
    )
    everything = report.to_devices(all_endpoints=True)
    assert [(d.id, d.kind) for d in everything] == [(GPU, "gpu"), (AUDIO, "0x0403"), (GPU2, "gpu")]


def test_vfio_bound_gpu_keeps_its_remembered_name(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = host(make_kernel)
    scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=state_dir)
    assert (state_dir / CACHE_FILE).exists()
    # Hand the GPU to vfio-pci the way the kernel does; NVML stops seeing it.
    kernel.write(kernel.device_dir(GPU) / "driver_override", "vfio-pci")
    kernel.write(kernel.device_dir(GPU) / "driver" / "unbind", GPU)
    kernel.write(kernel.pci / "drivers_probe", GPU)

    report = scan_inventory(kernel.root, nvml=nvml_of(), state_dir=state_dir)

    h100 = next(d for d in report.devices if d.address == GPU)
    assert h100.driver == "vfio-pci"
    assert (h100.model, h100.model_source, h100.uuid, h100.memory_mb) == (
        "NVIDIA H100 80GB HBM3",
        "cache",
        "GPU-aaaa",
        81559,
    )
    assert h100.healthy and h100.passthrough_ready
    assert "NVIDIA H100 80GB HBM3 (remembered)" in report.render_table()


def test_without_a_state_dir_nothing_is_remembered(make_kernel: MakeKernel) -> None:
    kernel = host(make_kernel)
    scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=None)
    gpu_entry = next(
        d
        for d in scan_inventory(kernel.root, nvml=nvml_of(), state_dir=None).devices
        if d.address == GPU
    )
    assert gpu_entry.model == "10de:2330" and gpu_entry.model_source == "pci"


def test_corrupt_cache_is_ignored(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = host(make_kernel)
    state_dir.mkdir()
    (state_dir / CACHE_FILE).write_text("[1, 2")
    report = scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=state_dir)
    assert next(d for d in report.devices if d.address == GPU).model_source == "nvml"
    # ...and the next good scan rewrote it.
    assert "GPU-aaaa" in (state_dir / CACHE_FILE).read_text()


def test_no_nvml_still_lists_sysfs_devices(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = host(make_kernel)
    missing = FakeNvml(NvmlStatus.unavailable("NVML Shared Library Not Found"))

    report = scan_inventory(kernel.root, nvml=missing, state_dir=state_dir)

    assert report.nvml.summary == "no NVML: NVML Shared Library Not Found"
    assert [d.id for d in report.to_devices()] == [GPU, GPU2]
    assert all(d.healthy for d in report.to_devices())
    assert "NVML: no NVML: NVML Shared Library Not Found" in report.render_table()
    assert scan_inventory(kernel.root, nvml=None, state_dir=None).nvml.summary == (
        "no NVML: not queried"
    )


def test_nvml_health_failure_marks_the_device_unhealthy(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    kernel = host(make_kernel)
    sick = H100.model_copy(
        update={"healthy": False, "health_reason": "row remapping pending (GPU reset needed)"}
    )
    report = scan_inventory(kernel.root, nvml=nvml_of(sick), state_dir=state_dir)
    device = report.to_devices()[0]
    assert not device.healthy
    assert device.health_reason == "row remapping pending (GPU reset needed)"


def test_gpu_on_nvidia_that_nvml_lost_is_unhealthy(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    kernel = host(make_kernel)
    report = scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=state_dir)
    lost = next(d for d in report.to_devices() if d.id == GPU2)
    assert not lost.healthy
    assert lost.health_reason == "bound to nvidia but not visible to NVML"


def test_gpu_that_cannot_be_passed_through_is_not_schedulable(make_kernel: MakeKernel) -> None:
    kernel = host(make_kernel, iommu=False)
    report = scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=None)
    detail = next(d for d in report.devices if d.address == GPU)
    assert detail.healthy and not detail.passthrough_ready
    assert detail.passthrough_reason == "iommu disabled"
    device = report.to_devices()[0]
    assert not device.healthy and device.health_reason == "not passthrough-ready: iommu disabled"


def test_shared_group_reason_reaches_the_report(make_kernel: MakeKernel) -> None:
    busy = FakePci(
        "0000:00:1f.3", vendor="0x8086", klass="0x040300", driver="snd_hda_intel", group=12
    )
    kernel = make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12), busy])
    report = scan_inventory(kernel.root, nvml=None, state_dir=None)
    detail = next(d for d in report.devices if d.address == GPU)
    reason = "group 12 shared with 0000:00:1f.3 (in use by snd_hda_intel)"
    assert detail.passthrough_reason == reason
    assert f"no: {reason}" in report.render_table()


def test_nvml_gpu_unknown_to_sysfs_is_a_warning(make_kernel: MakeKernel) -> None:
    kernel = host(make_kernel)
    ghost = NvmlGpu(pci_address="0000:ca:00.0", index=1, name="ghost")
    report = scan_inventory(kernel.root, nvml=nvml_of(H100, ghost), state_dir=None)
    assert report.warnings == ["NVML sees 0000:ca:00.0, sysfs does not"]
    assert "0000:ca:00.0" not in [d.address for d in report.devices]


def test_table_and_json(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = host(make_kernel)
    report = scan_inventory(kernel.root, nvml=nvml_of(H100), state_dir=state_dir)

    table = report.render_table().splitlines()
    assert table[0] == "IOMMU: enabled"
    assert table[1] == "NVML: NVML driver 550.54.15, 1 GPU(s)"
    assert table[2].split() == [
        "ADDRESS",
        "KIND",
        "VENDOR",
        "MODEL",
        "MEM",
        "NUMA",
        "GROUP",
        "DRIVER",
        "HEALTH",
        "PASSTHROUGH",
    ]
    assert len(table) == 3 + 3
    assert table[3].startswith(GPU) and "81559 MiB" in table[3] and table[3].endswith("ready")

    again = InventoryReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert len(report.gpus) == 2
