"""A small typed wrapper over pyroute2's AsyncIPRoute: the only place pyroute2 is called.

Every netlink failure leaves this module as a NetworkError naming the interface.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkDecodeError, NetlinkError

from mxvm.net.errors import NetworkError

_IFF_UP = 0x1


@dataclass(frozen=True)
class Link:
    """What mxvm needs to know about one interface."""

    index: int
    name: str
    kind: str | None
    master: int | None
    up: bool
    address: str | None
    isolated: bool | None  # None when the link is not a bridge port
    carrier: bool = False  # for a tap: some process (the hypervisor) has it open
    multi_queue: bool = False  # for a tap: created with IFF_MULTI_QUEUE


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
    except (OSError, TimeoutError, ValueError, NetlinkDecodeError) as exc:
        raise NetworkError(f"{subject}: {exc}", ifname=ifname) from exc


def _to_link(msg: Any) -> Link:
    slave = msg.get(("linkinfo", "slave_kind"))
    isolated: bool | None = None
    if slave == "bridge":
        isolated = bool(msg.get(("linkinfo", "slave_data", "isolated")))
    master = msg.get("master")
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=msg.get(("linkinfo", "kind")),
        master=int(master) if master else None,
        up=bool(int(msg["flags"]) & _IFF_UP),
        address=msg.get("address"),
        isolated=isolated,
        carrier=bool(msg.get("carrier")),
        multi_queue=bool(msg.get(("linkinfo", "data", "IFLA_TUN_MULTI_QUEUE"))),
    )


class Rtnl:
    """One rtnetlink socket, opened lazily inside the running event loop."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ipr: Any = None
        # The kernel runs one dump per socket at a time (EBUSY otherwise).
        self._dump_lock = asyncio.Lock()

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
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def get_link(self, name: str) -> Link | None:
        ipr = await self._sock()
        with translated("look up", name):
            try:
                msgs = await ipr.link("get", ifname=name)
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return None
                raise
        return _to_link(msgs[0])

    async def links(self) -> list[Link]:
        ipr = await self._sock()
        async with self._dump_lock:
            with translated("list interfaces in namespace", self.netns):
                return [_to_link(m) async for m in await ipr.link("dump")]

    async def add_bridge(self, name: str, address: str) -> None:
        ipr = await self._sock()
        with translated("create bridge", name):
            await ipr.link("add", ifname=name, kind="bridge", address=address)

    async def set_link(self, name: str, **attrs: Any) -> None:
        """RTM_NEWLINK on an existing link, by name: master=, state=, address=, ..."""
        ipr = await self._sock()
        with translated("configure", name):
            await ipr.link("set", ifname=name, **attrs)

    async def rename_link(self, name: str, new_name: str, *, index: int, **attrs: Any) -> None:
        """Rename a link (down, or being brought down by `attrs`) and apply `attrs` in the
        same request: the kernel renames first and changes the up/down state last."""
        ipr = await self._sock()
        with translated(f"rename to {new_name}", name):
            await ipr.link("set", index=index, ifname=new_name, **attrs)

    async def set_isolated(self, name: str, isolated: bool) -> None:
        ipr = await self._sock()
        with translated("set bridge port flag isolated on", name):
            await ipr.brport("set", ifname=name, isolated=int(isolated))

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
