"""Guest networking from the kernel cmdline, and power-button events (pure parts)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mxvm.guest import netconf, power


def test_parse_cmdline_reads_only_mxvm_words() -> None:
    cfg = netconf.parse_cmdline(
        "console=ttyS0 mxvm.ip=10.87.3.5/24 mxvm.gw=10.87.3.1 mxvm.mac=52:54:00:AA:BB:CC "
        "mxvm.dns=10.87.3.1,1.1.1.1 mxvm.hostname=alloc-7 ip=dhcp"
    )
    assert cfg.ip == ipaddress.IPv4Interface("10.87.3.5/24")
    assert cfg.gateway == ipaddress.IPv4Address("10.87.3.1")
    assert cfg.mac == "52:54:00:aa:bb:cc"
    assert cfg.dns == ("10.87.3.1", "1.1.1.1")
    assert cfg.hostname == "alloc-7"
    assert netconf.parse_cmdline("console=ttyS0 quiet") == netconf.NetConfig()


def test_bad_address_is_an_error() -> None:
    with pytest.raises(netconf.NetConfigError):
        netconf.parse_cmdline("mxvm.ip=10.87.3.500/24")


def test_plan_brings_up_loopback_then_the_nic() -> None:
    cfg = netconf.parse_cmdline("mxvm.ip=10.87.3.5/24 mxvm.gw=10.87.3.1 mxvm.hostname=h")
    assert netconf.plan(cfg, "eth0") == [
        ["ip", "link", "set", "dev", "lo", "up"],
        ["hostname", "h"],
        ["ip", "link", "set", "dev", "eth0", "up"],
        ["ip", "addr", "add", "10.87.3.5/24", "dev", "eth0"],
        ["ip", "route", "add", "default", "via", "10.87.3.1", "dev", "eth0"],
    ]
    assert netconf.plan(netconf.NetConfig(), None) == [["ip", "link", "set", "dev", "lo", "up"]]


def test_find_interface_by_mac(tmp_path: Path) -> None:
    for name, mac in (("lo", "00:00:00:00:00:00"), ("eth0", "52:54:00:00:00:01"),
                      ("eth1", "52:54:00:00:00:02")):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    assert netconf.find_interface("52:54:00:00:00:02", tmp_path) == "eth1"
    assert netconf.find_interface(None, tmp_path) == "eth0"
    assert netconf.find_interface("52:54:00:00:00:09", tmp_path) is None


async def test_apply_reports_bad_cmdline_as_a_warning() -> None:
    warnings = await netconf.apply("mxvm.gw=not-an-ip")
    assert len(warnings) == 1 and "bad network parameter" in warnings[0]


def test_power_button_press_is_recognised() -> None:
    press = power.EVENT.pack(0, 0, power.EV_KEY, power.KEY_POWER, 1)
    release = power.EVENT.pack(0, 0, power.EV_KEY, power.KEY_POWER, 0)
    other_key = power.EVENT.pack(0, 0, power.EV_KEY, 30, 1)
    assert power.is_power_press(press)
    assert not power.is_power_press(release) and not power.is_power_press(other_key)


def test_find_power_buttons(tmp_path: Path) -> None:
    for event, name in (("event0", "Power Button"), ("event1", "AT Keyboard")):
        (tmp_path / event / "device").mkdir(parents=True)
        (tmp_path / event / "device" / "name").write_text(name + "\n")
    assert power.find_power_buttons(tmp_path) == [Path("/dev/input/event0")]


def test_serial_channel_from_cmdline() -> None:
    from mxvm.guest.__main__ import parse_args, serial_channel

    assert serial_channel("console=hvc0 mxvm.channel=ttyS0 quiet") == Path("/dev/ttyS0")
    assert serial_channel("console=ttyS0 quiet") is None
    assert serial_channel("mxvm.channel=../etc/passwd") is None
    assert parse_args(["--listen", "/tmp/x.sock", "--no-net"]) == {
        "port_name": "org.mxvm.guest.0", "no_net": True, "listen": "/tmp/x.sock",
    }  # fmt: skip
    with pytest.raises(SystemExit, match="unknown argument"):
        parse_args(["--bogus"])
