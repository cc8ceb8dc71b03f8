"""Redis leases: leader election with epochs, node heartbeats, allocation leases.

The only module that imports redis; every key it uses is listed in mxvm.leases.keys.
"""

from mxvm.leases import keys
from mxvm.leases.client import Leadership, Leases

__all__ = ["Leadership", "Leases", "keys"]
