"""Per-allocation taps: create, attach to the bridge, delete, sweep leftovers."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from mxvm.net import tuntap
from mxvm.net.bridge import attach_port
from mxvm.net.errors import NetworkError
from mxvm.net.linkmsg import Link, LinkChange
from mxvm.net.names import (
    host_tap_mac,
    is_pool_name,
    is_tap_name,
    mac_address,
    pool_name,
    resolve_tap_name,
    tap_name,
)
from mxvm.net.rtnl import Rtnl

log = logging.getLogger(__name__)
_TAP_KIND = "tun"  # what the kernel reports for tun and tap devices alike
POOL_MAX = 32  # parked idle taps kept for reuse


@dataclass(frozen=True)
class TapInfo:
    """The tap the hypervisor opens (ifname=name) and the MAC to give the guest NIC."""

    name: str
    mac: str


async def create_tap(
    rtnl: Rtnl,
    bridge: Link,
    alloc_id: str,
    *,
    isolated: bool = True,
    multi_queue: bool = False,
    pool: TapPool | None = None,
) -> TapInfo:
    """Idempotent: an existing tap of this allocation is reused and re-attached."""
    name = tap_name(alloc_id)
    info = TapInfo(name=name, mac=mac_address(alloc_id))
    mac = host_tap_mac(alloc_id)
    if (
        pool is not None
        and not multi_queue
        and await rtnl.get_link(name) is None  # a tap of its own already: re-attach below
        and await pool.take(rtnl, name, bridge, mac, isolated)
    ):
        log.info("net.tap_reused tap=%s alloc_id=%s", name, alloc_id, extra={"tap": name})
        return info
    if not tuntap.create_persistent_tap(name, namespace=rtnl.netns, multi_queue=multi_queue):
        link = await rtnl.get_link(name)
        if link is None or link.kind != _TAP_KIND:
            kind = "gone" if link is None else link.kind
            raise NetworkError(f"interface {name} exists but is not a tap ({kind})", ifname=name)
        await attach_port(rtnl, bridge, name, isolated=isolated, address=mac, current=link)
        return info
    try:
        await attach_port(rtnl, bridge, name, isolated=isolated, address=mac)
    except NetworkError:
        # Leave nothing half-made behind (a detached tap would only be swept later).
        await rtnl.delete_link(name)
        raise
    log.info("net.tap_created tap=%s alloc_id=%s", name, alloc_id, extra={"tap": name})
    return info


class TapPool:
    """Idle taps parked for reuse: renamed `mxp…`, down, and still ports of the bridge they
    were on. Renaming one back costs far less than the kernel's ~15 ms for unregistering a
    netdev and creating another, and staying on the bridge spares a detach and re-attach
    (a bridge port's removal waits for RCU). A down port forwards nothing. Known in memory;
    the namespace is read once, to pick up what an earlier agent parked."""

    def __init__(self, limit: int = POOL_MAX) -> None:
        self.limit = limit
        self._names: list[str] | None = None
        self._loading = asyncio.Lock()

    async def _load(self, rtnl: Rtnl) -> list[str]:
        async with self._loading:
            if self._names is None:
                links = await rtnl.links()
                self._names = [x.name for x in links if is_pool_name(x.name)]
        return self._names

    async def take(self, rtnl: Rtnl, name: str, bridge: Link, mac: str, isolated: bool) -> bool:
        """Give a parked tap the name `name`, on the bridge, isolated as asked and up;
        False if none is parked."""
        names = await self._load(rtnl)
        while names:
            parked = names.pop()
            # Looked up by name, not by a remembered index: other pools in this namespace
            # (another agent, a test) may have taken or removed it meanwhile.
            link = await rtnl.get_link(parked)
            if link is None or link.kind != _TAP_KIND or link.carrier or link.multi_queue:
                continue  # gone, or not an idle tap any more: not ours to reuse
            try:
                await _revive(rtnl, link, name, bridge, mac, isolated)
            except NetworkError:
                if await rtnl.get_link(parked) is None:
                    continue  # removed under us: try the next one
                names.append(parked)  # still parked (a stale bridge, most likely): keep it
                raise
            return True
        return False

    async def put(self, rtnl: Rtnl, link: Link) -> bool:
        """Park an idle tap (down, renamed, left on its bridge); False when the pool is full."""
        names = await self._load(rtnl)
        if len(names) >= self.limit:
            return False
        parked = pool_name()
        # Down first: the kernel renames before it changes up/down within one request,
        # and kernels before 6.2 refuse to rename a link that is up.
        down, rename = LinkChange(up=False), LinkChange(name=parked)
        await rtnl.change_link(link.name, down, rename, index=link.index)
        names.append(parked)
        return True


async def _revive(
    rtnl: Rtnl, link: Link, name: str, bridge: Link, mac: str, isolated: bool
) -> None:
    """Parked tap -> tap `name`: one request when it is parked on this bridge."""
    if link.master != bridge.index:
        # Parked on another bridge, or detached: the port flag is per bridge port, so
        # attach first (still down) and set it in the request that brings the tap up.
        await rtnl.change_link(link.name, LinkChange(master=bridge.index), index=link.index)
    up = LinkChange(name=name, address=mac, up=True, isolated=isolated)
    await rtnl.change_link(link.name, up, index=link.index)


async def delete_tap(
    rtnl: Rtnl, alloc_id_or_name: str, *, executor: Executor, pool: TapPool | None = None
) -> bool:
    """True if a tap was deleted, False if there was none.

    Unregistering a netdev waits for RCU in the kernel (about 15 ms measured on 6.18).
    Done by netlink that wait would hold the event loop, so an idle tap is destroyed
    through /dev/net/tun in a worker thread instead; one a hypervisor still holds (carrier
    up) goes by netlink, which can remove it from under the holder.
    """
    name = resolve_tap_name(alloc_id_or_name)
    link = await rtnl.get_link(name)
    if link is None:
        return False
    destroyed = False
    # A multi-queue tap would accept our fd as one more queue even while a hypervisor
    # holds (detached) queues of it, so only single-queue idle taps take the fast paths.
    idle = link.kind == _TAP_KIND and not link.carrier and not link.multi_queue
    if idle and pool is not None and await pool.put(rtnl, link):
        log.info("net.tap_parked tap=%s", name, extra={"tap": name})
        return True
    if idle:
        destroy = partial(tuntap.destroy_tap, name, namespace=rtnl.netns)
        destroyed = await asyncio.get_running_loop().run_in_executor(executor, destroy)
    deleted = destroyed or await rtnl.delete_link(name)
    if deleted:
        log.info("net.tap_deleted tap=%s", name, extra={"tap": name})
    return deleted


async def list_taps(rtnl: Rtnl, *, master: int | None = None) -> list[Link]:
    """mxvm's taps (by name pattern and kind), optionally only those on one bridge."""
    return [
        link
        for link in await rtnl.links()
        if is_tap_name(link.name)
        and link.kind == _TAP_KIND
        and (master is None or link.master == master)
    ]


async def delete_taps(
    rtnl: Rtnl, names: list[str], *, executor: Executor, pool: TapPool | None = None
) -> list[str]:
    """Delete several taps at once (their kernel waits overlap); return those deleted."""
    results = await asyncio.gather(
        *(delete_tap(rtnl, n, executor=executor, pool=pool) for n in names)
    )
    return [name for name, ok in zip(names, results, strict=True) if ok]


async def cleanup_leftovers(
    rtnl: Rtnl, keep: set[str], *, executor: Executor, pool: TapPool | None = None
) -> list[str]:
    """Delete every mxvm tap not in keep (allocation ids or tap names); return the deleted."""
    keep_names = {resolve_tap_name(k) for k in keep}
    doomed = [link.name for link in await list_taps(rtnl) if link.name not in keep_names]
    deleted = await delete_taps(rtnl, doomed, executor=executor, pool=pool)
    if deleted:
        log.info("net.taps_swept count=%d taps=%s", len(deleted), ",".join(deleted))
    return deleted


async def destroy_parked(rtnl: Rtnl, *, executor: Executor, master: int | None = None) -> list[str]:
    """Really delete the parked taps (teardown): those on bridge `master` and detached ones
    (None: all). Taps parked on another bridge belong to that bridge's pool."""
    names = [
        link.name
        for link in await rtnl.links()
        if is_pool_name(link.name) and (master is None or link.master in (None, master))
    ]
    return await delete_taps(rtnl, names, executor=executor)
