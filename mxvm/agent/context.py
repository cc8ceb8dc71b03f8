"""What every allocation runner on a node shares."""

from __future__ import annotations

import functools
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


@functools.cache
def _gateway_and_prefix(subnet: str) -> tuple[str, int]:
    """Parsed once per subnet: every VM start asks."""
    net = ipaddress.ip_network(subnet)
    return str(next(net.hosts())), net.prefixlen


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
        return None if self.subnet is None else _gateway_and_prefix(self.subnet)[0]

    @property
    def prefixlen(self) -> int:
        return 32 if self.subnet is None else _gateway_and_prefix(self.subnet)[1]

    def driver(self, name: str) -> Driver:
        d = self.drivers.get(name)
        if d is None:
            raise InvalidSpec(
                f"driver {name!r} is not enabled on this node: {sorted(self.drivers)}"
            )
        return d
