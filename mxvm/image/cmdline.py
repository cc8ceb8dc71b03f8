"""The guest kernel command line: console, TCG timer calibration, and the run-time
identity (network) the guest agent reads from /proc/cmdline."""

from __future__ import annotations

import ipaddress
from pathlib import Path

BASE = ("console=ttyS0", "panic=-1", "quiet")


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host's CPU clock in kHz. TCG guests need it as tsc_early_khz= or many boots
    hang calibrating the TSC before userspace."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return round(float(value) * 1000)
            except ValueError:
                return None
    return None


def identity_args(
    *,
    ip: ipaddress.IPv4Interface | str | None = None,
    gateway: ipaddress.IPv4Address | str | None = None,
    mac: str | None = None,
    dns: list[str] | None = None,
    hostname: str | None = None,
) -> list[str]:
    """Only the mxvm.* words the guest agent reads (for a driver that writes the rest of
    the cmdline itself); omitted values are left out."""
    words = []
    if ip is not None:
        words.append(f"mxvm.ip={ipaddress.IPv4Interface(ip).with_prefixlen}")
    if gateway is not None:
        words.append(f"mxvm.gw={ipaddress.IPv4Address(gateway)}")
    if mac:
        words.append(f"mxvm.mac={mac.lower()}")
    if dns:
        words.append("mxvm.dns=" + ",".join(str(ipaddress.ip_address(d)) for d in dns))
    if hostname:
        words.append(f"mxvm.hostname={hostname}")
    return words


def guest_cmdline(
    *,
    tcg: bool = True,
    ip: ipaddress.IPv4Interface | str | None = None,
    gateway: ipaddress.IPv4Address | str | None = None,
    mac: str | None = None,
    dns: list[str] | None = None,
    hostname: str | None = None,
    console: str = "ttyS0",
    serial_channel: str | None = None,
    extra: list[str] | None = None,
) -> str:
    """The full cmdline for the dev image; network words are omitted when not given.
    `serial_channel` (e.g. "ttyS0", with console="hvc0") makes the guest agent serve that
    UART instead of the virtio-serial port, as under cloud-hypervisor."""
    words = [f"console={console}", *BASE[1:]]
    if serial_channel:
        words.append(f"mxvm.channel={serial_channel}")
    khz = host_tsc_khz() if tcg else None
    if khz:
        words.append(f"tsc_early_khz={khz}")
    words += identity_args(ip=ip, gateway=gateway, mac=mac, dns=dns, hostname=hostname)
    words += extra or []
    return " ".join(words)
