"""NodeNetwork: the one facade the host agent uses for bridge, taps and NAT."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from mxvm.net import bridge as _bridge
from mxvm.net import nat as _nat
from mxvm.net import tap as _tap
from mxvm.net.errors import NetworkError
from mxvm.net.linkmsg import Link
from mxvm.net.names import DEFAULT_BRIDGE, validate_ifname
from mxvm.net.netns import netns_path
from mxvm.net.rtnl import Rtnl
from mxvm.net.tap import TapInfo

log = logging.getLogger(__name__)
DELETE_THREADS = 8


class NodeNetwork:
    """Node-side networking for one bridge, in the host or in a named network namespace."""

    def __init__(self, bridge: str = DEFAULT_BRIDGE, *, netns: str | None = None) -> None:
        self.bridge = validate_ifname(bridge)
        if netns is not None:
            netns_path(netns)  # validates the name; existence is checked on first use
        self.netns = netns
        self._rtnl = Rtnl(netns)
        # The bridge's link, cached so a tap costs no lookup; dropped on any doubt.
        self._bridge_link: Link | None = None
        # Our own threads for tap destruction (they may setns(2) briefly, so not shared).
        self._pool: ThreadPoolExecutor | None = None
        self._tap_pool = _tap.TapPool()

    async def __aenter__(self) -> NodeNetwork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ensure_bridge(self, gateway_cidr: str) -> None:
        """Create the bridge if missing, set exactly this gateway address, bring it up."""
        self._bridge_link = None
        self._bridge_link = await _bridge.ensure_bridge(self._rtnl, self.bridge, gateway_cidr)

    async def create_tap(
        self, alloc_id: str, *, isolated: bool = True, multi_queue: bool = False
    ) -> TapInfo:
        """Persistent tap for alloc_id on the bridge, up, isolated from other ports."""
        cached = self._bridge_link
        br = cached or await _bridge.require_bridge(self._rtnl, self.bridge)
        create = functools.partial(
            _tap.create_tap,
            self._rtnl,
            alloc_id=alloc_id,
            isolated=isolated,
            multi_queue=multi_queue,
            pool=self._tap_pool,
        )
        try:
            info = await create(br)
        except NetworkError:
            self._bridge_link = None
            if cached is None:
                raise
            # The cached bridge may have been replaced under us: look again, retry once.
            br = await _bridge.require_bridge(self._rtnl, self.bridge)
            info = await create(br)
        self._bridge_link = br
        return info

    async def attach_port(self, ifname: str, *, isolated: bool = True) -> None:
        """Attach an existing interface (e.g. a veth end) the way taps are attached."""
        validate_ifname(ifname)
        br = await _bridge.require_bridge(self._rtnl, self.bridge)
        link = await self._rtnl.get_link(ifname)
        if link is None:
            raise NetworkError(f"interface {ifname} does not exist", ifname=ifname)
        await _bridge.attach_port(self._rtnl, br, ifname, isolated=isolated, current=link)

    async def delete_tap(self, alloc_id_or_name: str) -> bool:
        """Delete the tap of an allocation (id or tap name); False if it was not there."""
        return await _tap.delete_tap(
            self._rtnl, alloc_id_or_name, executor=self._executor(), pool=self._tap_pool
        )

    async def list_taps(self) -> list[str]:
        """Names of every mxvm tap in this namespace."""
        return [link.name for link in await _tap.list_taps(self._rtnl)]

    async def cleanup_leftovers(self, keep: set[str]) -> list[str]:
        """Delete every mxvm tap whose allocation id / name is not in keep."""
        return await _tap.cleanup_leftovers(
            self._rtnl, keep, executor=self._executor(), pool=self._tap_pool
        )

    async def enable_nat(self, subnet: str, uplink: str | None = None) -> None:
        """Masquerade subnet out of uplink (any non-bridge interface when None)."""
        await _nat.enable_nat(self.bridge, subnet, uplink, namespace=self.netns)

    async def disable_nat(self) -> None:
        await _nat.disable_nat(self.bridge, namespace=self.netns)

    async def teardown(self) -> None:
        """Remove NAT rules, this bridge's taps (parked ones and detached parked ones too)
        and the bridge itself; taps parked on another bridge are that bridge's."""
        self._bridge_link = None
        await self.disable_nat()
        br = await _bridge.get_bridge(self._rtnl, self.bridge)
        if br is None:
            return
        taps = await _tap.list_taps(self._rtnl, master=br.index)
        names = [t.name for t in taps]
        await _tap.delete_taps(self._rtnl, names, executor=self._executor())
        await _tap.destroy_parked(self._rtnl, executor=self._executor(), master=br.index)
        self._tap_pool = _tap.TapPool()
        await self._rtnl.delete_link(self.bridge)
        log.info("net.bridge_removed bridge=%s", self.bridge)

    async def close(self) -> None:
        self._rtnl.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(DELETE_THREADS, thread_name_prefix="mxvm-net")
        return self._pool
