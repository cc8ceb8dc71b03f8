"""VM-to-VM isolation for real: two 'VM' namespaces on isolated bridge ports, pinging.

Each VM namespace is joined to the node namespace's bridge by a veth pair whose node end
is attached with the same code path as a tap (NodeNetwork.attach_port).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mxvm.net import NodeNetwork

from .netns_tools import in_netns, pings, plug_vm, require_binary

pytestmark = pytest.mark.privileged
GATEWAY = "10.99.0.1"


@pytest.fixture
async def two_vms(
    net: NodeNetwork, netns: str, make_netns: Callable[[str], str]
) -> tuple[str, str]:
    require_binary("ping", "iputils-ping")
    await net.ensure_bridge(f"{GATEWAY}/24")
    vm1, vm2 = make_netns("vm1"), make_netns("vm2")
    plug_vm(netns, vm1, "vethvm1", "10.99.0.11")
    plug_vm(netns, vm2, "vethvm2", "10.99.0.12")
    return vm1, vm2


async def test_isolated_vms_reach_gateway_not_each_other(
    net: NodeNetwork, netns: str, two_vms: tuple[str, str]
) -> None:
    vm1, vm2 = two_vms
    await net.attach_port("vethvm1", isolated=True)
    await net.attach_port("vethvm2", isolated=True)

    assert pings(vm1, GATEWAY, tries=3)
    assert pings(vm2, GATEWAY, tries=3)
    assert pings(netns, "10.99.0.11", tries=3)
    assert not pings(vm1, "10.99.0.12")
    assert not pings(vm2, "10.99.0.11")


async def test_non_isolated_vms_do_reach_each_other(
    net: NodeNetwork, two_vms: tuple[str, str]
) -> None:
    """The control experiment: the same set-up without the flag lets traffic through."""
    vm1, _ = two_vms
    await net.attach_port("vethvm1", isolated=False)
    await net.attach_port("vethvm2", isolated=False)
    assert pings(vm1, "10.99.0.12", tries=3)
    # Flipping the flag back on an attached port cuts them apart again.
    await net.attach_port("vethvm1", isolated=True)
    await net.attach_port("vethvm2", isolated=True)
    in_netns(vm1, "ip", "neigh", "flush", "all")
    assert not pings(vm1, "10.99.0.12")
    assert pings(vm1, GATEWAY, tries=3)
