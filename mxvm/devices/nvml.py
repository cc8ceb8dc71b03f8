"""NVIDIA GPUs as NVML sees them. The only module that imports pynvml (nvidia-ml-py).

`NvmlBackend` is the seam: `PynvmlBackend` talks to the real library, tests pass a fake.
Every `pynvml.NVMLError` is caught here: a host without the driver or the library gets a
clean "no NVML: <reason>" status, never an exception.

Health is a point-in-time check that needs no event loop: a GPU is unhealthy when NVML
cannot query it (e.g. "GPU is lost", XID 79), when its memory needs a reset before it can
be trusted (row remapping pending or failed on Ampere and newer, page retirement pending on
older GPUs). Thermal or power throttling is a performance matter and does not count.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class NvmlGpu(BaseModel):
    """One GPU NVML can see, keyed elsewhere by its sysfs-form PCI address."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pci_address: str = Field(description="sysfs form, e.g. 0000:65:00.0")
    index: int
    name: str = ""
    uuid: str = ""
    memory_mb: int = 0
    mig_enabled: bool = False
    healthy: bool = True
    health_reason: str = ""


class NvmlStatus(BaseModel):
    """What one NVML query found: GPUs by PCI address, or why there is no NVML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    available: bool
    reason: str = ""
    driver_version: str | None = None
    gpus: dict[str, NvmlGpu] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list, description="GPUs NVML failed to address")

    @classmethod
    def unavailable(cls, reason: str) -> NvmlStatus:
        return cls(available=False, reason=reason)

    @property
    def summary(self) -> str:
        if not self.available:
            return f"no NVML: {self.reason}"
        return f"NVML driver {self.driver_version or '?'}, {len(self.gpus)} GPU(s)"


class NvmlBackend(Protocol):
    """Anything that can report the GPUs NVML sees. Must not raise."""

    def query(self) -> NvmlStatus: ...


def normalise_bus_id(bus_id: str | bytes) -> str:
    """NVML's "00000000:65:00.0" (8-digit domain, upper case) -> sysfs "0000:65:00.0"."""
    text = bus_id.decode() if isinstance(bus_id, bytes) else bus_id
    domain, bus, rest = text.strip().lower().split(":")
    device, function = rest.split(".")
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{int(function, 16)}"


class PynvmlBackend:
    """The real NVML, through pynvml. Blocking: call from a worker thread in async code."""

    def query(self) -> NvmlStatus:
        # pynvml is imported where it is used, not with this module: it is 2 MiB of ctypes
        # bindings that a host agent without an NVIDIA driver would otherwise keep for nothing.
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return NvmlStatus.unavailable(_text(exc))
        try:
            return self._query_initialised()
        except pynvml.NVMLError as exc:
            return NvmlStatus.unavailable(_text(exc))
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.warning("nvml.shutdown_failed %s", _text(exc))

    def _query_initialised(self) -> NvmlStatus:
        import pynvml

        driver = str(_decoded(pynvml.nvmlSystemGetDriverVersion()))
        gpus: dict[str, NvmlGpu] = {}
        errors: list[str] = []
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                address = normalise_bus_id(_decoded(pynvml.nvmlDeviceGetPciInfo(handle).busId))
            except pynvml.NVMLError as exc:
                errors.append(f"gpu {index}: {_text(exc)}")
                continue
            gpus[address] = _gpu(index, address, handle)
        return NvmlStatus(available=True, driver_version=driver, gpus=gpus, errors=errors)


def _gpu(index: int, address: str, handle: Any) -> NvmlGpu:
    """Details of one GPU; a failed query marks it unhealthy instead of hiding it."""
    import pynvml

    try:
        name = str(_decoded(pynvml.nvmlDeviceGetName(handle)))
        uuid = str(_decoded(pynvml.nvmlDeviceGetUUID(handle)))
        memory_mb = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB
        mig = _mig_enabled(handle)
        problem = _memory_health(handle)
    except pynvml.NVMLError as exc:
        log.warning("nvml.gpu_query_failed %s: %s", address, _text(exc))
        return NvmlGpu(
            pci_address=address, index=index, healthy=False, health_reason=f"nvml: {_text(exc)}"
        )
    return NvmlGpu(
        pci_address=address,
        index=index,
        name=name,
        uuid=uuid,
        memory_mb=memory_mb,
        mig_enabled=mig,
        healthy=problem is None,
        health_reason=problem or "",
    )


def _mig_enabled(handle: Any) -> bool:
    import pynvml

    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return False
    return bool(int(current) == int(pynvml.NVML_DEVICE_MIG_ENABLE))


def _memory_health(handle: Any) -> str | None:
    """A memory problem that needs a GPU reset or service, or None."""
    import pynvml

    # answers that mean "this GPU or this user cannot tell", not "this GPU is broken"
    unknowable = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission)
    try:
        _corr, _unc, pending, failure = pynvml.nvmlDeviceGetRemappedRows(handle)
    except unknowable:
        pass  # before Ampere: fall back to page retirement
    else:
        if failure:
            return "row remapping failed"
        return "row remapping pending (GPU reset needed)" if pending else None
    try:
        pending = pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)
    except unknowable:
        return None
    if int(pending) == pynvml.NVML_FEATURE_ENABLED:
        return "retired pages pending (GPU reset needed)"
    return None


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
