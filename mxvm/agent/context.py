"""What every allocation runner on a node shares."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mxvm.config import AgentSettings
from mxvm.devices.vfio import SysfsWriter, write_sysfs
from mxvm.errors import InvalidSpec
from mxvm.hypervisors.base import Driver
from mxvm.models import AllocStatusUpdate
from mxvm.net import NodeNetwork

Reporter = Callable[[str, AllocStatusUpdate], Awaitable[None]]


@dataclass
class AgentContext:
    settings: AgentSettings
    drivers: dict[str, Driver]
    report: Reporter
    image_dir: Path
    net: NodeNetwork | None = None
    subnet: str | None = None  # the node's subnet, from registration
    sysfs_writer: SysfsWriter = write_sysfs  # VFIO binding's kernel writes; tests fake them
    device_holders: dict[str, str] = field(default_factory=dict)  # PCI address -> alloc id

    @property
    def gateway(self) -> str | None:
        """The bridge's address: the first host of the node's subnet."""
        if self.subnet is None:
            return None
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen if self.subnet else 32

    def driver(self, name: str) -> Driver:
        d = self.drivers.get(name)
        if d is None:
            raise InvalidSpec(
                f"driver {name!r} is not enabled on this node: {sorted(self.drivers)}"
            )
        return d
