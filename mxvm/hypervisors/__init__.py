"""Hypervisor drivers behind one protocol: `get_driver(name, **config) -> Driver`."""

from mxvm.hypervisors.base import (
    Capabilities,
    Driver,
    DriverError,
    ImageError,
    VmHandle,
    VmSpec,
    VmState,
    VmStatus,
)
from mxvm.hypervisors.registry import get_driver, known_drivers, register

__all__ = [
    "Capabilities",
    "Driver",
    "DriverError",
    "ImageError",
    "VmHandle",
    "VmSpec",
    "VmState",
    "VmStatus",
    "get_driver",
    "known_drivers",
    "register",
]
