"""On a host with an NVIDIA GPU and its driver: the real inventory merges NVML into sysfs.
Skips elsewhere (this development machine and CI have no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxvm.devices import PynvmlBackend, scan_inventory

pytestmark = pytest.mark.gpu


def test_every_nvml_gpu_is_in_the_inventory_with_its_details(tmp_path: Path) -> None:
    status = PynvmlBackend().query()
    if not status.available or not status.gpus:
        pytest.skip(f"needs an NVIDIA GPU with its driver: {status.reason or 'no GPU'}")
    report = scan_inventory(Path("/sys"), nvml=PynvmlBackend(), state_dir=tmp_path)
    by_address = {d.address: d for d in report.gpus}
    for address, gpu in status.gpus.items():
        dev = by_address[address]
        assert dev.vendor == "nvidia" and dev.kind == "gpu"
        assert dev.model == gpu.name and dev.model_source == "nvml"
        assert dev.uuid == gpu.uuid and dev.memory_mb > 0
        # Readiness is always decided, with a reason when it is not ready.
        assert dev.passthrough_ready or dev.passthrough_reason
    devices = {d.id: d for d in report.to_devices()}
    assert set(status.gpus) <= set(devices)
