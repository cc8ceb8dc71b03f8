"""Driver names to driver factories.

Built-in drivers are imported lazily, so an agent without QEMU installed (or the scheduler
importing a name list) pays nothing. Further backends add an entry to `_BUILTIN` or call
`register()` at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mxvm.errors import NotFound
from mxvm.hypervisors.base import Driver

DriverFactory = Callable[..., Driver]

# name -> "module:attribute" of a factory (usually the driver class)
_BUILTIN: dict[str, str] = {
    "qemu": "mxvm.hypervisors.qemu.driver:QemuDriver",
    "cloud-hypervisor": "mxvm.hypervisors.cloud_hypervisor.driver:CloudHypervisorDriver",
    "fake": "mxvm.hypervisors.fake:FakeDriver",
    "libvirt": "mxvm.hypervisors.libvirt.driver:LibvirtDriver",
}
_registered: dict[str, DriverFactory] = {}


def register(name: str, factory: DriverFactory) -> None:
    """Make `get_driver(name)` build drivers with `factory(**config)`."""
    _registered[name] = factory


def known_drivers() -> list[str]:
    return sorted(set(_BUILTIN) | set(_registered))


def _factory(name: str) -> DriverFactory:
    if name in _registered:
        return _registered[name]
    target = _BUILTIN.get(name)
    if target is None:
        raise NotFound(f"unknown hypervisor driver {name!r}; known: {known_drivers()}")
    module_name, _, attr = target.partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def get_driver(name: str, **config: Any) -> Driver:
    """Build the driver called `name` with its driver-specific `config` keywords."""
    return _factory(name)(**config)
