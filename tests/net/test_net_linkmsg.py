"""The hand-built rtnetlink link messages: pyroute2 reads them as meant, and the kernel's
answers decode to what `ip -j -d link` reports."""

from __future__ import annotations

import struct

import pytest
from pyroute2 import netlink as pr_netlink
from pyroute2.netlink import rtnl as pr_rtnl
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg, protinfo_bridge
from pyroute2.netlink.rtnl.ifinfmsg.plugins.tun import tun

from mxvm.net import NetworkError, linkmsg
from mxvm.net.linkmsg import Link, LinkChange, change_link_request, get_link_request
from mxvm.net.rtnl import Rtnl

from .netns_tools import ip, link_json, tap_held


def _nla_index(nla_map: tuple[tuple[str, str], ...], name: str) -> int:
    return [entry[0] for entry in nla_map].index(name)


def test_numbers_match_pyroute2() -> None:
    assert linkmsg.NLMSG_ERROR == pr_netlink.NLMSG_ERROR
    assert linkmsg.NLMSG_DONE == pr_netlink.NLMSG_DONE
    assert linkmsg.NLM_F_REQUEST == pr_netlink.NLM_F_REQUEST
    assert linkmsg.NLM_F_MULTI == pr_netlink.NLM_F_MULTI
    assert linkmsg.NLM_F_ACK == pr_netlink.NLM_F_ACK
    assert linkmsg.NLM_F_DUMP == pr_netlink.NLM_F_DUMP
    assert linkmsg.NLA_F_NESTED == pr_netlink.NLA_F_NESTED
    assert linkmsg.RTM_NEWLINK == pr_rtnl.RTM_NEWLINK
    assert linkmsg.RTM_GETLINK == pr_rtnl.RTM_GETLINK
    assert linkmsg.IFF_UP == IFF_UP
    top = {
        "IFLA_ADDRESS": linkmsg.IFLA_ADDRESS,
        "IFLA_IFNAME": linkmsg.IFLA_IFNAME,
        "IFLA_MASTER": linkmsg.IFLA_MASTER,
        "IFLA_LINKINFO": linkmsg.IFLA_LINKINFO,
        "IFLA_EXT_MASK": linkmsg.IFLA_EXT_MASK,
        "IFLA_CARRIER": linkmsg.IFLA_CARRIER,
    }
    for name, number in top.items():
        assert _nla_index(ifinfmsg.nla_map, name) == number, name
    info = {
        "IFLA_INFO_KIND": linkmsg.IFLA_INFO_KIND,
        "IFLA_INFO_DATA": linkmsg.IFLA_INFO_DATA,
        "IFLA_INFO_SLAVE_KIND": linkmsg.IFLA_INFO_SLAVE_KIND,
        "IFLA_INFO_SLAVE_DATA": linkmsg.IFLA_INFO_SLAVE_DATA,
    }
    for name, number in info.items():
        assert _nla_index(ifinfmsg.ifinfo.nla_map, name) == number, name
    isolated = _nla_index(protinfo_bridge.nla_map, "IFLA_BRPORT_ISOLATED")
    assert isolated == linkmsg.IFLA_BRPORT_ISOLATED
    assert _nla_index(tun.nla_map, "IFLA_TUN_MULTI_QUEUE") == linkmsg.IFLA_TUN_MULTI_QUEUE


def _pyroute2_reads(data: bytes) -> ifinfmsg:
    msg = ifinfmsg(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)
    return msg


def test_a_full_change_as_pyroute2_reads_it() -> None:
    change = LinkChange(
        name="mxt0123456789ab", address="fe:01:02:03:04:05", master=4, up=True, isolated=True
    )
    msg = _pyroute2_reads(change_link_request(7, change, name="mxp1", index=9))
    header = msg["header"]
    assert (header["type"], header["sequence_number"]) == (pr_rtnl.RTM_NEWLINK, 7)
    assert header["flags"] == pr_netlink.NLM_F_REQUEST | pr_netlink.NLM_F_ACK
    assert (msg["index"], msg["flags"], msg["change"]) == (9, IFF_UP, IFF_UP)
    assert msg.get("ifname") == "mxt0123456789ab"
    assert msg.get("address") == "fe:01:02:03:04:05"
    assert msg.get("master") == 4
    assert msg.get(("linkinfo", "slave_kind")) == "bridge"
    assert msg.get(("linkinfo", "slave_data", "isolated")) == 1


def test_a_change_by_name_leaves_the_rest_alone() -> None:
    msg = _pyroute2_reads(change_link_request(1, LinkChange(up=False), name="veth0"))
    assert (msg["index"], msg["flags"], msg["change"]) == (0, 0, IFF_UP)
    assert msg.get("ifname") == "veth0"
    assert msg.get("master") is None and msg.get("address") is None
    assert msg.get("linkinfo") is None
    msg = _pyroute2_reads(change_link_request(1, LinkChange(isolated=False), name="veth0"))
    assert (msg["flags"], msg["change"]) == (0, 0)
    assert msg.get(("linkinfo", "slave_data", "isolated")) == 0
    detach = _pyroute2_reads(change_link_request(1, LinkChange(master=0), name="v", index=3))
    assert detach.get("master") == 0 and detach.get("ifname") is None


def test_rename_needs_an_index() -> None:
    with pytest.raises(ValueError, match="needs its index"):
        change_link_request(1, LinkChange(name="b"), name="a")


