"""Node-side networking: bridge, per-allocation taps, VM isolation, optional NAT.

The only package that imports pyroute2. IPAM lives with the coordinator; this side is
handed the gateway CIDR of the node's subnet.
"""

from mxvm.net import pyroute2_bare

pyroute2_bare.install()  # before any module below imports pyroute2

from mxvm.net.errors import NetworkError  # noqa: E402
from mxvm.net.names import DEFAULT_BRIDGE, mac_address, tap_name, validate_ifname  # noqa: E402
from mxvm.net.node import NodeNetwork  # noqa: E402
from mxvm.net.tap import TapInfo  # noqa: E402

__all__ = [
    "DEFAULT_BRIDGE",
    "NetworkError",
    "NodeNetwork",
    "TapInfo",
    "mac_address",
    "tap_name",
    "validate_ifname",
]
