"""Parked taps: what a reused one looks like to the kernel and to QEMU, and the parked
taps the pool must not, or need not, reuse as they are."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mxvm.net import NodeNetwork, tap_name
from mxvm.net import bridge as bridges
from mxvm.net import tap as taps
from mxvm.net.names import host_tap_mac, is_pool_name
from mxvm.net.rtnl import Rtnl

from .netns_tools import ip, link_json, link_names, qemu_tap_argv, tap_held

pytestmark = pytest.mark.privileged
BRIDGE = "mxvmtest0"


def _link(ns: str, name: str) -> dict[str, Any]:
    link = link_json(ns, name)
    assert link is not None, f"{name} missing in {ns}"
    return link


def _isolated(link: dict[str, Any]) -> bool:
    return bool(link["linkinfo"]["info_slave_data"]["isolated"])


def _parked(ns: str) -> list[str]:
    return sorted(n for n in link_names(ns) if is_pool_name(n))


def _assert_in_use(ns: str, alloc_id: str, *, isolated: bool) -> dict[str, Any]:
    """A tap ready for its VM: its name, on the bridge, up, isolated as asked, its MAC."""
    link = _link(ns, tap_name(alloc_id))
    assert link["master"] == BRIDGE
    assert "UP" in link["flags"]
    assert _isolated(link) is isolated
    assert link["address"] == host_tap_mac(alloc_id)
    data = link["linkinfo"]["info_data"]
    assert (data["type"], data["persist"], data.get("multi_queue", False)) == ("tap", True, False)
    return link


async def _until_flag(ns: str, name: str, flag: str, *, present: bool) -> None:
    for _ in range(200):
        if (flag in _link(ns, name)["flags"]) is present:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: {flag} still {'absent' if present else 'present'}")


async def test_a_reused_tap_is_set_up_like_a_new_one_and_qemu_opens_it(
    net: NodeNetwork, netns: str
) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    first = await net.create_tap("alloc-open", isolated=False)
    index = _link(netns, first.name)["ifindex"]
    await net.delete_tap("alloc-open")
    (parked,) = _parked(netns)
    assert not _isolated(_link(netns, parked))

    tap = await net.create_tap("alloc-vm")
    link = _assert_in_use(netns, "alloc-vm", isolated=True)
    assert link["ifindex"] == index and _parked(netns) == []

    qemu = await asyncio.create_subprocess_exec(*qemu_tap_argv(netns, tap.name))
    try:
        await _until_flag(netns, tap.name, "LOWER_UP", present=True)
        # Held by a hypervisor: deleted outright, never parked for another VM.
        assert await net.delete_tap("alloc-vm") is True
        assert tap.name not in link_names(netns) and _parked(netns) == []
    finally:
        qemu.terminate()
        await asyncio.wait_for(qemu.wait(), 10)

    # The other way round: isolated before, open now.
    await net.create_tap("alloc-iso")
    await net.delete_tap("alloc-iso")
    assert _isolated(_link(netns, _parked(netns)[0]))
    await net.create_tap("alloc-open-2", isolated=False)
    _assert_in_use(netns, "alloc-open-2", isolated=False)


async def test_taps_parked_detached_or_on_another_bridge_are_moved_here(
    net: NodeNetwork, netns: str
) -> None:
    """What an older agent parked (detached), and what another bridge's pool parked."""
    await net.ensure_bridge("10.87.3.1/24")
    detached, elsewhere = (f"mxp{secrets.token_hex(6)}" for _ in range(2))
    ip(netns, "link", "add", "other0", "type", "bridge")
    for name in (detached, elsewhere):
        ip(netns, "tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr")
    ip(netns, "link", "set", elsewhere, "master", "other0")
    ip(netns, "link", "set", "dev", elsewhere, "type", "bridge_slave", "isolated", "on")
    indexes = {_link(netns, n)["ifindex"] for n in (detached, elsewhere)}

    await net.create_tap("alloc-a", isolated=False)
    await net.create_tap("alloc-b", isolated=True)

    a = _assert_in_use(netns, "alloc-a", isolated=False)
    b = _assert_in_use(netns, "alloc-b", isolated=True)
    assert {a["ifindex"], b["ifindex"]} == indexes
    assert _parked(netns) == []


async def test_parked_taps_in_use_or_gone_are_not_reused(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    for alloc_id in ("old-1", "old-2"):
        await net.create_tap(alloc_id)
    for alloc_id in ("old-1", "old-2"):
        await net.delete_tap(alloc_id)
    held, gone = _parked(netns)
    held_index = _link(netns, held)["ifindex"]
    ip(netns, "link", "del", gone)
    async with tap_held(netns, held):
        fresh = await net.create_tap("new")
        link = _assert_in_use(netns, "new", isolated=True)
        assert link["ifindex"] != held_index
        assert _parked(netns) == [held]  # left as it was, name and all
        assert fresh.name in link_names(netns)


async def test_a_parked_tap_survives_the_bridge_being_recreated(
    net: NodeNetwork, netns: str
) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    await net.create_tap("before")
    await net.delete_tap("before")
    (parked,) = _parked(netns)
    index = _link(netns, parked)["ifindex"]
    ip(netns, "link", "del", BRIDGE)  # detaches the parked tap; the cached bridge is stale
    ip(netns, "link", "add", BRIDGE, "type", "bridge")

    await net.create_tap("after")
    link = _assert_in_use(netns, "after", isolated=True)
    assert link["ifindex"] == index and _parked(netns) == []


async def test_the_pool_is_bounded(rtnl: Rtnl, netns: str) -> None:
    br = await bridges.ensure_bridge(rtnl, BRIDGE, "10.87.3.1/24")
    pool = taps.TapPool(limit=1)
    with ThreadPoolExecutor(2) as executor:
        for alloc_id in ("a", "b"):
            await taps.create_tap(rtnl, br, alloc_id, pool=pool)
        for alloc_id in ("a", "b"):
            assert await taps.delete_tap(rtnl, alloc_id, executor=executor, pool=pool)
        parked = _parked(netns)
        assert len(parked) == 1
        assert not {tap_name("a"), tap_name("b")} & link_names(netns)
        assert await taps.destroy_parked(rtnl, executor=executor) == parked
        assert _parked(netns) == []


async def test_teardown_removes_its_own_and_detached_parked_taps_only(
    net: NodeNetwork, netns: str
) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    await net.create_tap("mine")
    await net.delete_tap("mine")
    assert len(_parked(netns)) == 1
    detached, elsewhere = (f"mxp{secrets.token_hex(6)}" for _ in range(2))
    ip(netns, "link", "add", "other0", "type", "bridge")
    for name in (detached, elsewhere):
        ip(netns, "tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr")
    ip(netns, "link", "set", elsewhere, "master", "other0")

    await net.teardown()

    assert _parked(netns) == [elsewhere]
    assert BRIDGE not in link_names(netns)
