"""The node bridge: create it, give it the gateway address, and attach isolated ports."""

from __future__ import annotations

import ipaddress
import logging

from mxvm.net.errors import NetworkError
from mxvm.net.linkmsg import Link, LinkChange
from mxvm.net.names import bridge_mac, validate_ifname
from mxvm.net.rtnl import Address, Rtnl, family_of

log = logging.getLogger(__name__)


def parse_gateway(gateway_cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """'10.87.3.1/24' -> interface; refuses the subnet's network or broadcast address."""
    try:
        iface = ipaddress.ip_interface(gateway_cidr)
    except ValueError as exc:
        raise NetworkError(f"gateway {gateway_cidr!r} is not an address/prefix: {exc}") from exc
    net = iface.network
    if net.num_addresses > 2 and iface.ip in {net.network_address, net.broadcast_address}:
        raise NetworkError(f"gateway {gateway_cidr!r} is not a host address of {net}")
    return iface


async def get_bridge(rtnl: Rtnl, bridge: str) -> Link | None:
    link = await rtnl.get_link(bridge)
    if link is not None and link.kind != "bridge":
        raise NetworkError(
            f"interface {bridge} exists but is a {link.kind or 'plain'} link, not a bridge",
            ifname=bridge,
        )
    return link


async def require_bridge(rtnl: Rtnl, bridge: str) -> Link:
    link = await get_bridge(rtnl, bridge)
    if link is None:
        raise NetworkError(
            f"bridge {bridge} does not exist (call ensure_bridge first)", ifname=bridge
        )
    return link


async def ensure_bridge(rtnl: Rtnl, bridge: str, gateway_cidr: str) -> Link:
    """Idempotent: the bridge exists, is up and carries exactly this gateway address."""
    validate_ifname(bridge)
    want = parse_gateway(gateway_cidr)
    link = await get_bridge(rtnl, bridge)
    if link is None:
        await rtnl.add_bridge(bridge, bridge_mac(bridge))
        link = await require_bridge(rtnl, bridge)
        log.info("net.bridge_created bridge=%s", bridge, extra={"bridge": bridge})
    await _ensure_address(rtnl, link, want)
    if not link.up:
        await rtnl.change_link(bridge, LinkChange(up=True))
    return link


async def _ensure_address(
    rtnl: Rtnl, link: Link, want: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> None:
    present = False
    for addr in await rtnl.addresses(link.name, link.index, family_of(want)):
        have = addr.interface
        if have == want:
            present = True
        elif not have.ip.is_link_local:
            # A stale gateway (the node got a new subnet) would route guests wrongly.
            await rtnl.del_address(link.name, link.index, addr)
            log.info("net.bridge_address_removed bridge=%s address=%s", link.name, have)
    if not present:
        await rtnl.add_address(link.name, link.index, Address(str(want.ip), want.network.prefixlen))


async def attach_port(
    rtnl: Rtnl,
    bridge: Link,
    port: str,
    *,
    isolated: bool,
    address: str | None = None,
    current: Link | None = None,
) -> None:
    """Enslave port to bridge, set IFLA_BRPORT_ISOLATED, bring it up (taps and veths alike).

    Isolated ports cannot talk to each other through the bridge, only to non-isolated
    ports and the bridge itself (the gateway), which is what keeps VMs apart. `current`
    is the port's known state, to skip what is already right; None means a fresh port.
    """
    if current is None or current.master != bridge.index:
        # The flag belongs to the bridge port, which exists only once attached; a fresh
        # port is brought up only after it is isolated.
        await rtnl.change_link(port, LinkChange(master=bridge.index, address=address))
        await rtnl.change_link(port, LinkChange(up=True, isolated=isolated))
        return
    final = LinkChange(
        address=address if address is not None and current.address != address else None,
        up=None if current.up else True,
        isolated=None if current.isolated == isolated else isolated,
    )
    if final:
        await rtnl.change_link(port, final)
