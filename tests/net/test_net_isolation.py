"""VM-to-VM isolation for real: two 'VM' namespaces on isolated bridge ports, pinging.

Each VM namespace is joined to the node namespace's bridge by a veth pair whose node end
is attached with the same code path as a tap (NodeNetwork.attach_port).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mxvm.net import NodeNetwork

from .netns_tools import in_netns, ip, require_binary

pytestmark = pytest.mark.privileged
GATEWAY = "10.99.0.1"


def _plug_vm(node_ns: str, vm_ns: str, port: str, address: str) -> None:
    ip(node_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", vm_ns)
    ip(vm_ns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip(vm_ns, "link", "set", "eth0", "up")
    ip(vm_ns, "link", "set", "lo", "up")


def _pings(ns: str, target: str, *, tries: int = 1) -> bool:
    """One ICMP echo with a 1 s deadline, retried (a first ping may race the ARP reply)."""
    return any(
        in_netns(ns, "ping", "-n", "-q", "-c1", "-W1", target).returncode == 0 for _ in range(tries)
    )


@pytest.fixture
async def two_vms(
    net: NodeNetwork, netns: str, make_netns: Callable[[str], str]
) -> tuple[str, str]:
    require_binary("ping", "iputils-ping")
    await net.ensure_bridge(f"{GATEWAY}/24")
    vm1, vm2 = make_netns("vm1"), make_netns("vm2")
    _plug_vm(netns, vm1, "vethvm1", "10.99.0.11")
    _plug_vm(netns, vm2, "vethvm2", "10.99.0.12")
    return vm1, vm2


async def test_isolated_vms_reach_gateway_not_each_other(
    net: NodeNetwork, netns: str, two_vms: tuple[str, str]
) -> None:
    vm1, vm2 = two_vms
    await net.attach_port("vethvm1", isolated=True)
    await net.attach_port("vethvm2", isolated=True)

    assert _pings(vm1, GATEWAY, tries=3)
    assert _pings(vm2, GATEWAY, tries=3)
    assert _pings(netns, "10.99.0.11", tries=3)
    assert not _pings(vm1, "10.99.0.12")
    assert not _pings(vm2, "10.99.0.11")


async def test_non_isolated_vms_do_reach_each_other(
    net: NodeNetwork, two_vms: tuple[str, str]
) -> None:
    """The control experiment: the same set-up without the flag lets traffic through."""
    vm1, _ = two_vms
    await net.attach_port("vethvm1", isolated=False)
    await net.attach_port("vethvm2", isolated=False)
    assert _pings(vm1, "10.99.0.12", tries=3)
    # Flipping the flag back on an attached port cuts them apart again.
    await net.attach_port("vethvm1", isolated=True)
    await net.attach_port("vethvm2", isolated=True)
    in_netns(vm1, "ip", "neigh", "flush", "all")
    assert not _pings(vm1, "10.99.0.12")
    assert _pings(vm1, GATEWAY, tries=3)
