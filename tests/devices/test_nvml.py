"""The pynvml wrapper: errors become statuses, bus ids become sysfs addresses.

`PynvmlBackend` is exercised against pynvml's own functions replaced one by one (the C
library is the seam; this host has no NVIDIA driver), and once against whatever this host
really has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from mxvm.devices.nvml import NvmlStatus, PynvmlBackend, normalise_bus_id
from tests.fresh_python import fresh_python

GIB = 1024**3


@pytest.mark.parametrize(
    ("bus_id", "address"),
    [
        ("00000000:65:00.0", "0000:65:00.0"),
        (b"00000000:B3:00.1", "0000:b3:00.1"),
        ("0001:0A:1F.7", "0001:0a:1f.7"),
        ("0000:65:00.0", "0000:65:00.0"),
    ],
)
def test_normalise_bus_id(bus_id: str | bytes, address: str) -> None:
    assert normalise_bus_id(bus_id) == address


@dataclass
class FakeGpu:
    bus_id: bytes
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    memory: int = 80 * GIB
    mig: int | None = None  # None: NotSupported
    remapped: tuple[int, int, int, int] | None = (0, 0, 0, 0)  # None: NotSupported
    retired_pending: int = 0
    broken: dict[str, int] = field(default_factory=dict)  # nvml function -> error code


class FakeLibrary:
    """pynvml's functions for a list of fake GPUs, installed with monkeypatch."""

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.shutdowns = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "nvmlInit",
            "nvmlShutdown",
            "nvmlSystemGetDriverVersion",
            "nvmlDeviceGetCount",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetPciInfo",
            "nvmlDeviceGetName",
            "nvmlDeviceGetUUID",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetMigMode",
            "nvmlDeviceGetRemappedRows",
            "nvmlDeviceGetRetiredPagesPendingStatus",
        ):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def _call(self, gpu: FakeGpu, name: str) -> None:
        if name in gpu.broken:
            raise pynvml.NVMLError(gpu.broken[name])

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._call(self.gpus[index], "handle")
        return self.gpus[index]

    def nvmlDeviceGetPciInfo(self, gpu: FakeGpu) -> Any:
        return SimpleNamespace(busId=gpu.bus_id)

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        self._call(gpu, "name")
        return gpu.name

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> Any:
        return SimpleNamespace(total=gpu.memory, used=0, free=gpu.memory)

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        if gpu.mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [gpu.mig, gpu.mig]

    def nvmlDeviceGetRemappedRows(self, gpu: FakeGpu) -> tuple[int, int, int, int]:
        if gpu.remapped is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.remapped

    def nvmlDeviceGetRetiredPagesPendingStatus(self, gpu: FakeGpu) -> int:
        return gpu.retired_pending


def test_library_missing_is_a_status(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeLibrary([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND).install(monkeypatch)
    status = PynvmlBackend().query()
    assert not status.available
    assert status.summary == "no NVML: NVML Shared Library Not Found"
    assert status.gpus == {}


def test_driver_not_loaded_is_a_status(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeLibrary([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED).install(monkeypatch)
    assert PynvmlBackend().query().summary == "no NVML: Driver Not Loaded"


def test_gpus_keyed_by_sysfs_address(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeLibrary(
        [
            FakeGpu(b"00000000:65:00.0", mig=1),
            FakeGpu(
                b"00000000:B3:00.0",
                name="Tesla V100-SXM2-16GB",
                uuid="GPU-v100",
                memory=16 * GIB,
                remapped=None,
                retired_pending=0,
            ),
        ]
    )
    lib.install(monkeypatch)

    status = PynvmlBackend().query()

    assert status.available and status.driver_version == "550.54.15"
    assert sorted(status.gpus) == ["0000:65:00.0", "0000:b3:00.0"]
    h100, v100 = status.gpus["0000:65:00.0"], status.gpus["0000:b3:00.0"]
    assert (h100.index, h100.name, h100.memory_mb, h100.mig_enabled) == (
        0,
        "NVIDIA H100 80GB HBM3",
        80 * 1024,
        True,
    )
    assert h100.uuid == "GPU-11111111-2222-3333-4444-555555555555"
    assert (v100.name, v100.memory_mb, v100.mig_enabled) == ("Tesla V100-SXM2-16GB", 16384, False)
    assert h100.healthy and v100.healthy
    assert status.summary == "NVML driver 550.54.15, 2 GPU(s)"
    assert lib.shutdowns == 1


@pytest.mark.parametrize(
    ("gpu", "reason"),
    [
        (
            FakeGpu(b"00000000:65:00.0", remapped=(0, 1, 1, 0)),
            "row remapping pending (GPU reset needed)",
        ),
        (FakeGpu(b"00000000:65:00.0", remapped=(0, 8, 0, 1)), "row remapping failed"),
        (
            FakeGpu(b"00000000:65:00.0", remapped=None, retired_pending=1),
            "retired pages pending (GPU reset needed)",
        ),
        (
            FakeGpu(b"00000000:65:00.0", broken={"name": pynvml.NVML_ERROR_GPU_IS_LOST}),
            "nvml: GPU is lost",
        ),
    ],
)
def test_health_problems(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, reason: str) -> None:
    FakeLibrary([gpu]).install(monkeypatch)
    found = PynvmlBackend().query().gpus["0000:65:00.0"]
    assert not found.healthy
    assert found.health_reason == reason


def test_unaddressable_gpu_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = FakeGpu(b"00000000:66:00.0", broken={"handle": pynvml.NVML_ERROR_GPU_IS_LOST})
    FakeLibrary([FakeGpu(b"00000000:65:00.0"), lost]).install(monkeypatch)
    status = PynvmlBackend().query()
    assert list(status.gpus) == ["0000:65:00.0"]
    assert status.errors == ["gpu 1: GPU is lost"]


def test_this_hosts_nvml() -> None:
    """Whatever this host has, the answer is a status, never an exception."""
    status = PynvmlBackend().query()
    assert isinstance(status, NvmlStatus)
    if status.available:
        assert status.driver_version
        for address, gpu in status.gpus.items():
            assert address == gpu.pci_address == normalise_bus_id(address)
    else:
        assert status.summary.startswith("no NVML: ") and status.reason


def test_a_host_without_the_nvml_library_answers_without_loading_pynvml() -> None:
    code = (
        "import sys; from mxvm.agent.inventory import host_nvml; "
        "s = host_nvml('libnot-there.so.1').query(); "
        "print(s.available, 'pynvml' in sys.modules, s.reason)"
    )
    assert fresh_python(code) == "False False NVML Shared Library Not Found"
