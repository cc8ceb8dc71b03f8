"""Node-side networking: bridge, per-allocation taps, VM isolation, optional NAT.

The only package that imports pyroute2. IPAM lives with the coordinator; this side is
handed the gateway CIDR of the node's subnet.
"""

from mxvm.net.errors import NetworkError
from mxvm.net.names import DEFAULT_BRIDGE, mac_address, tap_name, validate_ifname
from mxvm.net.node import NodeNetwork
from mxvm.net.tap import TapInfo

__all__ = [
    "DEFAULT_BRIDGE",
    "NetworkError",
    "NodeNetwork",
    "TapInfo",
    "mac_address",
    "tap_name",
    "validate_ifname",
]
