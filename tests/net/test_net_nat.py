"""NAT rules via nft, inspected with `nft list ruleset` inside the throwaway namespace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mxvm.net import NodeNetwork

from .netns_tools import in_netns, ip, pings, plug_vm, require_binary, run

pytestmark = pytest.mark.privileged
TABLE = "mxvm_mxvmtest0"


def _ruleset(ns: str) -> str:
    return in_netns(ns, "nft", "list", "ruleset", check=True).stdout


def _ip_forward(ns: str) -> str:
    return in_netns(ns, "cat", "/proc/sys/net/ipv4/ip_forward", check=True).stdout.strip()


def _host_ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text()


@pytest.fixture(autouse=True)
def _need_nft() -> None:
    require_binary("nft", "nftables")


async def test_enable_nat_adds_one_masquerade_rule(net: NodeNetwork, netns: str) -> None:
    host_forward = _host_ip_forward()
    await net.ensure_bridge("10.87.3.1/24")
    assert _ip_forward(netns) == "0"
    await net.enable_nat("10.87.3.0/24", uplink="uplink0")
    await net.enable_nat("10.87.3.0/24", uplink="uplink0")
    rules = _ruleset(netns)
    assert f"table ip {TABLE}" in rules
    assert rules.count("masquerade") == 1
    assert "ip saddr 10.87.3.0/24 ip daddr != 10.87.3.0/24" in rules
    assert 'oifname "uplink0" masquerade' in rules
    assert "hook postrouting" in rules
    assert _ip_forward(netns) == "1"
    # Only the namespace changed.
    assert _host_ip_forward() == host_forward
    host_tables = run(["nft", "list", "tables"]).stdout  # read-only look at the host
    assert TABLE not in host_tables


async def test_enable_nat_replaces_a_previous_subnet(net: NodeNetwork, netns: str) -> None:
    await net.enable_nat("10.87.3.0/24")
    await net.enable_nat("10.87.4.0/24")
    rules = _ruleset(netns)
    assert rules.count("masquerade") == 1
    assert "10.87.4.0/24" in rules
    assert "10.87.3.0/24" not in rules
    assert 'oifname != "mxvmtest0" masquerade' in rules


async def test_disable_nat_removes_our_table_only(net: NodeNetwork, netns: str) -> None:
    in_netns(netns, "nft", "add", "table", "ip", "someone_else", check=True)
    await net.enable_nat("10.87.3.0/24")
    await net.disable_nat()
    rules = _ruleset(netns)
    assert TABLE not in rules
    assert "masquerade" not in rules
    assert "table ip someone_else" in rules
    await net.disable_nat()  # idempotent


async def test_teardown_removes_nat(net: NodeNetwork, netns: str) -> None:
    await net.ensure_bridge("10.87.3.1/24")
    await net.enable_nat("10.87.3.0/24")
    await net.teardown()
    assert TABLE not in _ruleset(netns)


@pytest.mark.parametrize("uplink", ["up0", None])
async def test_masquerade_carries_guest_traffic_out_and_back(
    net: NodeNetwork, netns: str, make_netns: Callable[[str], str], uplink: str | None
) -> None:
    """vm -> bridge -> node -> uplink -> wan. The wan side has no route back to the guest
    subnet, so a reply only arrives when the source was rewritten to the uplink address."""
    require_binary("ping", "iputils-ping")
    vm, wan = make_netns("vm"), make_netns("wan")
    await net.ensure_bridge("10.99.0.1/24")
    plug_vm(netns, vm, "vethvm", "10.99.0.11", gateway="10.99.0.1")
    await net.attach_port("vethvm")
    plug_vm(netns, wan, "up0", "192.0.2.2")  # the wan end gets .2; the node end below
    ip(netns, "addr", "add", "192.0.2.1/24", "dev", "up0")
    ip(netns, "link", "set", "up0", "up")

    await net.enable_nat("10.99.0.0/24", uplink=uplink)
    assert pings(vm, "192.0.2.2", tries=3)
    await net.disable_nat()
    assert not pings(vm, "192.0.2.2")
