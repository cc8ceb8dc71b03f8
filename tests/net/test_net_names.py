"""Pure parts of mxvm.net: names, MACs, validation, the nft script. No privileges needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxvm.net import DEFAULT_BRIDGE, NetworkError, NodeNetwork, mac_address, tap_name
from mxvm.net.bridge import parse_gateway
from mxvm.net.names import (
    IFNAME_MAX_BYTES,
    bridge_mac,
    host_tap_mac,
    is_tap_name,
    resolve_tap_name,
    validate_ifname,
)
from mxvm.net.nat import disable_script, enable_script, table_name


def _octets(mac: str) -> list[int]:
    parts = mac.split(":")
    assert len(parts) == 6
    return [int(p, 16) for p in parts]


@given(st.text(min_size=1))
def test_tap_name_fits_the_kernel_and_is_recognisable(alloc_id: str) -> None:
    name = tap_name(alloc_id)
    assert len(name.encode()) <= IFNAME_MAX_BYTES
    assert name.startswith("mxt")
    assert is_tap_name(name)
    assert validate_ifname(name) == name
    assert tap_name(alloc_id) == name


def test_tap_names_differ_per_allocation() -> None:
    ids = [f"alloc-{i}" for i in range(1000)]
    assert len({tap_name(i) for i in ids}) == len(ids)
    assert tap_name("5f2b1c3e-0000-4000-8000-000000000001") == tap_name(
        "5f2b1c3e-0000-4000-8000-000000000001"
    )


def test_resolve_accepts_id_or_tap_name() -> None:
    name = tap_name("a1")
    assert resolve_tap_name(name) == name
    assert resolve_tap_name("a1") == name
    # Anything that is not a tap name is treated as an allocation id, so "eth0" can
    # never resolve to the host's eth0.
    assert resolve_tap_name("eth0") == tap_name("eth0") != "eth0"


@given(st.text(min_size=1))
def test_guest_mac_is_locally_administered_unicast(alloc_id: str) -> None:
    guest = _octets(mac_address(alloc_id))
    host = _octets(host_tap_mac(alloc_id))
    for first in (guest[0], host[0]):
        assert first & 0x01 == 0, "multicast bit must be clear"
        assert first & 0x02 == 0x02, "locally administered bit must be set"
    assert guest != host
    assert mac_address(alloc_id) == mac_address(alloc_id)


def test_bridge_mac_is_stable_unicast() -> None:
    assert bridge_mac(DEFAULT_BRIDGE) == bridge_mac("mxvm0")
    assert _octets(bridge_mac("mxvm0"))[0] & 0x03 == 0x02


def test_empty_allocation_id_is_refused() -> None:
    with pytest.raises(NetworkError):
        tap_name("")


@pytest.mark.parametrize("name", ["eth0", "mxvm0", "br-lan.10", "a", "x" * 15])
def test_valid_interface_names(name: str) -> None:
    assert validate_ifname(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 16, "é" * 8, "a b", "a/b", "a:b", "-lead", ".", "..", "tab\t", "a%d"],
)
def test_invalid_interface_names(name: str) -> None:
    with pytest.raises(NetworkError) as err:
        validate_ifname(name)
    assert err.value.ifname == name
    assert repr(name) in str(err.value)


def test_node_network_refuses_a_bad_bridge_name() -> None:
    with pytest.raises(NetworkError, match="1 to 15 bytes"):
        NodeNetwork("bridge-name-too-long")


@pytest.mark.parametrize("bad", ["10.87.3.0/24", "10.87.3.255/24", "nonsense", "10.87.3.1/33"])
def test_gateway_must_be_a_host_address(bad: str) -> None:
    with pytest.raises(NetworkError, match="gateway"):
        parse_gateway(bad)


def test_gateway_parses() -> None:
    gw = parse_gateway("10.87.3.1/24")
    assert str(gw.ip) == "10.87.3.1"
    assert gw.network.prefixlen == 24


def test_nat_script_masquerades_only_the_subnet() -> None:
    script = enable_script("mxvm0", "10.87.3.0/24", "eth0")
    assert "table ip mxvm_mxvm0 {" in script
    assert "ip saddr 10.87.3.0/24 ip daddr != 10.87.3.0/24" in script
    assert 'oifname "eth0" masquerade' in script
    # Declare-then-delete first: replacing the table is one atomic transaction.
    assert script.index("delete table ip mxvm_mxvm0") < script.index("{")


def test_nat_script_without_uplink_excludes_the_bridge() -> None:
    assert 'oifname != "mxvm0" masquerade' in enable_script("mxvm0", "10.87.3.0/24", None)


def test_nat_refuses_bad_input() -> None:
    with pytest.raises(NetworkError, match="not a network"):
        enable_script("mxvm0", "10.87.3.1/24", None)  # host bits set
    with pytest.raises(NetworkError, match="IPv4"):
        enable_script("mxvm0", "fd00::/64", None)
    with pytest.raises(NetworkError):
        enable_script("mxvm0", "10.87.3.0/24", 'eth0" accept')  # no way into the script


def test_nat_table_names_are_nft_identifiers() -> None:
    assert table_name("br-lan.10") == "mxvm_br_lan_10"
    assert disable_script("mxvm0") == "table ip mxvm_mxvm0\ndelete table ip mxvm_mxvm0\n"
