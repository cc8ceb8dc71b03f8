"""A small typed wrapper over rtnetlink: the module the rest of mxvm.net calls.

Link lookups and changes (the tap life cycle) go as single raw messages through
RouteSocket; the rest (creating the bridge, deleting links, addresses) through pyroute2's
AsyncIPRoute. Every netlink failure leaves this module as a NetworkError naming the
interface.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkDecodeError, NetlinkError

from mxvm.net.errors import NetworkError
from mxvm.net.linkmsg import (
    Link,
    LinkChange,
    change_link_request,
    decode_link,
    get_link_request,
)
from mxvm.net.rtsock import RouteSocket


@dataclass(frozen=True)
class Address:
    address: str
    prefixlen: int

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(f"{self.address}/{self.prefixlen}")


@contextmanager
def translated(action: str, ifname: str | None) -> Iterator[None]:
    """Turn pyroute2/OS errors into NetworkError('<action> <ifname>: <reason>')."""
    subject = f"{action} {ifname}" if ifname else action
    try:
        yield
    except NetworkError:
        raise
    except NetlinkError as exc:
        reason = exc.args[1] if len(exc.args) > 1 else str(exc)
        raise NetworkError(
            f"{subject}: {reason} (netlink error {exc.code})", ifname=ifname, code=exc.code
        ) from exc
    except (OSError, TimeoutError, ValueError, struct.error, NetlinkDecodeError) as exc:
        raise NetworkError(f"{subject}: {exc}", ifname=ifname) from exc


class Rtnl:
    """rtnetlink in one namespace: a raw socket for links, pyroute2 for the rest."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ipr: Any = None
        self._route = RouteSocket(netns)

    async def _sock(self) -> Any:
        if self._ipr is None:
            with translated("open netlink socket in namespace", self.netns):
                # flags=0: never create the namespace as a side effect of opening it.
                ipr = AsyncIPRoute(netns=self.netns, flags=0) if self.netns else AsyncIPRoute()
                # Open now, so a missing namespace fails here and not inside some request.
                await ipr.setup_endpoint()
                self._ipr = ipr
        return self._ipr

    def close(self) -> None:
        self._route.close()
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def get_link(self, name: str) -> Link | None:
        with translated("look up", name):
            try:
                replies = await self._route.request(partial(get_link_request, name=name))
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return None
                raise
            return decode_link(replies[0].payload) if replies else None

    async def links(self) -> list[Link]:
        with translated("list interfaces in namespace", self.netns):
            return [decode_link(r.payload) for r in await self._route.request(get_link_request)]

    async def change_link(self, name: str, *changes: LinkChange, index: int = 0) -> None:
        """RTM_NEWLINK on existing link `name` (addressed by index when given, which a rename
        needs), one request per change, all sent in one write and applied in order. See
        LinkChange for the order in which the kernel applies the parts of one."""
        renames = [c.name for c in changes if c.name is not None]
        action = f"rename to {renames[-1]}" if renames else "configure"
        builds = [partial(change_link_request, change=c, name=name, index=index) for c in changes]
        with translated(action, name):
            await self._route.request(*builds)

    async def add_bridge(self, name: str, address: str) -> None:
        ipr = await self._sock()
        with translated("create bridge", name):
            await ipr.link("add", ifname=name, kind="bridge", address=address)

    async def delete_link(self, name: str) -> bool:
        """Delete by name; False when it was already gone."""
        ipr = await self._sock()
        with translated("delete", name):
            try:
                await ipr.link("del", ifname=name)
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return False
                raise
        return True

    async def addresses(self, name: str, index: int, family: int) -> list[Address]:
        ipr = await self._sock()
        with translated("list addresses of", name):
            msgs = [m async for m in await ipr.addr("dump", family=family, index=index)]
        return [
            Address(str(m.get("address")), int(m["prefixlen"])) for m in msgs if m["index"] == index
        ]

    async def add_address(self, name: str, index: int, addr: Address) -> None:
        ipr = await self._sock()
        with translated(f"add address {addr.address}/{addr.prefixlen} to", name):
            await ipr.addr("add", index=index, address=addr.address, prefixlen=addr.prefixlen)

    async def del_address(self, name: str, index: int, addr: Address) -> None:
        ipr = await self._sock()
        with translated(f"remove address {addr.address}/{addr.prefixlen} from", name):
            await ipr.addr("del", index=index, address=addr.address, prefixlen=addr.prefixlen)


def family_of(iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> int:
    return socket.AF_INET if iface.version == 4 else socket.AF_INET6