def test_get_and_dump_requests() -> None:
    one = _pyroute2_reads(get_link_request(3, name="mxvm0"))
    assert one["header"]["type"] == pr_rtnl.RTM_GETLINK
    assert one["header"]["flags"] == pr_netlink.NLM_F_REQUEST
    assert one.get("ifname") == "mxvm0"
    assert one.get("ext_mask") == linkmsg.RTEXT_FILTER_SKIP_STATS
    dump = _pyroute2_reads(get_link_request(4))
    assert dump["header"]["flags"] == pr_netlink.NLM_F_REQUEST | pr_netlink.NLM_F_DUMP
    assert dump.get("ifname") is None


def test_link_change_truth() -> None:
    assert not LinkChange()
    assert LinkChange(isolated=False)
    assert LinkChange(up=False)
    assert LinkChange(master=0)


def test_replies_split_and_refuse_garbage() -> None:
    ack = struct.pack("=IHHII", 36, linkmsg.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", -19)
    ack += bytes(16)
    done = struct.pack("=IHHII", 20, linkmsg.NLMSG_DONE, 2, 6, 0) + struct.pack("=i", 0)
    got = list(linkmsg.replies(ack + done))
    assert [(r.kind, r.seq) for r in got] == [(linkmsg.NLMSG_ERROR, 5), (linkmsg.NLMSG_DONE, 6)]
    assert [linkmsg.error_code(r) for r in got] == [19, 0]
    with pytest.raises(ValueError, match="malformed"):
        list(linkmsg.replies(struct.pack("=IHHII", 99, 2, 0, 1, 0)))


# Against the kernel, inside a throwaway namespace.


def _expected(ns: str, name: str) -> Link:
    """The Link that `ip -j -d link show` describes (ifindex of master by name)."""
    data = link_json(ns, name)
    assert data is not None
    upper = link_json(ns, data["master"]) if "master" in data else None
    master = None if upper is None else upper["ifindex"]
    info = data.get("linkinfo", {})
    slave = info.get("info_slave_data") if info.get("info_slave_kind") == "bridge" else None
    return Link(
        index=data["ifindex"],
        name=name,
        kind=info.get("info_kind"),
        master=master,
        up="UP" in data["flags"],
        address=data.get("address"),
        isolated=None if slave is None else bool(slave["isolated"]),
        carrier="LOWER_UP" in data["flags"],
        multi_queue=bool(info.get("info_data", {}).get("multi_queue", False)),
    )


@pytest.mark.privileged
async def test_links_decode_like_ip_reports_them(rtnl: Rtnl, netns: str) -> None:
    ip(netns, "link", "add", "br9", "type", "bridge")
    ip(netns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    ip(netns, "link", "set", "va", "master", "br9", "up")
    ip(netns, "link", "set", "dev", "va", "type", "bridge_slave", "isolated", "on")
    ip(netns, "link", "set", "vb", "master", "br9")
    ip(netns, "tuntap", "add", "dev", "tq", "mode", "tap", "multi_queue")
    ip(netns, "tuntap", "add", "dev", "ts", "mode", "tap")
    ip(netns, "link", "set", "lo", "up")
    names = ["lo", "br9", "va", "vb", "tq", "ts"]
    for name in names:
        assert await rtnl.get_link(name) == _expected(netns, name), name
    dumped = {link.name: link for link in await rtnl.links()}
    assert sorted(dumped) == sorted(names)
    assert all(dumped[n] == _expected(netns, n) for n in names)
    assert dumped["va"].isolated is True and dumped["vb"].isolated is False
    assert dumped["tq"].multi_queue and not dumped["ts"].multi_queue
    assert await rtnl.get_link("nosuch0") is None


@pytest.mark.privileged
async def test_a_held_tap_shows_carrier(rtnl: Rtnl, netns: str) -> None:
    ip(netns, "tuntap", "add", "dev", "th", "mode", "tap", "vnet_hdr")
    async with tap_held(netns, "th"):
        held = await rtnl.get_link("th")
        assert held is not None and held.carrier and not held.up  # carrier even while down
    idle = await rtnl.get_link("th")
    assert idle is not None and not idle.carrier


@pytest.mark.privileged
async def test_requests_in_one_write_each_count(rtnl: Rtnl, netns: str) -> None:
    """A refused request does not stop the next, raises once all are answered, and leaves
    the socket in step for the next request."""
    ip(netns, "link", "add", "d0", "type", "veth", "peer", "name", "p0")
    d0, p0 = await rtnl.get_link("d0"), await rtnl.get_link("p0")
    assert d0 is not None and p0 is not None
    bad, good = LinkChange(master=p0.index), LinkChange(up=True)  # a veth is no master
    with pytest.raises(NetworkError, match=r"configure d0: .*netlink error") as err:
        await rtnl.change_link("d0", bad, good, index=d0.index)
    assert err.value.ifname == "d0"
    after = await rtnl.get_link("d0")
    assert after is not None and after.up and after.master is None
    await rtnl.change_link("d0", LinkChange(up=False), LinkChange(name="d1"), index=d0.index)
    renamed = await rtnl.get_link("d1")
    assert renamed is not None and renamed.index == d0.index and not renamed.up
    assert sorted(link.name for link in await rtnl.links()) == ["d1", "lo", "p0"]
