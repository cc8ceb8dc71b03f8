"""Bridge and tap life cycle against real netlink, inside throwaway namespaces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mxvm.net import NetworkError, NodeNetwork, mac_address, tap_name
from mxvm.net.names import host_tap_mac

from .netns_tools import HOLD_TAP_SCRIPT, in_netns, ip, ipv4_addresses, link_json, link_names

pytestmark = pytest.mark.privileged
BRIDGE = "mxvmtest0"


def _flags(link: dict[str, object]) -> list[str]:
    flags = link["flags"]
    assert isinstance(flags, list)
    return [str(f) for f in flags]


def _port(ns: str, ifname: str) -> dict[str, object]:
    link = link_json(ns, ifname)
    assert link is not None, f"{ifname} missing in {ns}"
    return link


def _isolated(link: dict[str, object]) -> bool:
    info = link["linkinfo"]
    assert isinstance(info, dict)
    return bool(info["info_slave_data"]["isolated"])


async def test_ensure_bridge_is_idempotent(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    first = _port(netns, BRIDGE)
    await net.ensure_bridge("10.87.3.1/24")
    second = _port(netns, BRIDGE)
    assert second["ifindex"] == first["ifindex"]
    assert second["linkinfo"]["info_kind"] == "bridge"  # type: ignore[index]
    assert "UP" in _flags(second)
    assert ipv4_addresses(netns, BRIDGE) == ["10.87.3.1/24"]
    assert second["address"] == first["address"]


async def test_ensure_bridge_fixes_a_wrong_address(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    ip(netns, "addr", "add", "192.168.77.1/24", "dev", BRIDGE)
    ip(netns, "link", "set", BRIDGE, "down")
    await net.ensure_bridge("10.87.4.1/24")
    assert ipv4_addresses(netns, BRIDGE) == ["10.87.4.1/24"]
    assert "UP" in _flags(_port(netns, BRIDGE))


async def test_ensure_bridge_refuses_a_non_bridge_of_that_name(
    net: NodeNetwork, netns: str
) -> None:
    ip(netns, "link", "add", BRIDGE, "type", "veth", "peer", "name", "other0")
    with pytest.raises(NetworkError, match=f"{BRIDGE} exists but is a veth"):
        await net.ensure_bridge("10.87.3.1/24")


async def test_missing_namespace_is_an_error_and_is_not_created(
    make_netns: Callable[[str], str],
) -> None:
    absent = make_netns("present") + "-absent"
    network = NodeNetwork(BRIDGE, netns=absent)
    try:
        with pytest.raises(NetworkError, match=absent):
            await network.ensure_bridge("10.87.3.1/24")
    finally:
        await network.close()
    assert in_netns(absent, "true").returncode != 0, "the namespace must not be created"


def test_bad_namespace_name_is_refused() -> None:
    with pytest.raises(NetworkError, match="namespace"):
        NodeNetwork(BRIDGE, netns="../etc")


async def test_create_tap_attaches_an_isolated_up_port(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    tap = await net.create_tap("alloc-1")
    assert tap.name == tap_name("alloc-1")
    assert tap.mac == mac_address("alloc-1")
    link = _port(netns, tap.name)
    assert link["master"] == BRIDGE
    assert "UP" in _flags(link)
    assert _isolated(link)
    assert link["linkinfo"]["info_kind"] == "tun"  # type: ignore[index]
    assert link["linkinfo"]["info_data"]["type"] == "tap"  # type: ignore[index]
    assert link["linkinfo"]["info_data"]["persist"] is True  # type: ignore[index]
    assert link["address"] == host_tap_mac("alloc-1") != tap.mac

    # A hypervisor can attach to it by name, and while it holds the tap (a VM running
    # across an agent restart) create_tap re-adopts it instead of failing.
    vmm = await asyncio.create_subprocess_exec(
        *["ip", "netns", "exec", netns, "python3", "-c", HOLD_TAP_SCRIPT, tap.name],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert vmm.stdout is not None
        line = await asyncio.wait_for(vmm.stdout.readline(), 10)
        assert line.decode().strip() == "attached"
        assert "LOWER_UP" in _flags(_port(netns, tap.name))
        assert await net.create_tap("alloc-1") == tap
        assert _port(netns, tap.name)["ifindex"] == link["ifindex"]
        # Deleting a tap the hypervisor still holds works too (by netlink).
        assert await net.delete_tap("alloc-1") is True
        assert tap.name not in link_names(netns)
    finally:
        await asyncio.wait_for(vmm.communicate(b""), 10)
    assert vmm.returncode == 0


async def test_create_tap_is_idempotent_and_repairs(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    tap = await net.create_tap("alloc-1")
    index = _port(netns, tap.name)["ifindex"]
    ip(netns, "link", "set", "dev", tap.name, "type", "bridge_slave", "isolated", "off")
    ip(netns, "link", "set", "dev", tap.name, "nomaster")
    assert await net.create_tap("alloc-1") == tap
    link = _port(netns, tap.name)
    assert link["ifindex"] == index
    assert link["master"] == BRIDGE
    assert _isolated(link)
    assert [n for n in link_names(netns) if n.startswith("mxt")] == [tap.name]


async def test_create_tap_not_isolated(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    tap = await net.create_tap("alloc-open", isolated=False)
    assert not _isolated(_port(netns, tap.name))


async def test_create_tap_without_bridge_is_a_clear_error(net: NodeNetwork, netns: str) -> None:
    with pytest.raises(NetworkError, match=f"bridge {BRIDGE} does not exist"):
        await net.create_tap("alloc-1")
    assert not any(n.startswith("mxt") for n in link_names(netns))


async def test_create_tap_survives_bridge_recreation(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    await net.create_tap("alloc-1")
    ip(netns, "link", "del", BRIDGE)
    ip(netns, "link", "add", BRIDGE, "type", "bridge")
    tap = await net.create_tap("alloc-2")
    assert _port(netns, tap.name)["master"] == BRIDGE
    ip(netns, "link", "del", BRIDGE)
    with pytest.raises(NetworkError, match="does not exist"):
        await net.create_tap("alloc-3")
    assert tap_name("alloc-3") not in link_names(netns)


async def test_delete_tap(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    a = await net.create_tap("alloc-a")
    b = await net.create_tap("alloc-b")
    assert await net.delete_tap("alloc-a") is True
    assert await net.delete_tap(b.name) is True
    assert await net.delete_tap("alloc-a") is False
    assert await net.delete_tap("never-created") is False
    assert a.name not in link_names(netns)
    assert b.name not in link_names(netns)


async def test_cleanup_leftovers_removes_only_unknown_taps(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    keep_a = await net.create_tap("keep-a")
    keep_b = await net.create_tap("keep-b")
    stale = [await net.create_tap(f"stale-{i}") for i in range(3)]
    ip(netns, "tuntap", "add", "dev", "othertap0", "mode", "tap")  # not ours: no mxt name
    imposter = "mxt" + "0" * 12  # our naming, but a veth, not a tap
    ip(netns, "link", "add", imposter, "type", "veth", "peer", "name", "imp1")

    deleted = await net.cleanup_leftovers({"keep-a", keep_b.name})

    assert sorted(deleted) == sorted(t.name for t in stale)
    names = link_names(netns)
    assert {keep_a.name, keep_b.name, "othertap0", imposter, BRIDGE} <= names
    assert not {t.name for t in stale} & names
    assert sorted(await net.list_taps()) == sorted([keep_a.name, keep_b.name])
    assert await net.cleanup_leftovers({"keep-a", "keep-b"}) == []


async def test_attach_port_missing_interface(net: NodeNetwork) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    with pytest.raises(NetworkError, match="nosuch0 does not exist"):
        await net.attach_port("nosuch0")


async def test_teardown_removes_bridge_and_its_taps(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    taps = [await net.create_tap(f"alloc-{i}") for i in range(3)]
    await net.teardown()
    names = link_names(netns)
    assert BRIDGE not in names
    assert not {t.name for t in taps} & names
    await net.teardown()  # idempotent
    await net.ensure_bridge("10.87.3.1/24")  # and the object is still usable
    assert (await net.create_tap("again")).name in link_names(netns)


async def test_kernel_refusals_become_network_errors_naming_the_interface(
    net: NodeNetwork,
) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    with pytest.raises(NetworkError, match=f"configure {BRIDGE}: .*netlink error") as err:
        await net.attach_port(BRIDGE)  # a bridge cannot be its own port
    assert err.value.ifname == BRIDGE
    assert err.value.__cause__ is not None


async def test_ensure_bridge_replaces_an_ipv6_gateway(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("fd00:87:3::1/64")
    await net.ensure_bridge("fd00:87:4::1/64")
    out = ip(netns, "-6", "-o", "addr", "show", "dev", BRIDGE)
    assert "fd00:87:4::1/64" in out
    assert "fd00:87:3::1" not in out


async def test_concurrent_creates_and_deletes_share_one_socket(
    net: NodeNetwork, netns: str
) -> None:
    """The agent converges allocations concurrently; requests must not get crossed."""
    await net.ensure_bridge("10.87.3.1/24")
    ids = [f"conc-{i}" for i in range(16)]
    taps = await asyncio.gather(*(net.create_tap(i) for i in ids))
    assert [t.name for t in taps] == [tap_name(i) for i in ids]
    for tap in taps:
        link = _port(netns, tap.name)
        assert link["master"] == BRIDGE
        assert _isolated(link)
    assert all(await asyncio.gather(*(net.delete_tap(i) for i in ids)))
    assert await net.list_taps() == []


async def test_delete_multi_queue_tap(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    tap = await net.create_tap("alloc-mq", multi_queue=True)
    assert _port(netns, tap.name)["linkinfo"]["info_data"]["multi_queue"] is True  # type: ignore[index]
    assert await net.delete_tap("alloc-mq") is True
    assert tap.name not in link_names(netns)


async def test_network_is_usable_after_close(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    await net.create_tap("a")
    await net.close()
    assert await net.delete_tap("a") is True
    assert await net.create_tap("b") == await net.create_tap("b")


async def test_idle_taps_are_parked_and_reused_then_removed_by_teardown(
    net: NodeNetwork, netns: str
) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    first = await net.create_tap("alloc-p1")
    index = _port(netns, first.name)["ifindex"]
    assert await net.delete_tap("alloc-p1") is True
    names = link_names(netns)
    parked = [n for n in names if n.startswith("mxp")]
    assert first.name not in names and len(parked) == 1
    # Down (so the port forwards nothing) but left on the bridge: reuse needs no attach.
    assert "UP" not in _flags(_port(netns, parked[0]))
    assert _port(netns, parked[0])["master"] == BRIDGE

    # The next tap is the parked one, renamed: same interface, new identity, fully set up.
    second = await net.create_tap("alloc-p2")
    link = _port(netns, second.name)
    assert link["ifindex"] == index
    assert link["master"] == BRIDGE and "UP" in _flags(link) and _isolated(link)
    assert link["address"] == host_tap_mac("alloc-p2")
    assert not [n for n in link_names(netns) if n.startswith("mxp")]

    await net.delete_tap("alloc-p2")
    await net.teardown()
    assert not [n for n in link_names(netns) if n.startswith(("mxp", "mxt"))]
