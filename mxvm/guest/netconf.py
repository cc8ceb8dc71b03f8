"""Guest networking from the kernel command line, so the image carries no identity.

    mxvm.ip=10.87.3.5/24 mxvm.gw=10.87.3.1 mxvm.mac=52:54:00:12:34:56 mxvm.dns=10.87.3.1
    mxvm.hostname=alloc-1234

Without `mxvm.ip` only loopback is brought up. Parsing and the command plan are pure; apply()
runs busybox `ip` (never a shell).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from pathlib import Path

SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class NetConfig:
    ip: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    mac: str | None = None
    dns: tuple[str, ...] = ()
    hostname: str | None = None


class NetConfigError(ValueError):
    pass


def parse_cmdline(cmdline: str) -> NetConfig:
    params = dict(
        word.split("=", 1) for word in cmdline.split() if word.startswith("mxvm.") and "=" in word
    )
    try:
        ip = ipaddress.IPv4Interface(params["mxvm.ip"]) if "mxvm.ip" in params else None
        gw = ipaddress.IPv4Address(params["mxvm.gw"]) if "mxvm.gw" in params else None
        dns_list = params.get("mxvm.dns", "").split(",")
        dns = tuple(str(ipaddress.ip_address(d)) for d in dns_list if d)
    except ValueError as exc:
        raise NetConfigError(f"bad network parameter on the kernel command line: {exc}") from exc
    mac = params.get("mxvm.mac")
    return NetConfig(
        ip=ip, gateway=gw, mac=mac.lower() if mac else None, dns=dns,
        hostname=params.get("mxvm.hostname"),
    )  # fmt: skip


def find_interface(mac: str | None, sys_net: Path = SYS_NET) -> str | None:
    """The interface with `mac`, else the first non-loopback one."""
    names = sorted(p.name for p in sys_net.glob("*") if p.name != "lo")
    if mac is None:
        return names[0] if names else None
    for name in names:
        try:
            if (sys_net / name / "address").read_text().strip().lower() == mac:
                return name
        except OSError:
            continue
    return None


def plan(cfg: NetConfig, ifname: str | None) -> list[list[str]]:
    """The `ip` invocations that bring the guest's network up."""
    cmds = [["ip", "link", "set", "dev", "lo", "up"]]
    if cfg.hostname:
        cmds.append(["hostname", cfg.hostname])
    if cfg.ip is None or ifname is None:
        return cmds
    cmds += [
        ["ip", "link", "set", "dev", ifname, "up"],
        ["ip", "addr", "add", str(cfg.ip.with_prefixlen), "dev", ifname],
    ]
    if cfg.gateway is not None:
        cmds.append(["ip", "route", "add", "default", "via", str(cfg.gateway), "dev", ifname])
    return cmds


async def apply(cmdline: str, sys_net: Path = SYS_NET, etc: Path = Path("/etc")) -> list[str]:
    """Configure the network; returns warnings (failures do not stop the agent)."""
    try:
        cfg = parse_cmdline(cmdline)
    except NetConfigError as exc:
        return [str(exc)]
    warnings: list[str] = []
    ifname = find_interface(cfg.mac, sys_net) if cfg.ip else None
    if cfg.ip is not None and ifname is None:
        warnings.append(f"no network interface for mac {cfg.mac}")
    for argv in plan(cfg, ifname):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            warnings.append(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
    if cfg.dns:
        (etc / "resolv.conf").write_text("".join(f"nameserver {d}\n" for d in cfg.dns))
    return warnings
