"""Optional egress for guests: masquerade the node subnet (nftables via the `nft` binary).

One table per bridge (`ip mxvm_<bridge>`), replaced atomically, so enabling twice is a no-op
and disabling removes exactly what we added. The script goes to `nft -f -` on stdin; no shell.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import shutil

from mxvm.net import netns
from mxvm.net.errors import NetworkError
from mxvm.net.names import validate_ifname

log = logging.getLogger(__name__)
NFT_TIMEOUT_S = 10.0
_IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def table_name(bridge: str) -> str:
    return "mxvm_" + re.sub(r"[^A-Za-z0-9_]", "_", bridge)


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise NetworkError(f"NAT subnet {subnet!r} is not a network: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise NetworkError(f"NAT subnet {subnet!r}: only IPv4 masquerading is supported")
    return net


def enable_script(bridge: str, subnet: str, uplink: str | None) -> str:
    """The nft transaction: (re)create our table with one masquerade rule. Pure."""
    net = parse_subnet(subnet)
    table = table_name(bridge)
    # Without a named uplink: anything leaving by an interface other than the bridge itself.
    out = f'oifname "{validate_ifname(uplink)}"' if uplink else f'oifname != "{bridge}"'
    return (
        f"table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority 100; policy accept;\n"
        f"    ip saddr {net} ip daddr != {net} {out} masquerade\n"
        "  }\n"
        "}\n"
    )


def disable_script(bridge: str) -> str:
    table = table_name(bridge)
    # Declaring the table first makes the delete succeed whether or not it existed.
    return f"table ip {table}\ndelete table ip {table}\n"


async def run_nft(script: str, *, namespace: str | None, what: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise NetworkError(f"{what}: the nft binary is not installed (package nftables)")
    argv = [*netns.exec_prefix(namespace), nft, "-f", "-"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(script.encode()), NFT_TIMEOUT_S)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise NetworkError(f"{what}: nft timed out after {NFT_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        raise NetworkError(f"{what}: nft failed ({proc.returncode}): {err.decode().strip()}")


def enable_ip_forward(namespace: str | None) -> None:
    try:
        with netns.entered(namespace), open(_IP_FORWARD, "w") as f:  # noqa: PTH123
            f.write("1")
    except OSError as exc:
        raise NetworkError(f"cannot enable IPv4 forwarding: {exc}") from exc


async def enable_nat(
    bridge: str, subnet: str, uplink: str | None, *, namespace: str | None
) -> None:
    script = enable_script(bridge, subnet, uplink)
    enable_ip_forward(namespace)
    await run_nft(script, namespace=namespace, what=f"enable NAT for bridge {bridge}")
    log.info("net.nat_enabled bridge=%s subnet=%s uplink=%s", bridge, subnet, uplink)


async def disable_nat(bridge: str, *, namespace: str | None) -> None:
    """Remove our table; leaves ip_forward alone (other things may rely on it)."""
    if shutil.which("nft") is None:
        return  # without nft nobody can have loaded our table
    await run_nft(disable_script(bridge), namespace=namespace, what=f"disable NAT for {bridge}")
    log.info("net.nat_disabled bridge=%s", bridge)
